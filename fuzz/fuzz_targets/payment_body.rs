//! `POST /v1/payments`' body, as the edge parses it before anything is recorded: any bytes give a
//! payment or a 4xx, never a panic or a 5xx, and the same bytes give the same canonical hash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let released_on = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
    match medpay_api::payments::prepare(body, released_on) {
        Ok(prepared) => {
            let again = medpay_api::payments::prepare(body, released_on).expect("the same body parses twice");
            assert_eq!(prepared.request_hash, again.request_hash);
        }
        Err(error) => assert!(error.status.is_client_error(), "bad input is a 4xx, got {}", error.status),
    }
});
