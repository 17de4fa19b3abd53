//! MedPay's domain: money, Brazilian identifiers, installment plans, the payment state machine and
//! the double-entry ledger. Pure types and functions: no I/O, no runtime.

pub mod boleto;
pub mod document;
pub mod ids;
pub mod installments;
pub mod ledger;
pub mod money;
pub mod payment;
pub mod pix;

pub use document::{Cnpj, Cpf, DocumentError, TussCode};
pub use ids::{ConversationId, IdError, PatientId, PaymentId, ProviderId};
pub use installments::{Installment, InstallmentError, InstallmentPlan, PlanRequest};
pub use ledger::{Account, Entry, LedgerError, Posting, Split, charge_posting, refund_posting, release_posting};
pub use money::{BasisPoints, Money, MoneyError};
pub use payment::{
    Decision, DecisionOutcome, FailMode, ListKind, ListType, PaymentMethod, PaymentStatus, Reason, TransitionError,
};
