//! Boleto bancário (FEBRABAN): the 44-digit barcode and the 47-digit linha digitável, both ways,
//! with their check digits (mod 11 for the barcode, mod 10 for each field of the linha), and the
//! due-date factor (days since 1997-10-07, restarted at 1000 on 2025-02-22).
//!
//! A fact of the standard: the barcode's mod-11 digit maps remainders giving 0, 10 and 11 all to 1,
//! so when that digit is 1 a change of one amount or factor digit can move the remainder between
//! them unseen. Every other single-digit change is caught (mod 11 with weights 2–9 is prime to
//! every digit difference, and each field of the linha has its own mod-10 digit).

use crate::money::Money;
use chrono::NaiveDate;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoletoError {
    #[error("a barcode has 44 digits")]
    BarcodeLength,
    #[error("a linha digitável has 47 digits (dots and spaces allowed)")]
    LineLength,
    #[error("only digits are allowed")]
    NotDigits,
    #[error("the general check digit does not match")]
    GeneralCheckDigit,
    #[error("the check digit of field {0} does not match")]
    FieldCheckDigit(u8),
    #[error("the amount does not fit 10 digits of centavos")]
    Amount,
    #[error("the due date is outside the factor's range")]
    DueDate,
    #[error("the free field has 25 digits")]
    FreeField,
    #[error("the bank code has 3 digits")]
    Bank,
}

/// What a boleto's barcode says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boleto {
    pub bank: String,
    /// 9 for reais.
    pub currency: u8,
    pub due_factor: u16,
    pub amount: Money,
    /// The 25 digits the issuing bank defines (agreement, our number, …).
    pub free_field: String,
}

fn base_date() -> NaiveDate {
    // 1997-10-07 exists; the match keeps the code free of unwraps.
    NaiveDate::from_ymd_opt(1997, 10, 7).unwrap_or(NaiveDate::MIN)
}

/// The due-date factor of `date`: 1000–9999, restarting at 1000 every 9 000 days (first on 2025-02-22).
pub fn due_factor(date: NaiveDate) -> Result<u16, BoletoError> {
    let days = (date - base_date()).num_days();
    if days < 1_000 {
        return Err(BoletoError::DueDate);
    }
    let factor = if days <= 9_999 { days } else { (days - 10_000) % 9_000 + 1_000 };
    u16::try_from(factor).map_err(|_| BoletoError::DueDate)
}

/// The date of a factor: of the dates with that factor, the one nearest to `reference`.
pub fn due_date(factor: u16, reference: NaiveDate) -> Result<NaiveDate, BoletoError> {
    if !(1_000..=9_999).contains(&factor) {
        return Err(BoletoError::DueDate);
    }
    let first = base_date() + chrono::Duration::days(i64::from(factor));
    let reference_days = (reference - first).num_days();
    let cycles = (reference_days as f64 / 9_000.0).round().max(0.0) as i64;
    Ok(first + chrono::Duration::days(cycles * 9_000))
}

/// Mod 11 check digit of the barcode: weights 2–9 from the right; 0, 10 and 11 become 1.
fn general_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits.bytes().rev().zip((2..=9).cycle()).map(|(b, weight)| u32::from(b - b'0') * weight).sum();
    match 11 - sum % 11 {
        0 | 10 | 11 => 1,
        digit => digit,
    }
}

/// Mod 10 check digit of a field of the linha: weights 2, 1, 2, … from the right, products' digits summed.
fn field_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .zip([2u32, 1].into_iter().cycle())
        .map(|(b, weight)| {
            let product = u32::from(b - b'0') * weight;
            product / 10 + product % 10
        })
        .sum();
    (10 - sum % 10) % 10
}

fn digits_only(text: &str) -> Result<String, BoletoError> {
    let cleaned: String = text.chars().filter(|c| !matches!(c, '.' | ' ' | '-')).collect();
    if cleaned.bytes().all(|b| b.is_ascii_digit()) { Ok(cleaned) } else { Err(BoletoError::NotDigits) }
}

impl Boleto {
    /// The 44-digit barcode.
    pub fn barcode(&self) -> Result<String, BoletoError> {
        if self.bank.len() != 3 || !self.bank.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BoletoError::Bank);
        }
        if self.free_field.len() != 25 || !self.free_field.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BoletoError::FreeField);
        }
        let centavos = self.amount.centavos();
        if !(0..=9_999_999_999).contains(&centavos) {
            return Err(BoletoError::Amount);
        }
        let without_check =
            format!("{}{}{:04}{:010}{}", self.bank, self.currency, self.due_factor, centavos, self.free_field);
        let check = general_check_digit(&without_check);
        Ok(format!("{}{}{check}{}", &without_check[..3], &without_check[3..4], &without_check[4..]))
    }

    /// The 47-digit linha digitável, formatted `AAAAA.AAAAA BBBBB.BBBBBB CCCCC.CCCCCC D EEEEEEEEEEEEEE`.
    pub fn linha_digitavel(&self) -> Result<String, BoletoError> {
        let barcode = self.barcode()?;
        Ok(format_line(&line_from_barcode(&barcode)))
    }

    pub fn from_barcode(barcode: &str) -> Result<Boleto, BoletoError> {
        let digits = digits_only(barcode)?;
        if digits.len() != 44 {
            return Err(BoletoError::BarcodeLength);
        }
        let without_check = format!("{}{}", &digits[..4], &digits[5..]);
        if general_check_digit(&without_check).to_string() != digits[4..5] {
            return Err(BoletoError::GeneralCheckDigit);
        }
        Ok(Boleto {
            bank: digits[..3].to_owned(),
            currency: digits.as_bytes()[3] - b'0',
            due_factor: digits[5..9].parse().map_err(|_| BoletoError::NotDigits)?,
            amount: Money::from_centavos(digits[9..19].parse().map_err(|_| BoletoError::NotDigits)?),
            free_field: digits[19..].to_owned(),
        })
    }

    /// Reads a linha digitável, checking each field's digit and the general one.
    pub fn from_line(line: &str) -> Result<Boleto, BoletoError> {
        let digits = digits_only(line)?;
        if digits.len() != 47 {
            return Err(BoletoError::LineLength);
        }
        for (number, (start, end)) in [(1u8, (0, 9)), (2, (10, 20)), (3, (21, 31))] {
            if field_check_digit(&digits[start..end]).to_string() != digits[end..end + 1] {
                return Err(BoletoError::FieldCheckDigit(number));
            }
        }
        let barcode = format!(
            "{}{}{}{}{}{}",
            &digits[0..4],
            &digits[32..33],
            &digits[33..47],
            &digits[4..9],
            &digits[10..20],
            &digits[21..31]
        );
        Boleto::from_barcode(&barcode)
    }
}

fn line_from_barcode(barcode: &str) -> String {
    let field1 = format!("{}{}", &barcode[0..4], &barcode[19..24]);
    let field2 = &barcode[24..34];
    let field3 = &barcode[34..44];
    format!(
        "{field1}{}{field2}{}{field3}{}{}{}",
        field_check_digit(&field1),
        field_check_digit(field2),
        field_check_digit(field3),
        &barcode[4..5],
        &barcode[5..19]
    )
}

fn format_line(line: &str) -> String {
    format!(
        "{}.{} {}.{} {}.{} {} {}",
        &line[0..5],
        &line[5..10],
        &line[10..15],
        &line[15..21],
        &line[21..26],
        &line[26..32],
        &line[32..33],
        &line[33..47]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn due_factor_and_its_restart() {
        assert_eq!(due_factor(date(2000, 7, 3)).unwrap(), 1_000);
        assert_eq!(due_factor(date(2025, 2, 21)).unwrap(), 9_999);
        assert_eq!(due_factor(date(2025, 2, 22)).unwrap(), 1_000, "FEBRABAN's restart");
        assert_eq!(due_factor(date(2026, 1, 15)).unwrap(), 1_327);
        assert_eq!(due_date(1_327, date(2026, 1, 1)).unwrap(), date(2026, 1, 15));
        assert_eq!(due_date(9_999, date(2025, 1, 1)).unwrap(), date(2025, 2, 21));
        assert_eq!(due_date(1_000, date(2001, 1, 1)).unwrap(), date(2000, 7, 3));
        assert!(due_factor(date(1999, 1, 1)).is_err());
    }

    #[test]
    fn check_digits_by_hand() {
        // Mod 10 of "001905009", from the right with weights 2,1,2,…: 9·2=18→9, 0, 0, 5, 0, 9, 1·2=2,
        // 0, 0 → 25 → 10 − 5 = 5.
        assert_eq!(field_check_digit("001905009"), 5);
        // Mod 11 of 43 zeros is 0 → 11 → 1.
        assert_eq!(general_check_digit(&"0".repeat(43)), 1);
    }

    fn sample() -> Boleto {
        Boleto {
            bank: "001".into(),
            currency: 9,
            due_factor: due_factor(date(2026, 3, 10)).unwrap(),
            amount: Money::from_centavos(1_250_000),
            free_field: "0000002948251700000001817".into(),
        }
    }

    #[test]
    fn barcode_and_line_agree_both_ways() {
        let boleto = sample();
        let barcode = boleto.barcode().unwrap();
        assert_eq!(barcode.len(), 44);
        let line = boleto.linha_digitavel().unwrap();
        assert_eq!(line.chars().filter(char::is_ascii_digit).count(), 47);
        assert_eq!(Boleto::from_barcode(&barcode).unwrap(), boleto);
        assert_eq!(Boleto::from_line(&line).unwrap(), boleto);
        assert_eq!(&barcode[9..19], "0001250000");
    }

    proptest! {
        #[test]
        fn any_one_digit_change_is_detected(position in 0usize..47, delta in 1u8..10, barcode_position in 0usize..44) {
            let boleto = sample();
            let line: String = boleto.linha_digitavel().unwrap().chars().filter(char::is_ascii_digit).collect();
            let mut bytes = line.into_bytes();
            bytes[position] = b'0' + (bytes[position] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(Boleto::from_line(&changed).is_err(), "linha {} went undetected", changed);
            let barcode = boleto.barcode().unwrap();
            let mut bytes = barcode.into_bytes();
            bytes[barcode_position] = b'0' + (bytes[barcode_position] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(Boleto::from_barcode(&changed).is_err(), "barcode {} went undetected", changed);
        }

        #[test]
        fn generated_boletos_round_trip(bank in "[0-9]{3}", centavos in 0i64..9_999_999_999, free in "[0-9]{25}", days in 1_000i64..20_000) {
            let due = date(1997, 10, 7) + chrono::Duration::days(days);
            let boleto = Boleto { bank, currency: 9, due_factor: due_factor(due).unwrap(), amount: Money::from_centavos(centavos), free_field: free };
            prop_assert_eq!(Boleto::from_line(&boleto.linha_digitavel().unwrap()).unwrap(), boleto.clone());
            prop_assert_eq!(Boleto::from_barcode(&boleto.barcode().unwrap()).unwrap(), boleto.clone());
            prop_assert_eq!(due_date(boleto.due_factor, due).unwrap(), due);
        }
    }
}
