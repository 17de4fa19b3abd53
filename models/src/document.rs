//! Brazilian identifiers. Each is built only by parsing, which checks the check digits; each keeps
//! the normalised form (no mask) and is masked in `Debug` so that logs never carry a full document
//! (LGPD).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DocumentError {
    #[error("a CPF has 11 digits (mask optional: 000.000.000-00)")]
    CpfLength,
    #[error("a CPF has only digits, dots and a dash")]
    CpfCharacter,
    #[error("CPF check digits do not match")]
    CpfCheckDigits,
    #[error("a CPF made of one repeated digit is not valid")]
    CpfRepeated,
    #[error("a CNPJ has 14 characters (mask optional: 00.000.000/0000-00)")]
    CnpjLength,
    #[error("a CNPJ has letters A-Z or digits in its first 12 places and digits in the last 2")]
    CnpjCharacter,
    #[error("CNPJ check digits do not match")]
    CnpjCheckDigits,
    #[error("a CNPJ made of one repeated character is not valid")]
    CnpjRepeated,
    #[error("a TUSS code has exactly 8 digits")]
    Tuss,
}

/// Strip the usual mask characters. Any other character stays, so that it is reported.
fn unmask(input: &str) -> String {
    input.trim().chars().filter(|c| !matches!(c, '.' | '-' | '/' | ' ')).collect()
}

/// Modulo-11 check digit over `values` with `weights`, as both CPF and CNPJ define it.
fn mod11_check_digit(values: &[u32], weights: &[u32]) -> u32 {
    let sum: u32 = values.iter().zip(weights).map(|(value, weight)| value * weight).sum();
    let remainder = sum % 11;
    if remainder < 2 { 0 } else { 11 - remainder }
}

fn all_same(bytes: &[u8]) -> bool {
    bytes.windows(2).all(|pair| pair[0] == pair[1])
}

/// Cadastro de Pessoas Físicas: 9 digits and 2 check digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cpf(String);

impl Cpf {
    const WEIGHTS_FIRST: [u32; 9] = [10, 9, 8, 7, 6, 5, 4, 3, 2];
    const WEIGHTS_SECOND: [u32; 10] = [11, 10, 9, 8, 7, 6, 5, 4, 3, 2];

    /// The 11 digits, without mask.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// 000.000.000-00
    pub fn formatted(&self) -> String {
        let digits = &self.0;
        format!("{}.{}.{}-{}", &digits[0..3], &digits[3..6], &digits[6..9], &digits[9..11])
    }

    /// The two check digits of a 9-digit base (used by fixtures and generators).
    pub fn check_digits(base: &str) -> Result<String, DocumentError> {
        if base.len() != 9 {
            return Err(DocumentError::CpfLength);
        }
        if !base.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DocumentError::CpfCharacter);
        }
        let mut values: Vec<u32> = base.bytes().map(|b| u32::from(b - b'0')).collect();
        let first = mod11_check_digit(&values, &Self::WEIGHTS_FIRST);
        values.push(first);
        let second = mod11_check_digit(&values, &Self::WEIGHTS_SECOND);
        Ok(format!("{first}{second}"))
    }

    /// For logs: only the check digits are shown.
    pub fn masked(&self) -> String {
        format!("***.***.***-{}", &self.0[9..11])
    }
}

impl FromStr for Cpf {
    type Err = DocumentError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let digits = unmask(input);
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(DocumentError::CpfCharacter);
        }
        if digits.len() != 11 {
            return Err(DocumentError::CpfLength);
        }
        if all_same(digits.as_bytes()) {
            return Err(DocumentError::CpfRepeated);
        }
        let values: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        let first = mod11_check_digit(&values[..9], &Self::WEIGHTS_FIRST);
        let second = mod11_check_digit(&values[..10], &Self::WEIGHTS_SECOND);
        if values[9] != first || values[10] != second {
            return Err(DocumentError::CpfCheckDigits);
        }
        Ok(Cpf(digits))
    }
}

impl fmt::Debug for Cpf {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Cpf({})", self.masked())
    }
}

/// Cadastro Nacional da Pessoa Jurídica: 12 alphanumeric characters (letters allowed from July
/// 2026) and 2 numeric check digits. Each character counts as its ASCII code minus 48, so digits
/// keep their value and 'A' is 17.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cnpj(String);

impl Cnpj {
    const WEIGHTS_FIRST: [u32; 12] = [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
    const WEIGHTS_SECOND: [u32; 13] = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// 00.000.000/0000-00
    pub fn formatted(&self) -> String {
        let c = &self.0;
        format!("{}.{}.{}/{}-{}", &c[0..2], &c[2..5], &c[5..8], &c[8..12], &c[12..14])
    }

    pub fn masked(&self) -> String {
        format!("**.***.***/****-{}", &self.0[12..14])
    }

    /// Compute the two check digits of a 12-character base (used by tests and fixtures).
    pub fn check_digits(base: &str) -> Result<String, DocumentError> {
        let base = base.to_ascii_uppercase();
        if base.len() != 12 {
            return Err(DocumentError::CnpjLength);
        }
        if !base.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
            return Err(DocumentError::CnpjCharacter);
        }
        let mut values: Vec<u32> = base.bytes().map(|b| u32::from(b) - 48).collect();
        let first = mod11_check_digit(&values, &Self::WEIGHTS_FIRST);
        values.push(first);
        let second = mod11_check_digit(&values, &Self::WEIGHTS_SECOND);
        Ok(format!("{first}{second}"))
    }
}

impl FromStr for Cnpj {
    type Err = DocumentError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let normalised = unmask(input).to_ascii_uppercase();
        if !normalised.is_ascii() {
            return Err(DocumentError::CnpjCharacter);
        }
        if normalised.len() != 14 {
            return Err(DocumentError::CnpjLength);
        }
        let (base, digits) = normalised.split_at(12);
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DocumentError::CnpjCharacter);
        }
        if all_same(normalised.as_bytes()) {
            return Err(DocumentError::CnpjRepeated);
        }
        if Self::check_digits(base)? != digits {
            return Err(DocumentError::CnpjCheckDigits);
        }
        Ok(Cnpj(normalised))
    }
}

impl fmt::Debug for Cnpj {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Cnpj({})", self.masked())
    }
}

/// A procedure code of the TUSS table (Terminologia Unificada da Saúde Suplementar): 8 digits.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TussCode(String);

impl TussCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TussCode {
    type Err = DocumentError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let code = unmask(input);
        if code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(TussCode(code))
        } else {
            Err(DocumentError::Tuss)
        }
    }
}

macro_rules! string_serde {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(Cpf);
string_serde!(Cnpj);
string_serde!(TussCode);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpf_accepts_mask_and_normalises() {
        let cpf: Cpf = "529.982.247-25".parse().unwrap();
        assert_eq!(cpf.as_str(), "52998224725");
        assert_eq!(cpf.formatted(), "529.982.247-25");
        assert_eq!(Cpf::check_digits("529982247").unwrap(), "25");
        assert_eq!("52998224725".parse::<Cpf>().unwrap(), cpf);
    }

    #[test]
    fn cpf_is_masked_in_debug() {
        let cpf: Cpf = "52998224725".parse().unwrap();
        let shown = format!("{cpf:?}");
        assert!(!shown.contains("529982247"), "{shown}");
        assert_eq!(shown, "Cpf(***.***.***-25)");
    }

    #[test]
    fn cpf_negative_space() {
        assert_eq!("111.111.111-11".parse::<Cpf>(), Err(DocumentError::CpfRepeated));
        assert_eq!("000.000.000-00".parse::<Cpf>(), Err(DocumentError::CpfRepeated));
        assert_eq!("529.982.247-24".parse::<Cpf>(), Err(DocumentError::CpfCheckDigits));
        assert_eq!("529.982.247-2".parse::<Cpf>(), Err(DocumentError::CpfLength));
        assert_eq!("529.982.247-255".parse::<Cpf>(), Err(DocumentError::CpfLength));
        assert_eq!("529.982.247-2a".parse::<Cpf>(), Err(DocumentError::CpfCharacter));
        assert_eq!("".parse::<Cpf>(), Err(DocumentError::CpfLength));
        assert_eq!("５２９９８２２４７２５".parse::<Cpf>(), Err(DocumentError::CpfCharacter));
    }

    #[test]
    fn numeric_cnpj() {
        let cnpj: Cnpj = "11.222.333/0001-81".parse().unwrap();
        assert_eq!(cnpj.as_str(), "11222333000181");
        assert_eq!(cnpj.formatted(), "11.222.333/0001-81");
        assert_eq!(format!("{cnpj:?}"), "Cnpj(**.***.***/****-81)");
    }

    #[test]
    fn alphanumeric_cnpj_from_receita_example() {
        // Receita Federal's published example of the alphanumeric CNPJ: 12.ABC.345/01DE-35.
        let cnpj: Cnpj = "12.ABC.345/01DE-35".parse().unwrap();
        assert_eq!(cnpj.as_str(), "12ABC34501DE35");
        assert_eq!(Cnpj::check_digits("12ABC34501DE").unwrap(), "35");
        // Lower case is accepted and normalised.
        assert_eq!("12.abc.345/01de-35".parse::<Cnpj>().unwrap(), cnpj);
    }

    #[test]
    fn cnpj_negative_space() {
        assert_eq!("11.222.333/0001-82".parse::<Cnpj>(), Err(DocumentError::CnpjCheckDigits));
        assert_eq!("12.ABC.345/01DE-36".parse::<Cnpj>(), Err(DocumentError::CnpjCheckDigits));
        assert_eq!("00.000.000/0000-00".parse::<Cnpj>(), Err(DocumentError::CnpjRepeated));
        assert_eq!("11.222.333/0001-8".parse::<Cnpj>(), Err(DocumentError::CnpjLength));
        assert_eq!("12.ABC.345/01DE-3A".parse::<Cnpj>(), Err(DocumentError::CnpjCharacter));
        assert_eq!("12.AB!.345/01DE-35".parse::<Cnpj>(), Err(DocumentError::CnpjCharacter));
        assert_eq!("12.ABÇ.345/01DE-35".parse::<Cnpj>(), Err(DocumentError::CnpjCharacter));
    }

    #[test]
    fn tuss() {
        assert_eq!("10101012".parse::<TussCode>().unwrap().as_str(), "10101012");
        assert_eq!("1010101".parse::<TussCode>(), Err(DocumentError::Tuss));
        assert_eq!("1010101a".parse::<TussCode>(), Err(DocumentError::Tuss));
    }

    #[test]
    fn serde_round_trip_validates() {
        let cpf: Cpf = serde_json::from_str("\"529.982.247-25\"").unwrap();
        assert_eq!(serde_json::to_string(&cpf).unwrap(), "\"52998224725\"");
        assert!(serde_json::from_str::<Cpf>("\"529.982.247-24\"").is_err());
    }

    proptest! {
        #[test]
        fn every_generated_cpf_parses_and_a_changed_check_digit_fails(base in "[0-9]{9}", position in 9usize..11, delta in 1u8..10) {
            prop_assume!(!all_same(base.as_bytes()));
            let full = format!("{base}{}", Cpf::check_digits(&base).unwrap());
            prop_assert!(full.parse::<Cpf>().is_ok());
            let mut bytes = full.into_bytes();
            bytes[position] = b'0' + (bytes[position] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            // (A changed base digit is not always caught: mod 11 maps remainders 0 and 1 alike.)
            prop_assert!(changed.parse::<Cpf>().is_err());
        }

        #[test]
        fn every_generated_cnpj_parses(base in "[0-9A-Z]{12}") {
            prop_assume!(!all_same(base.as_bytes()));
            let digits = Cnpj::check_digits(&base).unwrap();
            let full = format!("{base}{digits}");
            let parsed = full.parse::<Cnpj>().unwrap();
            prop_assert_eq!(parsed.as_str(), full.as_str());
        }

        #[test]
        fn cnpj_parse_never_panics(input in "\\PC{0,30}") {
            let _ = input.parse::<Cnpj>();
            let _ = input.parse::<Cpf>();
        }
    }
}
