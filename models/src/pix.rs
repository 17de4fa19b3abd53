//! PIX BR Code: the EMV® Merchant-Presented QR payload as profiled by Banco Central do Brasil's
//! "Manual de Padrões para Iniciação do Pix". A payload is a sequence of fields `ID` (2 digits),
//! length (2 digits), value; the last one is the CRC16-CCITT-FALSE (polynomial 0x1021, initial value
//! 0xFFFF) over the whole payload including `6304`, in upper-case hex.

use crate::money::Money;
use std::fmt::Write;

/// Limits of the manual.
pub const MERCHANT_NAME_MAX: usize = 25;
pub const MERCHANT_CITY_MAX: usize = 15;
pub const STATIC_TXID_MAX: usize = 25;
pub const MERCHANT_ACCOUNT_MAX: usize = 99;
pub const PAYLOAD_MAX: usize = 512;
/// Longest PIX key (an e-mail key may have 77 characters; a random key 36).
pub const KEY_MAX: usize = 77;
const GUI: &str = "br.gov.bcb.pix";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrCodeKind {
    /// A reusable code carrying the receiver's key.
    Static { key: String, description: Option<String>, txid: String },
    /// A single charge whose details are at `location` (a URL without `https://`).
    Dynamic { location: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrCode {
    pub kind: BrCodeKind,
    pub amount: Option<Money>,
    pub merchant_name: String,
    pub merchant_city: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrCodeError {
    #[error("field {field}: {message}")]
    Field { field: &'static str, message: String },
    #[error("the payload is malformed at position {position}: {message}")]
    Structure { position: usize, message: String },
    #[error("CRC mismatch: the payload says {found}, its content gives {expected}")]
    Crc { found: String, expected: String },
}

fn field(field: &'static str, message: impl Into<String>) -> BrCodeError {
    BrCodeError::Field { field, message: message.into() }
}

/// CRC16-CCITT-FALSE.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// Letters without accents, as the payload allows only printable ASCII.
pub fn strip_accents(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
            'Á' | 'À' | 'Â' | 'Ã' | 'Ä' => 'A',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'É' | 'È' | 'Ê' | 'Ë' => 'E',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'Í' | 'Ì' | 'Î' | 'Ï' => 'I',
            'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
            'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' => 'O',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'Ú' | 'Ù' | 'Û' | 'Ü' => 'U',
            'ç' => 'c',
            'Ç' => 'C',
            'ñ' => 'n',
            'Ñ' => 'N',
            other => other,
        })
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .collect()
}

fn tlv(output: &mut String, id: &str, value: &str) -> Result<(), BrCodeError> {
    if value.len() > 99 {
        return Err(BrCodeError::Structure {
            position: output.len(),
            message: format!("field {id} is longer than 99"),
        });
    }
    let _ = write!(output, "{id}{:02}{value}", value.len());
    Ok(())
}

fn amount_text(amount: Money) -> Result<String, BrCodeError> {
    let centavos = amount.centavos();
    if centavos <= 0 {
        return Err(field("54 (amount)", "must be positive"));
    }
    let text = format!("{}.{:02}", centavos / 100, centavos % 100);
    if text.len() > 13 {
        return Err(field("54 (amount)", "has at most 13 characters"));
    }
    Ok(text)
}

impl BrCode {
    /// The payload (PIX "copia e cola").
    pub fn encode(&self) -> Result<String, BrCodeError> {
        let name = strip_accents(self.merchant_name.trim());
        let city = strip_accents(self.merchant_city.trim());
        if name.is_empty() || name.len() > MERCHANT_NAME_MAX {
            return Err(field("59 (merchant name)", format!("must have 1 to {MERCHANT_NAME_MAX} characters")));
        }
        if city.is_empty() || city.len() > MERCHANT_CITY_MAX {
            return Err(field("60 (merchant city)", format!("must have 1 to {MERCHANT_CITY_MAX} characters")));
        }
        let mut account = String::new();
        tlv(&mut account, "00", GUI)?;
        let txid = match &self.kind {
            BrCodeKind::Static { key, description, txid } => {
                if key.is_empty() || key.len() > KEY_MAX || !key.is_ascii() {
                    return Err(field("26.01 (key)", format!("must have 1 to {KEY_MAX} ASCII characters")));
                }
                tlv(&mut account, "01", key)?;
                if let Some(description) = description {
                    tlv(&mut account, "02", &strip_accents(description))?;
                }
                if txid != "***"
                    && (txid.is_empty()
                        || txid.len() > STATIC_TXID_MAX
                        || !txid.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(field(
                        "62.05 (txid)",
                        format!("must be *** or 1 to {STATIC_TXID_MAX} letters and digits"),
                    ));
                }
                txid.clone()
            }
            BrCodeKind::Dynamic { location } => {
                if location.is_empty() || location.starts_with("http") || !location.is_ascii() {
                    return Err(field("26.25 (location)", "must be a URL without its scheme"));
                }
                tlv(&mut account, "25", location)?;
                "***".to_owned()
            }
        };
        if account.len() > MERCHANT_ACCOUNT_MAX {
            return Err(field("26 (merchant account)", format!("has at most {MERCHANT_ACCOUNT_MAX} characters")));
        }
        let mut payload = String::new();
        tlv(&mut payload, "00", "01")?;
        if matches!(self.kind, BrCodeKind::Dynamic { .. }) {
            tlv(&mut payload, "01", "12")?;
        }
        tlv(&mut payload, "26", &account)?;
        tlv(&mut payload, "52", "0000")?;
        tlv(&mut payload, "53", "986")?;
        if let Some(amount) = self.amount {
            tlv(&mut payload, "54", &amount_text(amount)?)?;
        }
        tlv(&mut payload, "58", "BR")?;
        tlv(&mut payload, "59", &name)?;
        tlv(&mut payload, "60", &city)?;
        let mut additional = String::new();
        tlv(&mut additional, "05", &txid)?;
        tlv(&mut payload, "62", &additional)?;
        payload.push_str("6304");
        let _ = write!(payload, "{:04X}", crc16(payload.as_bytes()));
        if payload.len() > PAYLOAD_MAX {
            return Err(BrCodeError::Structure {
                position: PAYLOAD_MAX,
                message: format!("the payload exceeds {PAYLOAD_MAX} characters"),
            });
        }
        Ok(payload)
    }

    /// Parses and checks a payload: its CRC, its structure, and every field the code needs.
    pub fn parse(payload: &str) -> Result<BrCode, BrCodeError> {
        if payload.len() > PAYLOAD_MAX || !payload.is_ascii() {
            return Err(BrCodeError::Structure {
                position: 0,
                message: format!("a payload is at most {PAYLOAD_MAX} ASCII characters"),
            });
        }
        if payload.len() < 8 || &payload[payload.len() - 8..payload.len() - 4] != "6304" {
            return Err(field("63 (CRC)", "the payload must end with 6304 and four hex digits"));
        }
        let (body, found) = payload.split_at(payload.len() - 4);
        let expected = format!("{:04X}", crc16(body.as_bytes()));
        if found != expected {
            return Err(BrCodeError::Crc { found: found.to_owned(), expected });
        }
        let fields = split(&payload[..payload.len() - 8], 0)?;
        let get = |id: &str| fields.iter().find(|(field_id, _, _)| field_id == id).map(|(_, value, _)| value.as_str());
        if get("00") != Some("01") {
            return Err(field("00 (payload format)", "must be 01"));
        }
        if get("53") != Some("986") {
            return Err(field("53 (currency)", "must be 986 (BRL)"));
        }
        if get("58") != Some("BR") {
            return Err(field("58 (country)", "must be BR"));
        }
        let account_position = fields.iter().find(|(id, _, _)| id == "26").map_or(0, |(_, _, position)| *position);
        let account = split(get("26").ok_or_else(|| field("26 (merchant account)", "is missing"))?, account_position)?;
        let sub = |id: &str| account.iter().find(|(field_id, _, _)| field_id == id).map(|(_, value, _)| value.clone());
        if !sub("00").is_some_and(|gui| gui.eq_ignore_ascii_case(GUI)) {
            return Err(field("26.00 (GUI)", format!("must be {GUI}")));
        }
        let additional_position = fields.iter().find(|(id, _, _)| id == "62").map_or(0, |(_, _, position)| *position);
        let additional = split(get("62").unwrap_or(""), additional_position)?;
        let txid = additional
            .iter()
            .find(|(id, _, _)| id == "05")
            .map(|(_, value, _)| value.clone())
            .unwrap_or_else(|| "***".to_owned());
        let kind = match (sub("01"), sub("25")) {
            (Some(key), None) => BrCodeKind::Static { key, description: sub("02"), txid },
            (None, Some(location)) => BrCodeKind::Dynamic { location },
            _ => return Err(field("26 (merchant account)", "needs a key (01) or a location (25), not both")),
        };
        let amount = get("54").map(parse_amount).transpose()?;
        let code = BrCode {
            kind,
            amount,
            merchant_name: get("59").ok_or_else(|| field("59 (merchant name)", "is missing"))?.to_owned(),
            merchant_city: get("60").ok_or_else(|| field("60 (merchant city)", "is missing"))?.to_owned(),
        };
        Ok(code)
    }
}

fn parse_amount(text: &str) -> Result<Money, BrCodeError> {
    let bad = || field("54 (amount)", format!("{text:?} is not an amount like 123.45"));
    let (units, cents) = text.split_once('.').unwrap_or((text, "00"));
    if units.is_empty()
        || !units.bytes().all(|b| b.is_ascii_digit())
        || cents.len() > 2
        || !cents.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let cents = format!("{cents:0<2}");
    let units: i64 = units.parse().map_err(|_| bad())?;
    let cents: i64 = cents.parse().map_err(|_| bad())?;
    Ok(Money::from_centavos(units.checked_mul(100).and_then(|u| u.checked_add(cents)).ok_or_else(bad)?))
}

/// Splits `text` into (id, value, absolute position) fields; `offset` is where `text` starts.
fn split(text: &str, offset: usize) -> Result<Vec<(String, String, usize)>, BrCodeError> {
    let mut fields = Vec::new();
    let mut index = 0;
    while index < text.len() {
        let head = text.get(index..index + 4).ok_or_else(|| BrCodeError::Structure {
            position: offset + index,
            message: "a field needs an id and a length".into(),
        })?;
        let (id, length) = head.split_at(2);
        if !head.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BrCodeError::Structure {
                position: offset + index,
                message: format!("{head:?} is not an id and a length"),
            });
        }
        let length: usize = length
            .parse()
            .map_err(|_| BrCodeError::Structure { position: offset + index, message: "bad length".into() })?;
        let value = text.get(index + 4..index + 4 + length).ok_or_else(|| BrCodeError::Structure {
            position: offset + index,
            message: format!("field {id} says {length} characters but the payload ends first"),
        })?;
        fields.push((id.to_owned(), value.to_owned(), offset + index + 4));
        index += 4 + length;
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc16_ccitt_false_check_value() {
        // The standard check value of CRC-16/CCITT-FALSE over "123456789".
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn a_static_code_by_hand() {
        let code = BrCode {
            kind: BrCodeKind::Static { key: "fulano@example.com".into(), description: None, txid: "***".into() },
            amount: Some(Money::from_centavos(1_050)),
            merchant_name: "Clínica São José".into(),
            merchant_city: "São Paulo".into(),
        };
        let payload = code.encode().unwrap();
        let body = "00020126400014br.gov.bcb.pix0118fulano@example.com520400005303986540510.505802BR5916Clinica Sao Jose6009Sao Paulo62070503***6304";
        assert_eq!(&payload[..payload.len() - 4], body);
        assert_eq!(&payload[payload.len() - 4..], format!("{:04X}", crc16(body.as_bytes())));
        let parsed = BrCode::parse(&payload).unwrap();
        assert_eq!(parsed.amount, Some(Money::from_centavos(1_050)));
        assert_eq!(parsed.merchant_name, "Clinica Sao Jose");
    }

    #[test]
    fn limits_and_errors_name_the_field() {
        let mut code = BrCode {
            kind: BrCodeKind::Dynamic { location: "pix.example.com/qr/v2/abc".into() },
            amount: None,
            merchant_name: "A".repeat(26),
            merchant_city: "Rio".into(),
        };
        assert!(matches!(code.encode(), Err(BrCodeError::Field { field: "59 (merchant name)", .. })));
        code.merchant_name = "Hospital".into();
        code.merchant_city = "Sao Jose dos Campos".into();
        assert!(matches!(code.encode(), Err(BrCodeError::Field { field: "60 (merchant city)", .. })));
        code.merchant_city = "Rio".into();
        let payload = code.encode().unwrap();
        assert!(payload.starts_with("000201010212"), "dynamic codes are single use: {payload}");
        let tampered = payload.replacen("Rio", "Rie", 1);
        assert!(matches!(BrCode::parse(&tampered), Err(BrCodeError::Crc { .. })));
        let long_txid = BrCode {
            kind: BrCodeKind::Static { key: "+5511999990000".into(), description: None, txid: "X".repeat(26) },
            amount: None,
            merchant_name: "Hospital".into(),
            merchant_city: "Rio".into(),
        };
        assert!(matches!(long_txid.encode(), Err(BrCodeError::Field { field: "62.05 (txid)", .. })));
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[A-Za-z0-9 ]{{1,{max}}}"))
            .unwrap()
            .prop_filter("not blank", |s| !s.trim().is_empty())
    }

    proptest! {
        #[test]
        fn generated_codes_parse_back_to_the_same_fields(
            key in "[a-z0-9.]{1,30}@[a-z]{1,10}\\.com",
            txid in "[A-Za-z0-9]{1,25}",
            centavos in proptest::option::of(1i64..100_000_000),
            name in text(25),
            city in text(15),
            dynamic in any::<bool>(),
        ) {
            let kind = if dynamic {
                BrCodeKind::Dynamic { location: format!("pix.example.com/v2/{txid}") }
            } else {
                BrCodeKind::Static { key, description: None, txid }
            };
            let code = BrCode { kind, amount: centavos.map(Money::from_centavos), merchant_name: name.trim().to_owned(), merchant_city: city.trim().to_owned() };
            let payload = code.encode().unwrap();
            prop_assert!(payload.len() <= PAYLOAD_MAX);
            prop_assert_eq!(BrCode::parse(&payload).unwrap(), code);
        }

        #[test]
        fn any_one_character_change_is_detected(position in 0usize..200, replacement in "[ -~]") {
            let code = BrCode {
                kind: BrCodeKind::Static { key: "123e4567-e12b-12d1-a456-426655440000".into(), description: Some("Consulta".into()), txid: "PEDIDO123".into() },
                amount: Some(Money::from_centavos(25_000)),
                merchant_name: "Clinica Sorriso".into(),
                merchant_city: "Curitiba".into(),
            };
            let payload = code.encode().unwrap();
            let position = position % payload.len();
            let mut bytes = payload.clone().into_bytes();
            prop_assume!(bytes[position] != replacement.as_bytes()[0]);
            bytes[position] = replacement.as_bytes()[0];
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(BrCode::parse(&changed).is_err(), "{} went undetected", changed);
        }
    }
}
