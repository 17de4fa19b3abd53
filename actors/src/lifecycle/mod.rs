//! A payment's lifecycle as pure functions: (book, input) → the movement to commit (new status,
//! postings, events, charge and refund rows, and the intents it asks for). No I/O and no clock:
//! the time is an input. The transaction actor is the shell around it (`money.rs`): it commits
//! each movement, then performs what the book says is owed ([`owed`]) under our own ids, and
//! feeds each answer back as the next input. The simulation (`simulation.rs`) drives the same
//! functions with a gateway that fails and a process that crashes between any two steps.
//!
//! One room per job: this module holds the book and what every step shares (checking a step,
//! applying it, what is owed, creation); `charges`, `contracts`, `webhooks`, `refunds` and
//! `reviews` hold the steps.

use medpay_gateways::celcoin::{Charge, ChargeMethod, ChargeRequest, NoticeKind, SplitPart, parse_notice};
use medpay_models::{
    Account, BasisPoints, Money, PaymentMethod, PaymentStatus, Posting, Split, charge_posting, refund_posting,
    release_posting,
};
use medpay_store::{
    ChargeRecord, ChargeStatus, ContractRecord, ContractStatus, DecisionRecord, GatewayWebhook, IdempotencyCompletion,
    IntentKind, IntentRecord, Movement, NewEvent, PaymentRecord, RefundKind, RefundRecord, RefundStatus,
};
use serde_json::json;

/// The gateway name of Celcoin's webhooks, and of ClickSign's.
pub const CELCOIN: &str = "celcoin";
pub const CLICKSIGN: &str = "clicksign";

/// How the edge shows a payment (in events and in the stored answer).
pub type View =
    dyn Fn(&PaymentRecord, Option<&DecisionRecord>, Option<&ChargeRecord>) -> serde_json::Value + Send + Sync;

/// Everything a payment's lifecycle depends on, as its actor holds it (and as the store holds it
/// after every commit).
#[derive(Debug, Clone)]
pub struct Book {
    pub payment: PaymentRecord,
    /// The decision made at creation, shown in later events (without its features).
    pub decision: Option<DecisionRecord>,
    pub charges: Vec<ChargeRecord>,
    pub refunds: Vec<RefundRecord>,
    /// Effects committed and not performed yet, oldest first.
    pub intents: Vec<IntentRecord>,
    pub contract: Option<ContractRecord>,
    /// The sum of the payment's entries on its provider's escrow account (negative: held).
    pub escrow_balance_centavos: i64,
    pub escrow_released: bool,
}

/// Why an input was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The request is refused as it stands (a 4xx with this code); nothing changes.
    Refused { code: &'static str, message: String },
    /// The book contradicts itself (a bug or a corrupt row).
    Broken(String),
}

fn refused(code: &'static str, message: impl Into<String>) -> Fault {
    Fault::Refused { code, message: message.into() }
}

fn broken(error: impl std::fmt::Display) -> Fault {
    Fault::Broken(error.to_string())
}

/// The event type of a payment that moves to `status`.
pub fn event_type(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Requested => "payment.requested",
        PaymentStatus::Approved => "payment.approved",
        PaymentStatus::InReview => "payment.review",
        PaymentStatus::Declined => "payment.declined",
        PaymentStatus::AwaitingPayment => "payment.awaiting_payment",
        PaymentStatus::Paid => "payment.paid",
        PaymentStatus::HeldInEscrow => "payment.held",
        PaymentStatus::Released => "payment.released",
        PaymentStatus::Refunded => "payment.refunded",
        PaymentStatus::PartiallyRefunded => "payment.partially_refunded",
        PaymentStatus::ChargedBack => "payment.charged_back",
        PaymentStatus::Cancelled => "payment.cancelled",
        PaymentStatus::Expired => "payment.expired",
    }
}

pub fn event(kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent { seq: 0, kind: kind.to_owned(), data }
}

impl Book {
    /// A new payment's book, right after its first commit.
    pub fn opened(payment: PaymentRecord, decision: Option<DecisionRecord>, intents: Vec<IntentRecord>) -> Book {
        Book {
            payment,
            decision,
            charges: Vec::new(),
            refunds: Vec::new(),
            intents,
            contract: None,
            escrow_balance_centavos: 0,
            escrow_released: false,
        }
    }

    /// What the escrow holds of this payment now.
    pub fn escrow_held_centavos(&self) -> i64 {
        -self.escrow_balance_centavos
    }

    fn paid_centavos(&self) -> i64 {
        self.charges.iter().filter(|c| c.status == ChargeStatus::Paid).map(|c| c.amount_centavos).sum()
    }

    fn returned_centavos(&self) -> i64 {
        self.refunds.iter().map(|r| r.amount_centavos).sum()
    }

    fn refunded_of(&self, charge: &ChargeRecord) -> i64 {
        self.refunds.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum()
    }

    /// The payment's data for an event: the payment as the edge shows it, and `extra`.
    fn event_data(
        &self,
        view: &View,
        shown: &PaymentRecord,
        charge: Option<&ChargeRecord>,
        extra: serde_json::Value,
    ) -> serde_json::Value {
        let mut data = json!({ "payment": view(shown, self.decision.as_ref(), charge) });
        if let (Some(object), serde_json::Value::Object(more)) = (data.as_object_mut(), extra) {
            object.extend(more);
        }
        data
    }

    fn with_status(&self, status: PaymentStatus) -> PaymentRecord {
        let mut shown = self.payment.clone();
        shown.status = status;
        shown
    }
}

/// Whether `movement` is a step the payment may take from where it is.
pub fn check(book: &Book, movement: &Movement) -> Result<(), Fault> {
    let from = book.payment.status;
    if let Some(to) = movement.new_status.filter(|to| *to != from || *to == PaymentStatus::PartiallyRefunded) {
        // One step of the machine, or paid-then-held (a first payment into escrow).
        let direct = from.transition(to).is_ok();
        let via_paid = from.transition(PaymentStatus::Paid).is_ok() && PaymentStatus::Paid.transition(to).is_ok();
        if !direct && !via_paid {
            return Err(broken(format!("a payment cannot go from {from} to {to}")));
        }
    }
    Ok(())
}

/// The book after `movement` was committed.
pub fn apply(book: &mut Book, movement: &Movement) {
    if let Some(status) = movement.new_status
        && status != book.payment.status
    {
        book.payment.status = status;
        book.payment.updated_at_ms = movement.now_ms;
    }
    for posting in &movement.postings {
        book.escrow_released |= posting.kind() == "escrow_release";
        for entry in posting.entries() {
            if matches!(entry.account, Account::ProviderEscrow(_)) {
                book.escrow_balance_centavos += entry.amount.centavos();
            }
        }
    }
    if let Some(charge) = &movement.new_charge {
        book.charges.push(charge.clone());
    }
    if let Some((id, at)) = &movement.charge_paid
        && let Some(charge) = book.charges.iter_mut().find(|charge| &charge.id == id)
    {
        charge.status = ChargeStatus::Paid;
        charge.paid_at_ms = Some(*at);
    }
    if let Some((id, at)) = &movement.charge_received
        && let Some(charge) = book.charges.iter_mut().find(|charge| &charge.id == id)
    {
        charge.paid_at_ms.get_or_insert(*at);
    }
    if movement.charges_cancelled {
        for charge in book.charges.iter_mut().filter(|charge| charge.status == ChargeStatus::Active) {
            charge.status = ChargeStatus::Cancelled;
        }
    }
    book.refunds.extend(movement.new_refunds.iter().cloned());
    if let Some((id, gateway_id, at)) = &movement.refund_completed
        && let Some(refund) = book.refunds.iter_mut().find(|refund| &refund.id == id)
    {
        refund.status = RefundStatus::Completed;
        refund.completed_at_ms = Some(*at);
        if gateway_id.is_some() {
            refund.gateway_id = gateway_id.clone();
        }
    }
    if let Some(contract) = &movement.contract {
        book.contract = Some(contract.clone());
    }
    book.intents.retain(|intent| !movement.intents_done.contains(&intent.id));
    book.intents.extend(movement.new_intents.iter().cloned());
}

/// An effect the book owes the outside world, performed under our own id (so performing it
/// again after a lost answer finds it done instead of doing it twice).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Create the charge of an installment (Celcoin), then commit [`charge_made`].
    Charge { intent: IntentRecord, installment: u32 },
    /// Send the installment contract for signature (ClickSign), then commit [`contract_sent`].
    Contract { intent: IntentRecord },
    /// Release the escrow of these charges (Celcoin's transaction ids), then commit [`done`].
    Release { intent: IntentRecord, gateway_ids: Vec<String> },
    /// Pay a refund back (Celcoin); its webhook completes it.
    Refund { refund_id: String, gateway_id: String, amount_centavos: i64, reason: String },
}

/// Everything committed and not yet performed, oldest intent first, then the refunds owed.
pub fn owed(book: &Book) -> Vec<Effect> {
    let mut effects: Vec<Effect> = book
        .intents
        .iter()
        .filter_map(|intent| match intent.kind {
            IntentKind::Charge => {
                intent.installment.map(|installment| Effect::Charge { intent: intent.clone(), installment })
            }
            IntentKind::Contract => Some(Effect::Contract { intent: intent.clone() }),
            IntentKind::Release => Some(Effect::Release {
                intent: intent.clone(),
                gateway_ids: book
                    .charges
                    .iter()
                    .filter(|c| c.status == ChargeStatus::Paid)
                    .map(|c| c.gateway_id.clone())
                    .collect(),
            }),
        })
        .collect();
    for refund in book.refunds.iter().filter(|r| r.status == RefundStatus::Requested) {
        if let Some(charge) = book.charges.iter().find(|c| c.id == refund.charge_id) {
            effects.push(Effect::Refund {
                refund_id: refund.id.clone(),
                gateway_id: charge.gateway_id.clone(),
                amount_centavos: refund.amount_centavos,
                reason: refund.reason.clone(),
            });
        }
    }
    effects
}

/// A charge intent of a payment that moved on (cancelled, refunded) is not performed; but its
/// charge may have been made already with the answer lost. `found`: what the gateway holds under
/// the intent's id. Recorded as cancelled, so that money paid into it is known (and goes to
/// suspense with a case) instead of belonging to no payment.
pub fn charge_given_up(book: &Book, intent: &IntentRecord, found: Option<ChargeRecord>, now_ms: i64) -> Movement {
    let known = found.as_ref().is_some_and(|found| book.charges.iter().any(|c| c.id == found.id));
    Movement {
        new_charge: found.filter(|_| !known).map(|charge| ChargeRecord { status: ChargeStatus::Cancelled, ..charge }),
        intents_done: vec![intent.id.clone()],
        now_ms,
        ..Movement::default()
    }
}

/// An intent performed (or given up because the payment moved on): nothing else changes.
pub fn done(intent: &IntentRecord, now_ms: i64) -> Movement {
    Movement { intents_done: vec![intent.id.clone()], now_ms, ..Movement::default() }
}

fn split_of(payment: &PaymentRecord, amount_centavos: i64) -> Result<Split, Fault> {
    // A fee outside 0..=10 000 bps is a corrupt row, never a 0 % fee.
    let fee = u32::try_from(payment.fee_bps)
        .ok()
        .filter(|bps| *bps <= 10_000)
        .map(BasisPoints)
        .ok_or_else(|| broken(format!("payment {} has a fee of {} bps", payment.id, payment.fee_bps)))?;
    Split::of(Money::from_centavos(amount_centavos), fee).map_err(broken)
}

fn ledger(error: medpay_models::LedgerError) -> Fault {
    broken(format!("ledger: {error}"))
}

// ---- creation -------------------------------------------------------------------------------

/// The events of a payment just decided: requested, then its decision.
pub fn opening_events(view: &View, payment: &PaymentRecord, decision: &DecisionRecord) -> (Vec<NewEvent>, String) {
    let shown = view(payment, Some(decision), None);
    // The payment as it was requested: the same fields, before its decision.
    let mut requested = shown.clone();
    if let Some(fields) = requested.as_object_mut() {
        fields.insert("status".to_owned(), json!(PaymentStatus::Requested.as_str()));
        fields.insert("decision".to_owned(), serde_json::Value::Null);
    }
    let body = shown.to_string();
    let events = vec![
        event("payment.requested", json!({ "payment": requested })),
        event(event_type(payment.status), json!({ "payment": shown })),
    ];
    (events, body)
}

/// The effect an approval asks for, written with it: the first charge, or the contract to sign
/// first (`contract`), or nothing when no gateway moves money.
pub fn opening_intent(payment: &PaymentRecord, charging: bool, contract: bool) -> Option<IntentRecord> {
    match (charging && payment.status == PaymentStatus::Approved, contract) {
        (true, false) => Some(IntentRecord::charge(payment.id, 1, payment.created_at_ms)),
        (true, true) => Some(IntentRecord::contract(payment.id, payment.created_at_ms)),
        (false, _) => None,
    }
}

mod charges;
mod contracts;
mod refunds;
mod reviews;
mod webhooks;

pub use charges::*;
pub use contracts::*;
pub use refunds::*;
pub use reviews::*;
pub use webhooks::*;
