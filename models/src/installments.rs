//! Installment plans (parcelamento): Tabela Price and the CET of Resolução CMN 3.517.
//!
//! Amounts are integer centavos. The installment amount is computed with exact decimals and rounded
//! half away from zero to the centavo; interest of each period is rounded the same way, and the last
//! installment pays the remaining balance with its interest, so the schedule amortises the principal
//! exactly.

use crate::money::{BasisPoints, Money};
use chrono::{Months, NaiveDate};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Most installments a plan may have.
pub const INSTALLMENTS_MAX: u32 = 24;
/// Highest monthly interest accepted: 10 % a month.
pub const MONTHLY_INTEREST_BPS_MAX: u32 = 1_000;
/// Smallest amount a payment may have: R$ 1,00.
pub const AMOUNT_MIN_CENTAVOS: i64 = 100;
/// Largest amount a payment may have: R$ 1.000.000,00.
pub const AMOUNT_MAX_CENTAVOS: i64 = 100_000_000;
/// The CET solver stops when the discounted sum is this close (in centavos) to the amount released.
const CET_TOLERANCE_CENTAVOS: f64 = 1e-7;
const CET_ITERATIONS_MAX: u32 = 200;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InstallmentError {
    #[error("installments must be between 1 and {INSTALLMENTS_MAX}")]
    Count,
    #[error("monthly_interest_bps must be between 0 and {MONTHLY_INTEREST_BPS_MAX}")]
    Interest,
    #[error("amount_centavos must be between {AMOUNT_MIN_CENTAVOS} and {AMOUNT_MAX_CENTAVOS}")]
    Amount,
    #[error("each installment must be at least one centavo")]
    InstallmentTooSmall,
    #[error("a due date falls outside the calendar")]
    Date,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest {
    pub principal: Money,
    pub count: u32,
    pub monthly_interest: BasisPoints,
    /// The day the amount is released (the payment is created); installments fall due monthly
    /// from one month after it.
    pub released_on: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installment {
    pub number: u32,
    pub due_date: NaiveDate,
    pub amount_centavos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallmentPlan {
    pub installments: Vec<Installment>,
    pub total_centavos: i64,
    /// CET in parts per million a year (269536 = 26.9536 % a year).
    pub cet_annual_ppm: i64,
}

impl InstallmentPlan {
    /// CET in basis points a year, rounded to the nearest basis point.
    pub fn cet_annual_bps(&self) -> i64 {
        (self.cet_annual_ppm + 50).div_euclid(100)
    }

    pub fn price(request: PlanRequest) -> Result<InstallmentPlan, InstallmentError> {
        validate(&request)?;
        let amounts = price_amounts(request.principal, request.count, request.monthly_interest)?;
        let mut installments = Vec::with_capacity(amounts.len());
        for (index, amount) in amounts.iter().enumerate() {
            let number = u32::try_from(index + 1).map_err(|_| InstallmentError::Count)?;
            let due_date = request.released_on.checked_add_months(Months::new(number)).ok_or(InstallmentError::Date)?;
            installments.push(Installment { number, due_date, amount_centavos: amount.centavos() });
        }
        let total = Money::sum(amounts.iter().copied()).map_err(|_| InstallmentError::Amount)?;
        let flows: Vec<(NaiveDate, Money)> =
            installments.iter().map(|i| (i.due_date, Money::from_centavos(i.amount_centavos))).collect();
        let cet = cet_annual(request.principal, request.released_on, &flows);
        Ok(InstallmentPlan {
            installments,
            total_centavos: total.centavos(),
            cet_annual_ppm: (cet * 1e6).round().to_i64().unwrap_or(i64::MAX),
        })
    }
}

fn validate(request: &PlanRequest) -> Result<(), InstallmentError> {
    if request.count == 0 || request.count > INSTALLMENTS_MAX {
        return Err(InstallmentError::Count);
    }
    if request.monthly_interest.value() > MONTHLY_INTEREST_BPS_MAX {
        return Err(InstallmentError::Interest);
    }
    let centavos = request.principal.centavos();
    if !(AMOUNT_MIN_CENTAVOS..=AMOUNT_MAX_CENTAVOS).contains(&centavos) {
        return Err(InstallmentError::Amount);
    }
    Ok(())
}

fn round_to_centavo(value: Decimal) -> Result<Money, InstallmentError> {
    value
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .map(Money::from_centavos)
        .ok_or(InstallmentError::Amount)
}

/// The amounts of a Tabela Price schedule: equal installments, the last one adjusted.
fn price_amounts(principal: Money, count: u32, rate: BasisPoints) -> Result<Vec<Money>, InstallmentError> {
    let present_value = Decimal::from(principal.centavos());
    let monthly = Decimal::from(rate.value()) / Decimal::from(BasisPoints::ONE_HUNDRED_PERCENT);
    let exact_installment = if monthly.is_zero() {
        present_value / Decimal::from(count)
    } else {
        let growth = (0..count).try_fold(Decimal::ONE, |acc, _| acc.checked_mul(Decimal::ONE + monthly));
        let growth = growth.ok_or(InstallmentError::Interest)?;
        present_value * monthly * growth / (growth - Decimal::ONE)
    };
    let installment = round_to_centavo(exact_installment)?;
    if !installment.is_positive() {
        return Err(InstallmentError::InstallmentTooSmall);
    }
    let mut balance = principal;
    let mut amounts = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 1..count {
        let interest = round_to_centavo(Decimal::from(balance.centavos()) * monthly)?;
        let amortisation = installment.checked_sub(interest).map_err(|_| InstallmentError::Amount)?;
        balance = balance.checked_sub(amortisation).map_err(|_| InstallmentError::Amount)?;
        amounts.push(installment);
    }
    let last_interest = round_to_centavo(Decimal::from(balance.centavos()) * monthly)?;
    let last = balance.checked_add(last_interest).map_err(|_| InstallmentError::Amount)?;
    if !last.is_positive() {
        return Err(InstallmentError::InstallmentTooSmall);
    }
    amounts.push(last);
    Ok(amounts)
}

fn money_to_f64(amount: Money) -> f64 {
    Decimal::from(amount.centavos()).to_f64().unwrap_or(f64::NAN)
}

/// CET (Custo Efetivo Total) as Resolução CMN 3.517 defines it: the annual rate at which the sum of
/// every cash flow, each discounted by its real day count over 365, equals the amount released.
/// Returned as a fraction a year (0.269536 = 26.9536 %). The rate is solved for by bisection, which
/// converges whatever the flows because the discounted sum falls as the rate grows.
pub fn cet_annual(released: Money, released_on: NaiveDate, flows: &[(NaiveDate, Money)]) -> f64 {
    let target = money_to_f64(released);
    let discounted = |rate: f64| -> f64 {
        flows
            .iter()
            .map(|(date, amount)| {
                let days = f64::from(i32::try_from((*date - released_on).num_days()).unwrap_or(i32::MAX));
                money_to_f64(*amount) / (1.0 + rate).powf(days / 365.0)
            })
            .sum()
    };
    let (mut low, mut high) = (-0.99_f64, 1_000.0_f64);
    for _ in 0..CET_ITERATIONS_MAX {
        let middle = (low + high) / 2.0;
        let value = discounted(middle);
        if (value - target).abs() < CET_TOLERANCE_CENTAVOS {
            return middle;
        }
        if value > target {
            low = middle;
        } else {
            high = middle;
        }
    }
    (low + high) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn ten_thousand_at_two_percent() -> InstallmentPlan {
        InstallmentPlan::price(PlanRequest {
            principal: Money::from_centavos(1_000_000),
            count: 12,
            monthly_interest: BasisPoints(200),
            released_on: date(2026, 1, 15),
        })
        .unwrap()
    }

    #[test]
    fn price_known_schedule() {
        let plan = ten_thousand_at_two_percent();
        let amounts: Vec<i64> = plan.installments.iter().map(|i| i.amount_centavos).collect();
        assert_eq!(&amounts[..11], &[94_560; 11]);
        assert_eq!(amounts[11], 94_555);
        assert_eq!(plan.total_centavos, 11 * 94_560 + 94_555);
        assert_eq!(plan.installments[0].due_date, date(2026, 2, 15));
        assert_eq!(plan.installments[11].due_date, date(2027, 1, 15));
    }

    #[test]
    fn cet_uses_real_day_counts() {
        // Twelve flows of 945,60 on the 15th of each month from 2026-02-15, released 2026-01-15:
        // 26.9536 % a year with real day counts (26.8242 % would be (1.02)^12 − 1, which ignores them).
        let flows: Vec<(NaiveDate, Money)> = (1..=12)
            .map(|m| (date(2026, 1, 15).checked_add_months(Months::new(m)).unwrap(), Money::from_centavos(94_560)))
            .collect();
        let cet = cet_annual(Money::from_centavos(1_000_000), date(2026, 1, 15), &flows);
        assert_eq!((cet * 1e6).round(), 269_536.0);
        // The exact schedule's last installment is 945,55, five centavos less, so its CET is a
        // hair lower: 26.9526 %.
        let plan = ten_thousand_at_two_percent();
        assert_eq!(plan.cet_annual_ppm, 269_526);
        assert_eq!(plan.cet_annual_bps(), 2_695);
    }

    #[test]
    fn zero_interest_splits_evenly_and_cet_is_zero() {
        let plan = InstallmentPlan::price(PlanRequest {
            principal: Money::from_centavos(100_000),
            count: 3,
            monthly_interest: BasisPoints(0),
            released_on: date(2026, 1, 31),
        })
        .unwrap();
        let amounts: Vec<i64> = plan.installments.iter().map(|i| i.amount_centavos).collect();
        assert_eq!(amounts, vec![33_333, 33_333, 33_334]);
        assert_eq!(plan.cet_annual_ppm, 0);
        // Month ends clamp: Jan 31 + 1 month is Feb 28.
        assert_eq!(plan.installments[0].due_date, date(2026, 2, 28));
        assert_eq!(plan.installments[1].due_date, date(2026, 3, 31));
    }

    #[test]
    fn invalid_requests() {
        let base = PlanRequest {
            principal: Money::from_centavos(10_000),
            count: 1,
            monthly_interest: BasisPoints(0),
            released_on: date(2026, 1, 1),
        };
        assert_eq!(InstallmentPlan::price(PlanRequest { count: 0, ..base }), Err(InstallmentError::Count));
        assert_eq!(InstallmentPlan::price(PlanRequest { count: 25, ..base }), Err(InstallmentError::Count));
        assert_eq!(
            InstallmentPlan::price(PlanRequest { monthly_interest: BasisPoints(1_001), ..base }),
            Err(InstallmentError::Interest)
        );
        assert_eq!(
            InstallmentPlan::price(PlanRequest { principal: Money::from_centavos(99), ..base }),
            Err(InstallmentError::Amount)
        );
        assert_eq!(
            InstallmentPlan::price(PlanRequest { principal: Money::from_centavos(AMOUNT_MAX_CENTAVOS + 1), ..base }),
            Err(InstallmentError::Amount)
        );
    }

    proptest! {
        #[test]
        fn schedule_amortises_exactly(principal in AMOUNT_MIN_CENTAVOS..AMOUNT_MAX_CENTAVOS, count in 1u32..=INSTALLMENTS_MAX, rate in 0u32..=MONTHLY_INTEREST_BPS_MAX) {
            let plan = InstallmentPlan::price(PlanRequest {
                principal: Money::from_centavos(principal), count, monthly_interest: BasisPoints(rate),
                released_on: date(2026, 3, 10),
            }).unwrap();
            prop_assert_eq!(plan.installments.len(), usize::try_from(count).unwrap());
            let sum: i64 = plan.installments.iter().map(|i| i.amount_centavos).sum();
            prop_assert_eq!(sum, plan.total_centavos);
            prop_assert!(plan.total_centavos >= principal);
            // Each period's rounding is at most one centavo, compounded to the end of the plan:
            // the last installment cannot stray further from the others than that.
            let first = plan.installments[0].amount_centavos;
            let last = plan.installments.last().unwrap().amount_centavos;
            let monthly = f64::from(rate) / 10_000.0;
            let bound = if rate == 0 { f64::from(count) } else { ((1.0 + monthly).powf(f64::from(count)) - 1.0) / monthly };
            prop_assert!(((first - last).abs() as f64) <= bound.ceil() + 1.0, "{} vs {}", first, last);
            if rate == 0 { prop_assert_eq!(plan.total_centavos, principal); }
        }
    }
}
