//! A payment's lifecycle as pure functions: (book, input) → the movement to commit (new status,
//! postings, events, charge and refund rows, and the intents it asks for). No I/O and no clock:
//! the time is an input. The transaction actor is the shell around it (`money.rs`): it commits
//! each movement, then performs what the book says is owed ([`owed`]) under our own ids, and
//! feeds each answer back as the next input. The simulation (`simulation.rs`) drives the same
//! functions with a gateway that fails and a process that crashes between any two steps.

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

// ---- charges --------------------------------------------------------------------------------

fn gateway_method(method: PaymentMethod) -> ChargeMethod {
    match method {
        PaymentMethod::Pix => ChargeMethod::Pix,
        PaymentMethod::Boleto => ChargeMethod::Boleto,
        PaymentMethod::Card => ChargeMethod::Card,
    }
}

/// Whether the payment is where a charge of installment `number` may be made.
pub fn chargeable(book: &Book, number: u32) -> bool {
    match number {
        1 => book.payment.status == PaymentStatus::Approved,
        _ => matches!(book.payment.status, PaymentStatus::Paid | PaymentStatus::HeldInEscrow | PaymentStatus::Released),
    }
}

/// The request for installment `number`'s charge, made out to the debtor (name, CPF digits).
pub fn charge_request(
    book: &Book,
    number: u32,
    debtor: (String, String),
    card_token: Option<String>,
    pix_expiration_seconds: i64,
) -> Result<ChargeRequest, Fault> {
    let payment = &book.payment;
    let installment = payment
        .installments
        .iter()
        .find(|i| i.number == number)
        .ok_or_else(|| broken(format!("payment {} has no installment {number}", payment.id)))?;
    let split = split_of(payment, installment.amount_centavos)?;
    let method = gateway_method(payment.method);
    // A single PIX payment is an immediate charge; installments and boletos have due dates.
    let due_date = (method != ChargeMethod::Pix || payment.installments.len() > 1 || number > 1)
        .then(|| installment.due_date.to_string());
    Ok(ChargeRequest {
        client_request_id: ChargeRecord::id_for(payment.id, number),
        method,
        amount_centavos: installment.amount_centavos,
        due_date,
        debtor_name: debtor.0,
        debtor_cpf: debtor.1,
        description: format!("{} (parcela {number}/{})", payment.description, payment.installments.len()),
        split: [
            (Account::ProviderAvailable(payment.provider_id).to_string(), split.provider_share.centavos()),
            (Account::PlatformFees.to_string(), split.fee.centavos()),
        ]
        .into_iter()
        .filter(|(_, amount)| *amount > 0)
        .map(|(account, amount_centavos)| SplitPart { account, amount_centavos })
        .collect(),
        escrow: payment.escrow,
        card_token,
        expiration_seconds: Some(pix_expiration_seconds),
    })
}

/// The gateway's answer to `request` as the charge row we keep; refused when it is another charge.
pub fn charge_record(
    book: &Book,
    request: &ChargeRequest,
    charge: Charge,
    number: u32,
    now_ms: i64,
) -> Result<ChargeRecord, Fault> {
    if charge.amount_centavos != request.amount_centavos || charge.client_request_id != request.client_request_id {
        return Err(broken(format!("Celcoin returned charge {} of another amount or id", charge.transaction_id)));
    }
    Ok(ChargeRecord {
        id: request.client_request_id.clone(),
        payment_id: book.payment.id,
        installment: number,
        method: book.payment.method,
        gateway_id: charge.transaction_id,
        amount_centavos: charge.amount_centavos,
        status: ChargeStatus::Active,
        br_code: charge.emv,
        linha_digitavel: charge.linha_digitavel,
        barcode: charge.barcode,
        due_date: charge.due_date.or_else(|| request.due_date.clone()),
        expires_at_ms: charge.expiration_seconds.map(|seconds| now_ms + seconds * 1_000),
        paid_at_ms: None,
        created_at_ms: now_ms,
    })
}

/// The charge an intent asked for was made: recorded with the intent done. The first one moves
/// the payment to awaiting payment and completes the answer of the request that created it
/// (returned: the body, with the charge).
pub fn charge_made(
    book: &Book,
    intent: &IntentRecord,
    charge: ChargeRecord,
    now_ms: i64,
    view: &View,
) -> (Movement, Option<String>) {
    let first = charge.installment == 1;
    let mut shown = book.payment.clone();
    if first {
        shown.status = PaymentStatus::AwaitingPayment;
        shown.updated_at_ms = charge.created_at_ms;
    }
    let rendered = view(&shown, book.decision.as_ref(), Some(&charge));
    let body = first.then(|| rendered.to_string());
    let kind = if first { event_type(PaymentStatus::AwaitingPayment) } else { "payment.installment_due" };
    let movement = Movement {
        new_status: first.then_some(PaymentStatus::AwaitingPayment),
        events: vec![event(kind, json!({"payment": rendered, "installment": charge.installment}))],
        intents_done: vec![intent.id.clone()],
        idempotency: body.clone().map(|body| IdempotencyCompletion { payment_id: book.payment.id, status: 201, body }),
        now_ms: shown.updated_at_ms.max(now_ms),
        new_charge: Some(charge),
        ..Movement::default()
    };
    (movement, body)
}

/// The answer of the request that created the payment when its first charge is not made in
/// time (the sweep makes it later under the same id): the payment as it stands.
pub fn answer_without_charge(book: &Book, view: &View) -> (Movement, String) {
    let body = view(&book.payment, book.decision.as_ref(), None).to_string();
    let completion = IdempotencyCompletion { payment_id: book.payment.id, status: 201, body: body.clone() };
    (Movement { idempotency: Some(completion), ..Movement::default() }, body)
}

/// A first PIX charge left unpaid past its expiry expires the payment.
pub fn expire(book: &Book, now_ms: i64, view: &View) -> Option<Movement> {
    if book.payment.status != PaymentStatus::AwaitingPayment {
        return None;
    }
    let expired =
        book.charges.iter().any(|c| c.status == ChargeStatus::Active && c.expires_at_ms.is_some_and(|at| at <= now_ms));
    if !expired {
        return None;
    }
    let shown = book.with_status(PaymentStatus::Expired);
    let data = book.event_data(view, &shown, None, json!({"reason": "pix_expired"}));
    Some(Movement {
        new_status: Some(PaymentStatus::Expired),
        charges_cancelled: true,
        events: vec![event(event_type(PaymentStatus::Expired), data)],
        now_ms,
        ..Movement::default()
    })
}

// ---- contracts ------------------------------------------------------------------------------

/// Whether the contract intent is still worth performing (else it is [`done`] as it is).
pub fn contract_wanted(book: &Book) -> bool {
    book.contract.is_none() && book.payment.status == PaymentStatus::Approved
}

/// The contract an intent asked for was sent (envelope `envelope_id`).
pub fn contract_sent(book: &Book, intent: &IntentRecord, envelope_id: &str, now_ms: i64, view: &View) -> Movement {
    let data =
        book.event_data(view, &book.payment, None, json!({"contract": {"envelope_id": envelope_id, "status": "sent"}}));
    Movement {
        contract: Some(ContractRecord {
            payment_id: book.payment.id,
            envelope_id: envelope_id.to_owned(),
            status: ContractStatus::Sent,
            created_at_ms: now_ms,
            signed_at_ms: None,
        }),
        events: vec![event("payment.contract_sent", data)],
        intents_done: vec![intent.id.clone()],
        now_ms,
        ..Movement::default()
    }
}

fn contract_webhook(book: &Book, webhook: &GatewayWebhook, now_ms: i64, view: &View) -> Applied {
    let Some(contract) = book.contract.clone() else { return Applied::Wait };
    let name: String = serde_json::from_str::<serde_json::Value>(&webhook.body)
        .ok()
        .and_then(|value| value.pointer("/event/name").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let hook = |note: &str, outcome: &'static str| {
        Some((webhook.gateway.clone(), webhook.webhook_id.clone(), outcome, note.to_owned()))
    };
    let sent = contract.status == ContractStatus::Sent;
    let movement = match name.as_str() {
        "auto_close" | "close" if sent => Movement {
            contract: Some(ContractRecord {
                status: ContractStatus::Signed,
                signed_at_ms: Some(now_ms),
                ..contract.clone()
            }),
            // Signed: the first charge is asked for in the same commit.
            new_intents: vec![IntentRecord::charge(book.payment.id, 1, now_ms)],
            webhook: hook("", "applied"),
            events: vec![event(
                "payment.contract_signed",
                book.event_data(
                    view,
                    &book.payment,
                    None,
                    json!({"contract": {"envelope_id": contract.envelope_id, "status": "signed"}}),
                ),
            )],
            now_ms,
            ..Movement::default()
        },
        "refusal" if sent && book.payment.status == PaymentStatus::Approved => {
            let shown = book.with_status(PaymentStatus::Cancelled);
            Movement {
                new_status: Some(PaymentStatus::Cancelled),
                contract: Some(ContractRecord { status: ContractStatus::Refused, ..contract.clone() }),
                webhook: hook("", "applied"),
                events: vec![event(
                    event_type(PaymentStatus::Cancelled),
                    book.event_data(view, &shown, None, json!({"reason": "contract_refused"})),
                )],
                now_ms,
                ..Movement::default()
            }
        }
        other => Movement {
            webhook: hook(&format!("event {other} changes nothing"), "ignored"),
            now_ms,
            ..Movement::default()
        },
    };
    Applied::Step(Box::new(movement))
}

// ---- webhooks -------------------------------------------------------------------------------

/// What a recorded webhook does to the payment.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Commit this (the webhook applied, or set aside for good with a note).
    Step(Box<Movement>),
    /// It has to wait for another step first (a chargeback before its payment was recorded).
    Wait,
}

fn set_aside(webhook: &GatewayWebhook, outcome: &'static str, note: impl Into<String>, now_ms: i64) -> Applied {
    Applied::Step(Box::new(Movement {
        webhook: Some((webhook.gateway.clone(), webhook.webhook_id.clone(), outcome, note.into())),
        now_ms,
        ..Movement::default()
    }))
}

/// Applies a gateway webhook recorded for this payment.
pub fn webhook(book: &Book, webhook: &GatewayWebhook, now_ms: i64, view: &View) -> Result<Applied, Fault> {
    if webhook.gateway == CLICKSIGN {
        return Ok(contract_webhook(book, webhook, now_ms, view));
    }
    let notice = match parse_notice(webhook.body.as_bytes()) {
        Ok(notice) => notice,
        Err(error) => return Ok(set_aside(webhook, "ignored", error, now_ms)),
    };
    // The book holds every charge of its payment: one it does not know is another payment's,
    // or its own charge's commit has not happened yet (a card captured as it was made).
    let Some(charge) = book.charges.iter().find(|c| c.gateway_id == notice.charge_transaction_id).cloned() else {
        return Ok(Applied::Wait);
    };
    if charge.payment_id != book.payment.id {
        return Ok(set_aside(webhook, "ignored", "charge of another payment", now_ms));
    }
    let hook = Some((webhook.gateway.clone(), webhook.webhook_id.clone(), "applied", String::new()));
    let payment = &book.payment;
    match notice.kind {
        NoticeKind::Paid => {
            let first = charge.installment == 1;
            let payable = if first {
                payment.status == PaymentStatus::AwaitingPayment
            } else {
                matches!(
                    payment.status,
                    PaymentStatus::Paid
                        | PaymentStatus::HeldInEscrow
                        | PaymentStatus::Released
                        | PaymentStatus::PartiallyRefunded
                )
            };
            let unexpected = match (charge.status, notice.amount_centavos == charge.amount_centavos) {
                (ChargeStatus::Active, _) if !payable => {
                    Some(format!("paid {} centavos for a payment already {}", notice.amount_centavos, payment.status))
                }
                (ChargeStatus::Active, true) => None,
                (ChargeStatus::Active, false) => {
                    Some(format!("paid {} centavos for a charge of {}", notice.amount_centavos, charge.amount_centavos))
                }
                (status, _) => Some(format!("paid {} centavos for a charge already {status}", notice.amount_centavos)),
            };
            if let Some(note) = unexpected {
                // The money arrived: kept in suspense with a case, never dropped.
                let mut movement = Movement {
                    webhook: hook,
                    charge_received: Some((charge.id.clone(), now_ms)),
                    now_ms,
                    ..Movement::default()
                };
                suspend(
                    book,
                    view,
                    &mut movement,
                    Account::GatewayClearing,
                    Account::Suspense,
                    notice.amount_centavos,
                    &note,
                )?;
                return Ok(Applied::Step(Box::new(movement)));
            }
            // Into escrow until the procedure releases it (a later installment too, while the
            // escrow was not released).
            let held = payment.escrow && !book.escrow_released;
            let split = split_of(payment, charge.amount_centavos)?;
            let posting = charge_posting(payment.id, payment.provider_id, split, held).map_err(ledger)?;
            let mut shown = payment.clone();
            let mut events = Vec::new();
            let installment = json!({"installment": charge.installment});
            let new_status = if first {
                shown.status = PaymentStatus::Paid;
                events.push(event(
                    event_type(PaymentStatus::Paid),
                    book.event_data(view, &shown, Some(&charge), installment),
                ));
                if held {
                    shown.status = PaymentStatus::HeldInEscrow;
                    events.push(event(
                        event_type(PaymentStatus::HeldInEscrow),
                        book.event_data(
                            view,
                            &shown,
                            Some(&charge),
                            json!({"held_centavos": split.provider_share.centavos()}),
                        ),
                    ));
                }
                Some(shown.status)
            } else {
                events
                    .push(event("payment.installment_paid", book.event_data(view, &shown, Some(&charge), installment)));
                None
            };
            // The next installment's charge is asked for in the same commit that records this one paid.
            let next = charge.installment + 1;
            let new_intents = payment
                .installments
                .iter()
                .any(|installment| installment.number == next)
                .then(|| IntentRecord::charge(payment.id, next, now_ms))
                .into_iter()
                .collect();
            Ok(Applied::Step(Box::new(Movement {
                new_status,
                postings: vec![posting],
                events,
                charge_paid: Some((charge.id.clone(), now_ms)),
                webhook: hook,
                new_intents,
                now_ms,
                ..Movement::default()
            })))
        }
        NoticeKind::RefundDone => {
            let Some(refund) = book.refunds.iter().find(|r| Some(&r.id) == notice.client_code.as_ref()) else {
                return Ok(set_aside(webhook, "ignored", "a reversal we did not ask for", now_ms));
            };
            if refund.status != RefundStatus::Requested {
                return Ok(set_aside(webhook, "ignored", "refund already completed", now_ms));
            }
            let posting = Posting::transfer(
                Some(payment.id),
                "refund_paid",
                Account::PatientRefunds,
                Account::GatewayClearing,
                Money::from_centavos(refund.amount_centavos),
            )
            .map_err(ledger)?;
            Ok(Applied::Step(Box::new(Movement {
                postings: vec![posting],
                refund_completed: Some((refund.id.clone(), notice.reversal_id.clone(), now_ms)),
                webhook: hook,
                events: vec![event(
                    "payment.refund_completed",
                    book.event_data(
                        view,
                        payment,
                        None,
                        json!({"refund_id": refund.id, "amount_centavos": refund.amount_centavos}),
                    ),
                )],
                now_ms,
                ..Movement::default()
            })))
        }
        NoticeKind::Chargeback | NoticeKind::Med => {
            match (charge.status, charge.paid_at_ms) {
                (ChargeStatus::Paid, _) => {}
                // No money recorded for it yet: after its payment.
                (_, None) => return Ok(Applied::Wait),
                // Money that was not ours to collect came for it and is in suspense: what the
                // bank takes back leaves suspense, with a case.
                (ChargeStatus::Active | ChargeStatus::Cancelled, Some(_)) => {
                    let mut movement = Movement { webhook: hook, now_ms, ..Movement::default() };
                    let note = format!("taken back {} centavos of a cancelled charge", notice.amount_centavos);
                    suspend(
                        book,
                        view,
                        &mut movement,
                        Account::Suspense,
                        Account::GatewayClearing,
                        notice.amount_centavos,
                        &note,
                    )?;
                    return Ok(Applied::Step(Box::new(movement)));
                }
            }
            let (kind, source) = if notice.kind == NoticeKind::Med {
                (RefundKind::Med, "med")
            } else {
                (RefundKind::Chargeback, "chargeback")
            };
            let refund_id =
                format!("{kind}-{}", notice.reversal_id.clone().unwrap_or_else(|| webhook.webhook_id.clone()));
            // The bank took the money whatever our state says: what is left of the charge is given
            // back as usual, anything beyond it (after a partial refund, say) goes to suspense.
            let taken = notice.amount_centavos.min(charge.amount_centavos - book.refunded_of(&charge)).max(0);
            let mut movement = match taken {
                0 => Movement { now_ms, ..Movement::default() },
                _ => {
                    take_back(book, &book.payment, &book.refunds, &charge, taken, kind, &refund_id, true, now_ms, view)?
                        .ok_or_else(|| broken(format!("{taken} centavos of charge {} not taken back", charge.id)))?
                }
            };
            let excess = notice.amount_centavos - taken;
            if excess > 0 {
                let note = format!(
                    "{kind} of {} centavos, {excess} beyond what was left of the charge",
                    notice.amount_centavos
                );
                suspend(book, view, &mut movement, Account::Suspense, Account::GatewayClearing, excess, &note)?;
            }
            movement.webhook = hook;
            movement.label = Some((true, source, format!("{kind} of {} centavos", notice.amount_centavos)));
            Ok(Applied::Step(Box::new(movement)))
        }
    }
}

/// Adds to `movement` the posting of `amount` between suspense and the gateway's clearing account
/// (`debit` gets it), the event that tells the provider and a case for a person.
fn suspend(
    book: &Book,
    view: &View,
    movement: &mut Movement,
    debit: Account,
    credit: Account,
    amount: i64,
    note: &str,
) -> Result<(), Fault> {
    let payment = &book.payment;
    let kind = if credit == Account::Suspense { "unexpected_in" } else { "unexpected_out" };
    movement
        .postings
        .push(Posting::transfer(Some(payment.id), kind, debit, credit, Money::from_centavos(amount)).map_err(ledger)?);
    movement.case = Some("unexpected_money");
    let direction = if credit == Account::Suspense { "received" } else { "taken" };
    movement.events.push(event(
        "payment.unexpected_money",
        book.event_data(view, payment, None, json!({"unexpected": {direction: amount, "note": note}})),
    ));
    Ok(())
}

// ---- refunds --------------------------------------------------------------------------------

/// The movement that gives `amount` of `charge` back (after `refunds`): the provider's and the
/// platform's parts in proportion, from escrow while any is held. `settled`: the money already
/// left (a chargeback), so the refund is completed at once.
#[allow(clippy::too_many_arguments)]
fn take_back(
    book: &Book,
    shown: &PaymentRecord,
    refunds: &[RefundRecord],
    charge: &ChargeRecord,
    amount: i64,
    kind: RefundKind,
    refund_id: &str,
    settled: bool,
    now_ms: i64,
    view: &View,
) -> Result<Option<Movement>, Fault> {
    let payment = &book.payment;
    let before: i64 = refunds.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum();
    if amount <= 0 || before + amount > charge.amount_centavos {
        return Ok(None);
    }
    let split = split_of(payment, charge.amount_centavos)?;
    // From the escrow while any of it is held (whatever the status says: a partial refund leaves
    // the rest held), else from what the provider has available.
    let held = book.escrow_held_centavos() > 0;
    let mut postings = vec![
        refund_posting(
            payment.id,
            payment.provider_id,
            split,
            Money::from_centavos(before),
            Money::from_centavos(amount),
            held,
        )
        .map_err(ledger)?,
    ];
    if settled {
        postings.push(
            Posting::transfer(
                Some(payment.id),
                "refund_paid",
                Account::PatientRefunds,
                Account::GatewayClearing,
                Money::from_centavos(amount),
            )
            .map_err(ledger)?,
        );
    }
    let refund = RefundRecord {
        id: refund_id.to_owned(),
        payment_id: payment.id,
        charge_id: charge.id.clone(),
        kind,
        amount_centavos: amount,
        reason: kind.as_str().to_owned(),
        status: if settled { RefundStatus::Completed } else { RefundStatus::Requested },
        gateway_id: None,
        created_at_ms: now_ms,
        completed_at_ms: settled.then_some(now_ms),
    };
    // Everything paid so far given back: refunded (charged back for a dispute); else partly.
    let returned: i64 = refunds.iter().map(|r| r.amount_centavos).sum::<i64>() + amount;
    let to = match (returned >= book.paid_centavos(), kind) {
        (true, RefundKind::Chargeback | RefundKind::Med) => PaymentStatus::ChargedBack,
        (true, _) => PaymentStatus::Refunded,
        (false, _) => PaymentStatus::PartiallyRefunded,
    };
    shown.status.transition(to).map_err(broken)?;
    // Nothing left to pay for: the installments not yet paid are no longer charged.
    let ended = matches!(to, PaymentStatus::Refunded | PaymentStatus::ChargedBack);
    let data = book.event_data(
        view,
        &PaymentRecord { status: to, ..shown.clone() },
        None,
        json!({"refund": {"id": refund.id, "kind": kind, "amount_centavos": amount}}),
    );
    Ok(Some(Movement {
        new_status: Some(to),
        postings,
        new_refunds: vec![refund],
        events: vec![event(event_type(to), data)],
        charges_cancelled: ended,
        now_ms,
        ..Movement::default()
    }))
}

/// What a refund request comes to.
#[derive(Debug, Clone)]
pub enum RefundPlan {
    /// The key's refund exists already: its pieces, as they were made.
    Made(Vec<RefundRecord>),
    /// Commit this; its refunds are then owed (see [`owed`]).
    New(Box<Movement>),
}

/// Refunds `amount` of what the patient paid (newest charge first, one piece per charge, all in
/// one commit). `key` (the caller's idempotency key, hashed with its scope) names the refund's
/// rows: the same request again finds them; any other amount or reason under it is refused.
pub fn refund(
    book: &Book,
    amount: i64,
    kind: RefundKind,
    reason: &str,
    key: &str,
    now_ms: i64,
    view: &View,
) -> Result<RefundPlan, Fault> {
    let payment = &book.payment;
    if amount <= 0 {
        return Err(refused("invalid_amount", "amount_centavos must be a positive number of centavos"));
    }
    let prefix = format!("{key}-");
    let earlier: Vec<RefundRecord> = book.refunds.iter().filter(|r| r.id.starts_with(&prefix)).cloned().collect();
    if !earlier.is_empty() {
        let done: i64 = earlier.iter().map(|r| r.amount_centavos).sum();
        if done == amount && earlier.iter().all(|r| r.reason == reason) {
            return Ok(RefundPlan::Made(earlier));
        }
        return Err(key_reused());
    }
    if !matches!(
        payment.status,
        PaymentStatus::Paid | PaymentStatus::HeldInEscrow | PaymentStatus::Released | PaymentStatus::PartiallyRefunded
    ) {
        return Err(refused(
            "payment_not_refundable",
            format!("a payment that is {} has nothing to refund", payment.status),
        ));
    }
    let paid = || book.charges.iter().filter(|c| c.status == ChargeStatus::Paid);
    let refundable: i64 = paid().map(|charge| charge.amount_centavos - book.refunded_of(charge)).sum();
    if amount > refundable {
        return Err(refused(
            "refund_exceeds_paid",
            format!("{amount} centavos asked, {refundable} centavos paid and not yet refunded"),
        ));
    }
    let mut left = amount;
    let mut shown = payment.clone();
    let mut so_far = book.refunds.clone();
    let mut whole = Movement { now_ms, ..Movement::default() };
    for charge in paid().rev() {
        let piece = left.min(
            charge.amount_centavos
                - so_far.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum::<i64>(),
        );
        if piece <= 0 {
            continue;
        }
        let refund_id = format!("{key}-{}", whole.new_refunds.len() + 1);
        let Some(mut movement) =
            take_back(book, &shown, &so_far, charge, piece, kind, &refund_id, false, now_ms, view)?
        else {
            break;
        };
        for refund in &mut movement.new_refunds {
            refund.reason = reason.to_owned();
        }
        so_far.extend(movement.new_refunds.iter().cloned());
        shown.status = movement.new_status.unwrap_or(shown.status);
        whole.new_status = movement.new_status;
        whole.charges_cancelled |= movement.charges_cancelled;
        whole.postings.extend(movement.postings);
        whole.new_refunds.extend(movement.new_refunds);
        whole.events.extend(movement.events);
        left -= piece;
        if left == 0 {
            break;
        }
    }
    if left != 0 {
        return Err(broken(format!("{left} centavos of a refund of {amount} found no charge")));
    }
    Ok(RefundPlan::New(Box::new(whole)))
}

pub fn key_reused() -> Fault {
    refused("idempotency_key_reused", "this Idempotency-Key was used for another refund")
}

// ---- the procedure, disputes and reviews ----------------------------------------------------

/// The provider says the procedure happened (the escrow is released: status, posting and the
/// release intent in one commit, Celcoin told after it) or was cancelled (everything refunded).
pub fn procedure(book: &Book, performed: bool, now_ms: i64, view: &View) -> Result<Movement, Fault> {
    let payment = &book.payment;
    // Held in escrow, or partly refunded with the rest still held.
    let held_now = payment.status == PaymentStatus::HeldInEscrow
        || (payment.status == PaymentStatus::PartiallyRefunded && book.escrow_held_centavos() > 0);
    if !held_now {
        return Err(refused(
            "payment_not_held",
            format!("only a payment held in escrow awaits its procedure; this one is {}", payment.status),
        ));
    }
    if !performed {
        let key = format!("cancel{}", payment.id.as_uuid().simple());
        let left = book.paid_centavos() - book.returned_centavos();
        return match refund(book, left, RefundKind::Cancellation, "procedure cancelled", &key, now_ms, view)? {
            RefundPlan::New(movement) => Ok(*movement),
            RefundPlan::Made(_) => Ok(Movement { now_ms, ..Movement::default() }),
        };
    }
    let held = book.escrow_held_centavos();
    let mut postings = Vec::new();
    if held > 0 {
        postings.push(release_posting(payment.id, payment.provider_id, Money::from_centavos(held)).map_err(ledger)?);
    }
    let shown = book.with_status(PaymentStatus::Released);
    let data = book.event_data(view, &shown, None, json!({"released_centavos": held}));
    Ok(Movement {
        new_status: Some(PaymentStatus::Released),
        postings,
        events: vec![event(event_type(PaymentStatus::Released), data)],
        new_intents: vec![IntentRecord::release(payment.id, now_ms)],
        now_ms,
        ..Movement::default()
    })
}

/// The patient disputes the payment in a chat: a review case (reason `patient_disputed`) with the
/// conversation, and an event that tells the provider.
pub fn dispute(book: &Book, conversation_id: &str, now_ms: i64, view: &View) -> Movement {
    let reason = json!({"code": "patient_disputed", "message": "the patient does not recognise this payment",
                        "message_pt": "O paciente não reconhece esta cobrança."});
    let data = book.event_data(
        view,
        &book.payment,
        None,
        json!({"review": {"reason": reason, "conversation_id": conversation_id}}),
    );
    Movement {
        review_case: Some(("patient_disputed".to_owned(), Some(conversation_id.to_owned()))),
        events: vec![event("payment.disputed", data)],
        now_ms,
        ..Movement::default()
    }
}

/// What approving a payment in review sets going: the charge (when a gateway moves money) or
/// the contract to sign first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub charging: bool,
    pub contract: bool,
}

/// An analyst closes a review case of this payment, in one commit. Upheld: the suspicion stands —
/// a payment in review is declined, an unpaid one cancelled (its charges with it), a paid one
/// refunded in full; labelled fraud. Rejected: the charge is the patient's — a payment in review is
/// approved and goes on as an approved payment does (its first charge or contract is asked for in
/// the same commit); labelled legitimate.
pub fn close_review(
    book: &Book,
    case_id: &str,
    upheld: bool,
    note: &str,
    approval: Approval,
    now_ms: i64,
    view: &View,
) -> Result<Movement, Fault> {
    let outcome = if upheld { "upheld" } else { "rejected" };
    let payment = &book.payment;
    let paid_status = matches!(
        payment.status,
        PaymentStatus::Paid | PaymentStatus::HeldInEscrow | PaymentStatus::Released | PaymentStatus::PartiallyRefunded
    );
    let left = book.paid_centavos() - book.returned_centavos();
    let mut movement = Movement { now_ms, ..Movement::default() };
    let mut shown = payment.clone();
    if upheld && paid_status && left > 0 {
        let key = format!("review{}", case_id.replace('-', ""));
        if let RefundPlan::New(refunding) =
            refund(book, left, RefundKind::Refund, "disputed charge upheld", &key, now_ms, view)?
        {
            shown.status = refunding.new_status.unwrap_or(shown.status);
            movement = *refunding;
        }
    }
    let ended = match (upheld, payment.status) {
        (true, PaymentStatus::Approved | PaymentStatus::AwaitingPayment) => Some(PaymentStatus::Cancelled),
        (true, PaymentStatus::InReview) => Some(PaymentStatus::Declined),
        (false, PaymentStatus::InReview) => Some(PaymentStatus::Approved),
        _ => None,
    };
    if let Some(to) = ended {
        shown.status = to;
        movement.new_status = Some(to);
        movement.charges_cancelled = to == PaymentStatus::Cancelled;
        if to == PaymentStatus::Approved {
            movement.new_intents.extend(
                opening_intent(&shown, approval.charging, approval.contract)
                    .map(|intent| IntentRecord { created_at_ms: now_ms, ..intent }),
            );
        }
    }
    let data =
        book.event_data(view, &shown, None, json!({"review": {"case_id": case_id, "outcome": outcome, "note": note}}));
    movement.events.push(event("payment.review_closed", data.clone()));
    if let Some(to) = ended {
        movement.events.push(event(event_type(to), data));
    }
    movement.review_closed = Some((case_id.to_owned(), outcome, note.to_owned()));
    movement.label = Some((upheld, "analyst", format!("review case {outcome}: {note}")));
    Ok(movement)
}
