//! Money is an integer number of centavos; rates are basis points. No floating point touches an
//! amount.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("amount overflow")]
    Overflow,
    #[error("amount must not be negative")]
    Negative,
}

/// An amount in centavos (1/100 of a real). Signed, because ledger entries carry a sign; amounts
/// that must be positive are checked where they enter the system.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_centavos(centavos: i64) -> Money {
        Money(centavos)
    }

    pub const fn centavos(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.0.checked_add(other.0).map(Money).ok_or(MoneyError::Overflow)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.0.checked_sub(other.0).map(Money).ok_or(MoneyError::Overflow)
    }

    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        self.0.checked_neg().map(Money).ok_or(MoneyError::Overflow)
    }

    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        self.0.checked_mul(factor).map(Money).ok_or(MoneyError::Overflow)
    }

    /// The share of this amount at `rate`, rounded half away from zero to the centavo.
    pub fn share(self, rate: BasisPoints) -> Result<Money, MoneyError> {
        let product = i128::from(self.0) * i128::from(rate.0);
        let half = i128::from(BasisPoints::ONE_HUNDRED_PERCENT) / 2;
        let rounded = if product >= 0 {
            (product + half) / i128::from(BasisPoints::ONE_HUNDRED_PERCENT)
        } else {
            (product - half) / i128::from(BasisPoints::ONE_HUNDRED_PERCENT)
        };
        i64::try_from(rounded).map(Money).map_err(|_| MoneyError::Overflow)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn sum<I: IntoIterator<Item = Money>>(amounts: I) -> Result<Money, MoneyError> {
        amounts.into_iter().try_fold(Money::ZERO, Money::checked_add)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Money({self})")
    }
}

/// "R$ 1234,56" style, for logs and messages.
impl fmt::Display for Money {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let absolute = self.0.unsigned_abs();
        write!(formatter, "{sign}R$ {},{:02}", absolute / 100, absolute % 100)
    }
}

impl Money {
    /// As Brazilians write it: `R$ 1.234,56`.
    pub fn brl(&self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let absolute = self.0.unsigned_abs();
        let units = (absolute / 100).to_string();
        let mut grouped = String::with_capacity(units.len() + units.len() / 3);
        for (index, digit) in units.chars().enumerate() {
            if index > 0 && (units.len() - index).is_multiple_of(3) {
                grouped.push('.');
            }
            grouped.push(digit);
        }
        format!("{sign}R$ {grouped},{:02}", absolute % 100)
    }
}

/// A rate in basis points as Brazilians write it: 199 → `1,99%`.
pub fn percent_pt(bps: i64) -> String {
    let sign = if bps < 0 { "-" } else { "" };
    let absolute = bps.unsigned_abs();
    format!("{sign}{},{:02}%", absolute / 100, absolute % 100)
}

/// A rate in basis points: 1 bp = 0.01 %.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BasisPoints(pub u32);

impl BasisPoints {
    pub const ONE_HUNDRED_PERCENT: u32 = 10_000;

    pub fn new(value: u32) -> Option<BasisPoints> {
        (value <= Self::ONE_HUNDRED_PERCENT).then_some(BasisPoints(value))
    }

    pub fn value(self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn brl_groups_thousands() {
        assert_eq!(Money::from_centavos(123_456).brl(), "R$ 1.234,56");
        assert_eq!(Money::from_centavos(100_000_000).brl(), "R$ 1.000.000,00");
        assert_eq!(Money::from_centavos(5).brl(), "R$ 0,05");
        assert_eq!(Money::from_centavos(-99_900).brl(), "-R$ 999,00");
    }

    #[test]
    fn display_is_brazilian_reais() {
        assert_eq!(Money::from_centavos(123456).to_string(), "R$ 1234,56");
        assert_eq!(Money::from_centavos(-5).to_string(), "-R$ 0,05");
    }

    #[test]
    fn share_rounds_half_away_from_zero() {
        // 2.5 % of R$ 0,10 is 0.25 centavo → 0; of R$ 0,20 is 0.5 → 1.
        assert_eq!(Money::from_centavos(10).share(BasisPoints(250)).unwrap().centavos(), 0);
        assert_eq!(Money::from_centavos(20).share(BasisPoints(250)).unwrap().centavos(), 1);
        assert_eq!(Money::from_centavos(-20).share(BasisPoints(250)).unwrap().centavos(), -1);
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert_eq!(Money::from_centavos(i64::MAX).checked_add(Money::from_centavos(1)), Err(MoneyError::Overflow));
        assert_eq!(Money::from_centavos(i64::MIN).checked_neg(), Err(MoneyError::Overflow));
        assert_eq!(BasisPoints::new(10_001), None);
    }

    proptest! {
        #[test]
        fn share_never_exceeds_whole(amount in 0i64..1_000_000_000_000, rate in 0u32..=10_000) {
            let part = Money::from_centavos(amount).share(BasisPoints(rate)).unwrap();
            prop_assert!(part.centavos() <= amount);
            prop_assert!(part.centavos() >= 0);
        }
    }
}
