//! PIX BR Codes ("copia e cola") read back from gateways and patients: any string parses or is
//! refused, and whatever parses encodes to a payload that parses to the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medpay_models::pix::BrCode;

fuzz_target!(|payload: &str| {
    if let Ok(code) = BrCode::parse(payload)
        && let Ok(encoded) = code.encode()
    {
        assert_eq!(BrCode::parse(&encoded), Ok(code), "{payload} → {encoded}");
    }
});
