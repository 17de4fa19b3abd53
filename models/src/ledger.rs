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
}

impl fmt::Display for Account {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::GatewayClearing => formatter.write_str("gateway_clearing"),
            Account::PlatformFees => formatter.write_str("platform_fees"),
            Account::PatientRefunds => formatter.write_str("patient_refunds"),
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

/// The balance of `account` over `entries`: derived, never stored.
pub fn balance<'a, I: IntoIterator<Item = &'a Entry>>(entries: I, account: Account) -> Result<Money, MoneyError> {
    Money::sum(entries.into_iter().filter(|entry| entry.account == account).map(|entry| entry.amount))
}

#[cfg(test)]
mod tests {
    use super::*;

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
