//! Double-entry ledger. A posting is a set of entries whose amounts sum to zero; a balance is the
//! sum of an account's entries and is never stored. Sign convention: debit positive, credit
//! negative.

use crate::ids::{PaymentId, ProviderId};
use crate::money::{Money, MoneyError};
use std::fmt;
use std::str::FromStr;

/// Most entries one posting may have.
pub const POSTING_ENTRIES_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Money the gateway holds for us (charges received, not yet paid out).
    GatewayClearing,
    /// The platform's fee revenue.
    PlatformFees,
    /// What a provider can be paid out.
    ProviderAvailable(ProviderId),
    /// A provider's share held until the procedure is confirmed.
    ProviderEscrow(ProviderId),
    /// Money owed back to patients (refunds, MED claims) until the gateway returns it.
    PatientRefunds,
    /// Money the bank moved that the payment's state did not expect (a PIX paid after its charge
    /// was cancelled, a wrong amount, a chargeback beyond what was left): kept here, never
    /// dropped, until a person resolves the case opened with it.
    Suspense,
}

impl fmt::Display for Account {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::GatewayClearing => formatter.write_str("gateway_clearing"),
            Account::PlatformFees => formatter.write_str("platform_fees"),
            Account::PatientRefunds => formatter.write_str("patient_refunds"),
            Account::Suspense => formatter.write_str("suspense"),
            Account::ProviderAvailable(id) => write!(formatter, "provider_available:{id}"),
            Account::ProviderEscrow(id) => write!(formatter, "provider_escrow:{id}"),
        }
    }
}

impl FromStr for Account {
    type Err = LedgerError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let unknown = || LedgerError::UnknownAccount(input.to_owned());
        match input.split_once(':') {
            None => match input {
                "gateway_clearing" => Ok(Account::GatewayClearing),
                "platform_fees" => Ok(Account::PlatformFees),
                "patient_refunds" => Ok(Account::PatientRefunds),
                "suspense" => Ok(Account::Suspense),
                _ => Err(unknown()),
            },
            Some((kind, id)) => {
                let provider: ProviderId = id.parse().map_err(|_| unknown())?;
                match kind {
                    "provider_available" => Ok(Account::ProviderAvailable(provider)),
                    "provider_escrow" => Ok(Account::ProviderEscrow(provider)),
                    _ => Err(unknown()),
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    #[error("a posting needs at least two entries")]
    TooFewEntries,
    #[error("a posting has at most {POSTING_ENTRIES_MAX} entries")]
    TooManyEntries,
    #[error("a ledger entry of zero centavos is meaningless")]
    ZeroEntry,
    #[error("entries sum to {0} centavos; a posting must sum to zero")]
    Unbalanced(i64),
    #[error("unknown ledger account {0:?}")]
    UnknownAccount(String),
    #[error("a refund must be positive and at most the amount charged")]
    Refund,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub account: Account,
    pub amount: Money,
}

/// A balanced set of entries. Only `Posting::new` builds one, so every posting that exists balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    payment: Option<PaymentId>,
    kind: &'static str,
    entries: Vec<Entry>,
}

impl Posting {
    pub fn new(payment: Option<PaymentId>, kind: &'static str, entries: Vec<Entry>) -> Result<Posting, LedgerError> {
        if entries.len() < 2 {
            return Err(LedgerError::TooFewEntries);
        }
        if entries.len() > POSTING_ENTRIES_MAX {
            return Err(LedgerError::TooManyEntries);
        }
        if entries.iter().any(|entry| entry.amount == Money::ZERO) {
            return Err(LedgerError::ZeroEntry);
        }
        let sum = Money::sum(entries.iter().map(|entry| entry.amount))?;
        if sum != Money::ZERO {
            return Err(LedgerError::Unbalanced(sum.centavos()));
        }
        Ok(Posting { payment, kind, entries })
    }

    /// Move `amount` from `credit` to `debit`.
    pub fn transfer(
        payment: Option<PaymentId>,
        kind: &'static str,
        debit: Account,
        credit: Account,
        amount: Money,
    ) -> Result<Posting, LedgerError> {
        Posting::new(
            payment,
            kind,
            vec![Entry { account: debit, amount }, Entry { account: credit, amount: amount.checked_neg()? }],
        )
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn payment(&self) -> Option<PaymentId> {
        self.payment
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// How a charge divides: the platform's fee and the provider's share, which add up to the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub amount: Money,
    pub fee: Money,
    pub provider_share: Money,
}

impl Split {
    /// The fee is `fee` of the amount, rounded half away from zero; the provider gets the rest, so
    /// no centavo is lost to rounding.
    pub fn of(amount: Money, fee: crate::money::BasisPoints) -> Result<Split, LedgerError> {
        let fee_amount = amount.share(fee)?;
        Ok(Split { amount, fee: fee_amount, provider_share: amount.checked_sub(fee_amount)? })
    }
}

fn entries_without_zeros(entries: Vec<Entry>) -> Vec<Entry> {
    entries.into_iter().filter(|entry| entry.amount != Money::ZERO).collect()
}

/// The charge received: the gateway holds the money; the fee is the platform's; the provider's
/// share is available, or held in escrow until the procedure is confirmed.
pub fn charge_posting(
    payment: PaymentId,
    provider: ProviderId,
    split: Split,
    escrow: bool,
) -> Result<Posting, LedgerError> {
    let provider_account =
        if escrow { Account::ProviderEscrow(provider) } else { Account::ProviderAvailable(provider) };
    let entries = vec![
        Entry { account: Account::GatewayClearing, amount: split.amount },
        Entry { account: Account::PlatformFees, amount: split.fee.checked_neg()? },
        Entry { account: provider_account, amount: split.provider_share.checked_neg()? },
    ];
    Posting::new(Some(payment), "charge", entries_without_zeros(entries))
}

/// The procedure happened: the held share becomes available.
pub fn release_posting(payment: PaymentId, provider: ProviderId, held: Money) -> Result<Posting, LedgerError> {
    Posting::transfer(
        Some(payment),
        "escrow_release",
        Account::ProviderEscrow(provider),
        Account::ProviderAvailable(provider),
        held,
    )
}

/// The provider's part of the first `refunded` centavos of a charge, rounded half up.
fn provider_part_of(split: Split, refunded: Money) -> Result<Money, LedgerError> {
    let amount = i128::from(split.amount.centavos());
    let share = i128::from(split.provider_share.centavos()) * i128::from(refunded.centavos());
    let part = (2 * share + amount) / (2 * amount);
    Ok(Money::from_centavos(i64::try_from(part).map_err(|_| LedgerError::Refund)?))
}

/// A refund of `refund` out of a charge split as `split`, of which `refunded_before` was refunded
/// already: the fee and the provider's share are given back in proportion, computed on the running
/// total so that refunds adding up to the whole amount give back exactly the whole share and fee;
/// from escrow when the share is still held; owed to the patient until the gateway pays it back.
pub fn refund_posting(
    payment: PaymentId,
    provider: ProviderId,
    split: Split,
    refunded_before: Money,
    refund: Money,
    held: bool,
) -> Result<Posting, LedgerError> {
    let refunded_after = refunded_before.checked_add(refund)?;
    if !refund.is_positive() || refunded_before.centavos() < 0 || refunded_after > split.amount {
        return Err(LedgerError::Refund);
    }
    let provider_part =
        provider_part_of(split, refunded_after)?.checked_sub(provider_part_of(split, refunded_before)?)?;
    let fee_part = refund.checked_sub(provider_part)?;
    let provider_account = if held { Account::ProviderEscrow(provider) } else { Account::ProviderAvailable(provider) };
    let entries = vec![
        Entry { account: provider_account, amount: provider_part },
        Entry { account: Account::PlatformFees, amount: fee_part },
        Entry { account: Account::PatientRefunds, amount: refund.checked_neg()? },
    ];
    Posting::new(Some(payment), "refund", entries_without_zeros(entries))
}

/// The balance of `account` over `entries`: derived, never stored.
pub fn balance<'a, I: IntoIterator<Item = &'a Entry>>(entries: I, account: Account) -> Result<Money, MoneyError> {
    Money::sum(entries.into_iter().filter(|entry| entry.account == account).map(|entry| entry.amount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::BasisPoints;
    use proptest::prelude::*;

    fn all(postings: &[Posting]) -> Vec<Entry> {
        postings.iter().flat_map(|posting| posting.entries().to_vec()).collect()
    }

    #[test]
    fn charge_hold_release_refund_by_hand() {
        let (payment, provider) = (PaymentId::new(), ProviderId::new());
        // R$ 1.000,00 at 5 %: fee 50,00, provider 950,00, held.
        let split = Split::of(Money::from_centavos(100_000), BasisPoints(500)).unwrap();
        assert_eq!((split.fee.centavos(), split.provider_share.centavos()), (5_000, 95_000));
        let mut postings = vec![charge_posting(payment, provider, split, true).unwrap()];
        let entries = all(&postings);
        assert_eq!(balance(&entries, Account::ProviderEscrow(provider)).unwrap().centavos(), -95_000);
        postings.push(release_posting(payment, provider, split.provider_share).unwrap());
        // A partial refund of 300,00 after release: provider gives back 285,00, the platform 15,00.
        postings
            .push(refund_posting(payment, provider, split, Money::ZERO, Money::from_centavos(30_000), false).unwrap());
        let entries = all(&postings);
        assert_eq!(balance(&entries, Account::ProviderAvailable(provider)).unwrap().centavos(), -66_500);
        assert_eq!(balance(&entries, Account::ProviderEscrow(provider)).unwrap().centavos(), 0);
        assert_eq!(balance(&entries, Account::PlatformFees).unwrap().centavos(), -3_500);
        assert_eq!(balance(&entries, Account::PatientRefunds).unwrap().centavos(), -30_000);
        assert_eq!(balance(&entries, Account::GatewayClearing).unwrap().centavos(), 100_000);
        let too_much =
            refund_posting(payment, provider, split, Money::from_centavos(30_000), Money::from_centavos(70_001), false);
        assert_eq!(too_much, Err(LedgerError::Refund), "more than the amount in all");
    }

    proptest! {
        #[test]
        fn every_movement_balances_and_a_full_refund_returns_every_share(amount in 1i64..1_000_000_000, fee in 0u32..=10_000, escrow in any::<bool>(), parts in 1usize..5) {
            let (payment, provider) = (PaymentId::new(), ProviderId::new());
            let split = Split::of(Money::from_centavos(amount), BasisPoints(fee)).unwrap();
            prop_assert_eq!(split.fee.checked_add(split.provider_share).unwrap(), split.amount);
            let mut postings = vec![charge_posting(payment, provider, split, escrow).unwrap()];
            // Refund the whole amount in `parts` pieces: each balances on its own; the last takes the remainder.
            let piece = amount / i64::try_from(parts).unwrap();
            let mut refunded = 0;
            for index in 0..parts {
                let this = if index + 1 == parts { amount - refunded } else { piece };
                if this == 0 { continue; }
                postings.push(refund_posting(payment, provider, split, Money::from_centavos(refunded), Money::from_centavos(this), escrow).unwrap());
                refunded += this;
            }
            for posting in &postings {
                prop_assert_eq!(Money::sum(posting.entries().iter().map(|e| e.amount)).unwrap(), Money::ZERO);
            }
            let entries = all(&postings);
            let provider_account = if escrow { Account::ProviderEscrow(provider) } else { Account::ProviderAvailable(provider) };
            // Refunds adding up to the amount give back exactly the share and the fee.
            prop_assert_eq!(balance(&entries, provider_account).unwrap().centavos(), 0);
            prop_assert_eq!(balance(&entries, Account::PlatformFees).unwrap().centavos(), 0);
            prop_assert_eq!(balance(&entries, Account::PatientRefunds).unwrap().centavos(), -amount);
        }
    }

    #[test]
    fn balanced_postings_only() {
        let provider = ProviderId::new();
        let entries = vec![
            Entry { account: Account::GatewayClearing, amount: Money::from_centavos(10_000) },
            Entry { account: Account::ProviderAvailable(provider), amount: Money::from_centavos(-9_500) },
            Entry { account: Account::PlatformFees, amount: Money::from_centavos(-500) },
        ];
        let posting = Posting::new(None, "charge", entries.clone()).unwrap();
        assert_eq!(balance(posting.entries(), Account::ProviderAvailable(provider)).unwrap().centavos(), -9_500);

        let mut unbalanced = entries.clone();
        unbalanced[2].amount = Money::from_centavos(-499);
        assert_eq!(Posting::new(None, "charge", unbalanced), Err(LedgerError::Unbalanced(1)));
        assert_eq!(Posting::new(None, "charge", entries[..1].to_vec()), Err(LedgerError::TooFewEntries));
        let mut zero = entries.clone();
        zero.push(Entry { account: Account::PatientRefunds, amount: Money::ZERO });
        assert_eq!(Posting::new(None, "charge", zero), Err(LedgerError::ZeroEntry));
    }

    #[test]
    fn account_names_round_trip() {
        let provider = ProviderId::new();
        for account in [
            Account::GatewayClearing,
            Account::PlatformFees,
            Account::PatientRefunds,
            Account::ProviderAvailable(provider),
            Account::ProviderEscrow(provider),
        ] {
            assert_eq!(account.to_string().parse::<Account>().unwrap(), account);
        }
        assert!("provider_available:nope".parse::<Account>().is_err());
        assert!("cash".parse::<Account>().is_err());
    }

    #[test]
    fn transfer_overflow_is_refused() {
        let result = Posting::transfer(
            None,
            "x",
            Account::GatewayClearing,
            Account::PlatformFees,
            Money::from_centavos(i64::MIN),
        );
        assert_eq!(result, Err(LedgerError::Money(MoneyError::Overflow)));
    }
}
