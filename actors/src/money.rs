//! A payment's money, driven by its transaction actor (its only writer): the gateway charge of
//! each installment, the webhooks that say it was paid, the escrow and its release when the
//! procedure is confirmed, refunds, chargebacks and MED claims. Every step is one store
//! transaction (status, ledger postings, charge or refund rows, events); gateway calls are made
//! outside it with ids of ours, so a step retried after a crash finds the gateway's side already
//! done instead of doing it twice.

use crate::transaction::{TransactionState, event_type};
use crate::{Context, CoreError};
use medpay_gateways::celcoin::{CelcoinClient, ChargeMethod, ChargeRequest, NoticeKind, SplitPart, parse_notice};
use medpay_models::{
    Account, BasisPoints, Money, PaymentId, PaymentMethod, PaymentStatus, Posting, Split, charge_posting,
    refund_posting, release_posting,
};
use medpay_store::{
    ChargeRecord, GatewayWebhook, IdempotencyCompletion, IntentKind, IntentRecord, Movement, NewEvent, PaymentRecord,
    RefundRecord, StoreError,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const CELCOIN: &str = "celcoin";

#[derive(Debug, Clone)]
pub struct MoneyConfig {
    /// How long the decision waits for the first charge before answering without it (the sweep
    /// makes it later).
    pub charge_budget_ms: u64,
    /// How often payments with money work left are looked for.
    pub sweep_ms: u64,
    /// Installment plans of at least this amount need a signed contract before the first charge.
    pub contract_min_centavos: i64,
    /// How long an immediate PIX charge stays payable; an unpaid one then expires the payment.
    pub pix_expiration_seconds: i64,
}

impl Default for MoneyConfig {
    fn default() -> Self {
        MoneyConfig {
            charge_budget_ms: 1_500,
            sweep_ms: 5_000,
            contract_min_centavos: 300_000,
            pix_expiration_seconds: medpay_gateways::celcoin::PIX_EXPIRATION_SECONDS,
        }
    }
}

/// The gateways a runtime moves money through.
#[derive(Clone)]
pub struct Gateways {
    pub celcoin: Arc<CelcoinClient>,
    pub contracts: Option<Arc<medpay_gateways::clicksign::ClickSignClient>>,
    pub config: MoneyConfig,
}

/// Why a money request was refused; each has a stable code at the edge.
#[derive(Debug, thiserror::Error)]
pub enum MoneyError {
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<StoreError> for MoneyError {
    fn from(error: StoreError) -> Self {
        MoneyError::Core(CoreError::Store(error))
    }
}

fn refused(code: &'static str, message: impl Into<String>) -> MoneyError {
    MoneyError::Refused { code, message: message.into() }
}

fn key_reused() -> MoneyError {
    refused("idempotency_key_reused", "this Idempotency-Key was used for another refund")
}

fn gateway_method(method: PaymentMethod) -> ChargeMethod {
    match method {
        PaymentMethod::Pix => ChargeMethod::Pix,
        PaymentMethod::Boleto => ChargeMethod::Boleto,
        PaymentMethod::Card => ChargeMethod::Card,
    }
}

fn split_of(payment: &PaymentRecord, amount_centavos: i64) -> Result<Split, CoreError> {
    // A fee outside 0..=10 000 bps is a corrupt row, never a 0 % fee.
    let fee =
        u32::try_from(payment.fee_bps).ok().filter(|bps| *bps <= 10_000).map(BasisPoints).ok_or_else(|| {
            CoreError::Invariant(format!("payment {} has a fee of {} bps", payment.id, payment.fee_bps))
        })?;
    Split::of(Money::from_centavos(amount_centavos), fee).map_err(|error| CoreError::Invariant(error.to_string()))
}

fn ledger(error: medpay_models::LedgerError) -> CoreError {
    CoreError::Invariant(format!("ledger: {error}"))
}

/// Whether this payment needs a signed contract before its first charge.
pub(crate) fn needs_contract(context: &Context, payment: &PaymentRecord) -> bool {
    context.gateways.as_ref().is_some_and(|gateways| {
        gateways.contracts.is_some()
            && payment.installments.len() > 1
            && payment.amount_centavos >= gateways.config.contract_min_centavos
    })
}

/// Who pays a charge: the patient's name and CPF (digits).
pub(crate) struct Debtor {
    pub name: String,
    pub cpf: String,
}

/// Asks the gateway for the charge of installment `number`. `debtor` is read from the store when
/// the caller does not have it at hand.
pub(crate) async fn make_charge(
    context: &Context,
    payment: &PaymentRecord,
    number: u32,
    card_token: Option<String>,
    debtor: Option<Debtor>,
) -> Result<ChargeRecord, String> {
    let gateways = context.gateways.as_ref().ok_or("no gateway configured")?;
    let installment =
        payment.installments.iter().find(|i| i.number == number).ok_or_else(|| format!("no installment {number}"))?;
    let debtor = match debtor {
        Some(debtor) => debtor,
        None => {
            let patient = context
                .store
                .patient(payment.patient_id)
                .await
                .map_err(|error| error.to_string())?
                .ok_or("the payment's patient is gone")?;
            Debtor { name: patient.name, cpf: patient.cpf.as_str().to_owned() }
        }
    };
    let split = split_of(payment, installment.amount_centavos).map_err(|error| error.to_string())?;
    let method = gateway_method(payment.method);
    // A single PIX payment is an immediate charge; installments and boletos have due dates.
    let due_date = (method != ChargeMethod::Pix || payment.installments.len() > 1 || number > 1)
        .then(|| installment.due_date.to_string());
    let request = ChargeRequest {
        client_request_id: ChargeRecord::id_for(payment.id, number),
        method,
        amount_centavos: installment.amount_centavos,
        due_date: due_date.clone(),
        debtor_name: debtor.name,
        debtor_cpf: debtor.cpf,
        description: format!("{} (parcela {number}/{})", payment.description, payment.installments.len()),
        split: vec![
            SplitPart {
                account: Account::ProviderAvailable(payment.provider_id).to_string(),
                amount_centavos: split.provider_share.centavos(),
            },
            SplitPart { account: Account::PlatformFees.to_string(), amount_centavos: split.fee.centavos() },
        ]
        .into_iter()
        .filter(|part| part.amount_centavos > 0)
        .collect(),
        escrow: payment.escrow,
        card_token,
        expiration_seconds: Some(gateways.config.pix_expiration_seconds),
    };
    let charge = gateways.celcoin.create_charge(&request).await.map_err(|error| error.to_string())?;
    if charge.amount_centavos != installment.amount_centavos || charge.client_request_id != request.client_request_id {
        return Err(format!("Celcoin returned charge {} of another amount or id", charge.transaction_id));
    }
    let now = medpay_store::now_ms();
    Ok(ChargeRecord {
        id: request.client_request_id,
        payment_id: payment.id,
        installment: number,
        method: payment.method,
        gateway_id: charge.transaction_id,
        amount_centavos: charge.amount_centavos,
        status: "active".to_owned(),
        br_code: charge.emv,
        linha_digitavel: charge.linha_digitavel,
        barcode: charge.barcode,
        due_date: charge.due_date.or(due_date),
        expires_at_ms: charge.expiration_seconds.map(|seconds| now + seconds * 1_000),
        paid_at_ms: None,
        created_at_ms: now,
    })
}

/// The payment as the edge shows it, for an event (its decision is the one the actor holds).
pub(crate) fn payment_event(
    state: &TransactionState,
    payment: &PaymentRecord,
    charge: Option<&ChargeRecord>,
    extra: serde_json::Value,
) -> serde_json::Value {
    let view = (state.context.render)(payment, state.decision.as_ref(), charge);
    let mut data = json!({ "payment": view });
    if let (Some(object), serde_json::Value::Object(more)) = (data.as_object_mut(), extra) {
        object.extend(more);
    }
    data
}

/// Writes a movement and tells the provider's session and the outbox.
pub(crate) async fn commit(state: &mut TransactionState, mut movement: Movement) -> Result<(), CoreError> {
    let context = state.context.clone();
    if state.stale {
        return Err(CoreError::Unavailable(format!("payment {} is being rebuilt", state.id)));
    }
    movement.payment_id = Some(state.id);
    let payment = state.payment.as_ref().ok_or_else(|| CoreError::Invariant("no payment".into()))?;
    movement.provider_id = Some(payment.provider_id);
    movement.expect_status = Some(payment.status);
    if let Some(to) = movement.new_status.filter(|to| *to != payment.status || *to == PaymentStatus::PartiallyRefunded)
    {
        // One step of the machine, or paid-then-held (a first payment into escrow).
        let direct = payment.status.transition(to).is_ok();
        let via_paid =
            payment.status.transition(PaymentStatus::Paid).is_ok() && PaymentStatus::Paid.transition(to).is_ok();
        if !direct && !via_paid {
            return Err(CoreError::Invariant(format!("a payment cannot go from {} to {to}", payment.status)));
        }
    }
    if movement.now_ms == 0 {
        movement.now_ms = medpay_store::now_ms();
    }
    for event in &mut movement.events {
        state.last_seq += 1;
        event.seq = state.last_seq;
    }
    let written = match context.store.apply_movement(&movement).await {
        Ok(written) => written,
        Err(error @ StoreError::Conflict(_)) => {
            // Refused by a guard: nothing was written. Take the numbers back.
            state.last_seq -= i64::try_from(movement.events.len()).unwrap_or(0);
            return Err(error.into());
        }
        Err(error) => {
            // The commit may or may not have happened: the actor is rebuilt from the store.
            tracing::error!(payment_id = %state.id, %error, "commit failed; the payment's actor will be rebuilt");
            state.stale = true;
            return Err(error.into());
        }
    };
    if let (Some(payment), Some(status)) = (state.payment.as_mut(), movement.new_status) {
        payment.status = status;
        payment.updated_at_ms = movement.now_ms;
    }
    remember(state, &movement);
    if movement.intents_abandoned {
        state.intents.clear();
    }
    state.intents.retain(|intent| !movement.intents_done.contains(&intent.id));
    state.intents.extend(movement.new_intents);
    if !written.is_empty() {
        let _ = context.outbox.send_message(crate::outbox::OutboxMsg::Pump);
        if let Some(provider) = state.payment.as_ref().and_then(|p| context.providers.live(p.provider_id)) {
            let _ = provider.send_message(crate::provider::ProviderMsg::EventsCommitted(Arc::new(written)));
        }
    }
    Ok(())
}

/// The charges and refunds of a committed movement, as the actor holds them.
fn remember(state: &mut TransactionState, movement: &Movement) {
    for posting in &movement.postings {
        state.escrow_released |= posting.kind() == "escrow_release";
        for entry in posting.entries() {
            if matches!(entry.account, Account::ProviderEscrow(_)) {
                state.escrow_balance_centavos += entry.amount.centavos();
            }
        }
    }
    if let Some(charge) = &movement.new_charge {
        state.charges.push(charge.clone());
    }
    if let Some((id, at)) = &movement.charge_paid
        && let Some(charge) = state.charges.iter_mut().find(|charge| &charge.id == id)
    {
        charge.status = "paid".to_owned();
        charge.paid_at_ms = Some(*at);
    }
    if movement.charges_cancelled {
        for charge in state.charges.iter_mut().filter(|charge| charge.status == "active") {
            charge.status = "cancelled".to_owned();
        }
    }
    state.refunds.extend(movement.new_refunds.iter().cloned());
    if let Some((id, gateway_id, at)) = &movement.refund_completed
        && let Some(refund) = state.refunds.iter_mut().find(|refund| &refund.id == id)
    {
        refund.status = "completed".to_owned();
        refund.completed_at_ms = Some(*at);
        if gateway_id.is_some() {
            refund.gateway_id = gateway_id.clone();
        }
    }
}

pub(crate) fn event_for(kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent { seq: 0, kind: kind.to_owned(), data }
}

use event_for as event;

/// What the first charge's caller has at hand.
pub(crate) struct FirstCharge {
    pub card_token: Option<String>,
    pub debtor: Option<Debtor>,
}

/// For a request that waits for it: performs the payment's first charge if its intent is pending
/// (giving the gateway the charge budget), and returns the answer of the request that created the
/// payment — with the charge when the gateway answered in time, else without it (the sweep
/// charges later under the same id) — its started idempotency key completed with that answer.
pub(crate) async fn first_charge(state: &mut TransactionState, first: FirstCharge) -> Result<String, CoreError> {
    let intent =
        state.intents.iter().find(|intent| intent.kind == IntentKind::Charge && intent.installment == Some(1)).cloned();
    if let Some(intent) = intent {
        let budget = state.context.gateways.as_ref().map(|g| Duration::from_millis(g.config.charge_budget_ms));
        if let Some(body) = perform_charge(state, &intent, first.card_token, first.debtor, budget).await? {
            return Ok(body);
        }
    }
    let payment = state.payment.clone().ok_or_else(|| CoreError::Invariant("no payment".into()))?;
    let body = (state.context.render)(&payment, state.decision.as_ref(), None).to_string();
    let completion = IdempotencyCompletion { payment_id: payment.id, status: 201, body: body.clone() };
    commit(state, Movement { idempotency: Some(completion), ..Movement::default() }).await?;
    Ok(body)
}

/// Whether the payment is where a charge of installment `number` may be made.
fn chargeable(payment: &PaymentRecord, number: u32) -> bool {
    match number {
        1 => payment.status == PaymentStatus::Approved,
        _ => matches!(payment.status, PaymentStatus::Paid | PaymentStatus::HeldInEscrow | PaymentStatus::Released),
    }
}

/// Asks the gateway for the charge a pending intent names (under the intent's id, so asking again
/// after a lost answer finds it instead of charging twice) and records it with the intent done.
/// `budget`: how long a waiting request gives the gateway. Ok(None): not charged now (the gateway
/// failed or was slow; the intent stays pending for the sweep). Ok(Some(body)): the payment as
/// the answer shows it, with its charge.
pub(crate) async fn perform_charge(
    state: &mut TransactionState,
    intent: &IntentRecord,
    card_token: Option<String>,
    debtor: Option<Debtor>,
    budget: Option<Duration>,
) -> Result<Option<String>, CoreError> {
    let context = state.context.clone();
    let payment = state.payment.clone().ok_or_else(|| CoreError::Invariant("no payment".into()))?;
    let number = intent
        .installment
        .ok_or_else(|| CoreError::Invariant(format!("charge intent {} names no installment", intent.id)))?;
    if !chargeable(&payment, number) {
        tracing::warn!(payment_id = %payment.id, intent_id = %intent.id, status = %payment.status, "charge intent given up: the payment moved on");
        commit(state, Movement { intents_done: vec![intent.id.clone()], ..Movement::default() }).await?;
        return Ok(None);
    }
    let making = make_charge(&context, &payment, number, card_token, debtor);
    let made = match budget {
        Some(budget) => {
            tokio::time::timeout(budget, making).await.unwrap_or_else(|_| Err("exceeded its budget".to_owned()))
        }
        None => making.await,
    };
    let charge = match made {
        Ok(charge) => charge,
        Err(error) => {
            tracing::warn!(payment_id = %payment.id, installment = number, %error, "charge not made yet; the sweep will retry");
            return Ok(None);
        }
    };
    let first = number == 1;
    let mut shown = payment.clone();
    if first {
        shown.status = PaymentStatus::AwaitingPayment;
        shown.updated_at_ms = charge.created_at_ms;
    }
    let view = (context.render)(&shown, state.decision.as_ref(), Some(&charge));
    let body = view.to_string();
    let kind = if first { event_type(PaymentStatus::AwaitingPayment) } else { "payment.installment_due" };
    let movement = Movement {
        new_status: first.then_some(PaymentStatus::AwaitingPayment),
        events: vec![event(kind, json!({"payment": view, "installment": number}))],
        intents_done: vec![intent.id.clone()],
        idempotency: first.then(|| IdempotencyCompletion { payment_id: payment.id, status: 201, body: body.clone() }),
        new_charge: Some(charge),
        now_ms: shown.updated_at_ms.max(medpay_store::now_ms()),
        ..Movement::default()
    };
    commit(state, movement).await?;
    tracing::info!(payment_id = %payment.id, installment = number, "charge issued");
    Ok(Some(body))
}

/// Performs every effect the payment committed and has not performed yet, oldest first.
pub(crate) async fn perform_intents(state: &mut TransactionState) -> Result<(), CoreError> {
    for intent in state.intents.clone() {
        match intent.kind {
            IntentKind::Charge => {
                perform_charge(state, &intent, None, None, None).await?;
            }
            IntentKind::Contract => crate::contracts::send_contract(state, &intent).await?,
        }
    }
    Ok(())
}

/// Applies a webhook just recorded for this payment; when it moved the payment on and others
/// were waiting for it, those are applied too.
pub(crate) async fn apply_recorded(state: &mut TransactionState, webhook: &GatewayWebhook) {
    match apply_webhook(state, webhook).await {
        Ok(true) if state.webhooks_waiting => {
            if let Err(error) = apply_pending(state).await {
                tracing::warn!(payment_id = %state.id, %error, "pending webhooks not applied");
            }
        }
        Ok(true) => {}
        Ok(false) => state.webhooks_waiting = true,
        Err(error) => {
            state.webhooks_waiting = true;
            tracing::warn!(payment_id = %state.id, webhook_id = %webhook.webhook_id, %error, "webhook not applied; will retry");
        }
    }
}

/// Applies the payment's pending webhooks in the order they can be applied: one that has to wait
/// for another (a chargeback before the payment it takes back) stays pending until it can.
pub(crate) async fn apply_pending(state: &mut TransactionState) -> Result<(), CoreError> {
    let context = state.context.clone();
    loop {
        let pending = context.store.pending_webhooks(state.id).await?;
        let mut progressed = false;
        let mut waiting = false;
        for webhook in pending {
            match apply_webhook(state, &webhook).await {
                Ok(true) => progressed = true,
                Ok(false) => waiting = true,
                Err(error) => {
                    waiting = true;
                    tracing::warn!(payment_id = %state.id, webhook_id = %webhook.webhook_id, %error, "webhook not applied; will retry");
                }
            }
        }
        if !progressed {
            state.webhooks_waiting = waiting;
            return Ok(());
        }
    }
}

async fn mark_webhook(
    state: &mut TransactionState,
    webhook: &GatewayWebhook,
    outcome: &'static str,
    note: String,
) -> Result<bool, CoreError> {
    tracing::warn!(payment_id = %state.id, webhook_id = %webhook.webhook_id, outcome, %note, "webhook not applied");
    let movement = Movement {
        webhook: Some((webhook.gateway.clone(), webhook.webhook_id.clone(), outcome, note)),
        ..Movement::default()
    };
    commit(state, movement).await?;
    Ok(true)
}

/// Ok(true): applied or set aside for good; Ok(false): has to wait.
async fn apply_webhook(state: &mut TransactionState, webhook: &GatewayWebhook) -> Result<bool, CoreError> {
    if webhook.gateway == crate::contracts::CLICKSIGN {
        return crate::contracts::apply(state, webhook).await;
    }
    let Some(payment) = state.payment.clone() else { return Ok(false) };
    let notice = match parse_notice(webhook.body.as_bytes()) {
        Ok(notice) => notice,
        Err(error) => return mark_webhook(state, webhook, "ignored", error).await,
    };
    // The actor holds every charge of its payment: one it does not know is another payment's,
    // or its own charge's commit has not happened yet (a card captured as it was made).
    let Some(charge) = state.charges.iter().find(|c| c.gateway_id == notice.charge_transaction_id).cloned() else {
        return Ok(false);
    };
    if charge.payment_id != payment.id {
        return mark_webhook(state, webhook, "ignored", "charge of another payment".into()).await;
    }
    let hook = Some((webhook.gateway.clone(), webhook.webhook_id.clone(), "applied", String::new()));
    match notice.kind {
        NoticeKind::Paid => {
            let unexpected = match (charge.status.as_str(), notice.amount_centavos == charge.amount_centavos) {
                ("active", true) => None,
                ("active", false) => {
                    Some(format!("paid {} centavos for a charge of {}", notice.amount_centavos, charge.amount_centavos))
                }
                (status, _) => Some(format!("paid {} centavos for a charge already {status}", notice.amount_centavos)),
            };
            if let Some(note) = unexpected {
                // The money arrived: kept in suspense with a case, never dropped.
                let mut movement = Movement { webhook: hook, ..Movement::default() };
                let amount = notice.amount_centavos;
                if amount > 0 {
                    suspend(
                        state,
                        &mut movement,
                        &payment,
                        Account::GatewayClearing,
                        Account::Suspense,
                        amount,
                        &note,
                    )?;
                }
                commit(state, movement).await?;
                return Ok(true);
            }
            let first = payment.status == PaymentStatus::AwaitingPayment;
            // Into escrow until the procedure releases it (a later installment too, while the
            // escrow was not released).
            let held = payment.escrow && !state.escrow_released;
            let split = split_of(&payment, charge.amount_centavos)?;
            let posting = charge_posting(payment.id, payment.provider_id, split, held).map_err(ledger)?;
            let mut shown = payment.clone();
            let mut events = Vec::new();
            let new_status = if first {
                shown.status = PaymentStatus::Paid;
                events.push(event(
                    event_type(PaymentStatus::Paid),
                    payment_event(state, &shown, Some(&charge), json!({"installment": charge.installment})),
                ));
                if held {
                    shown.status = PaymentStatus::HeldInEscrow;
                    events.push(event(
                        event_type(PaymentStatus::HeldInEscrow),
                        payment_event(
                            state,
                            &shown,
                            Some(&charge),
                            json!({"held_centavos": split.provider_share.centavos()}),
                        ),
                    ));
                }
                Some(shown.status)
            } else {
                events.push(event(
                    "payment.installment_paid",
                    payment_event(state, &shown, Some(&charge), json!({"installment": charge.installment})),
                ));
                None
            };
            let now = medpay_store::now_ms();
            // The next installment's charge is asked for in the same commit that records this one paid.
            let next = charge.installment + 1;
            let new_intents = payment
                .installments
                .iter()
                .any(|installment| installment.number == next)
                .then(|| IntentRecord::charge(payment.id, next, now))
                .into_iter()
                .collect();
            let movement = Movement {
                new_status,
                postings: vec![posting],
                events,
                charge_paid: Some((charge.id.clone(), now)),
                webhook: hook,
                new_intents,
                now_ms: now,
                ..Movement::default()
            };
            commit(state, movement).await?;
            tracing::info!(payment_id = %payment.id, installment = charge.installment, amount_centavos = charge.amount_centavos, held, "charge paid");
            if let Err(error) = perform_intents(state).await {
                tracing::warn!(payment_id = %payment.id, %error, "next charge not made yet; the sweep will retry");
            }
            Ok(true)
        }
        NoticeKind::RefundDone => {
            let refunds = state.refunds.clone();
            let Some(refund) = refunds.iter().find(|r| Some(&r.id) == notice.client_code.as_ref()) else {
                return mark_webhook(state, webhook, "ignored", "a reversal we did not ask for".into()).await;
            };
            if refund.status != "requested" {
                return mark_webhook(state, webhook, "ignored", "refund already completed".into()).await;
            }
            let posting = Posting::transfer(
                Some(payment.id),
                "refund_paid",
                Account::PatientRefunds,
                Account::GatewayClearing,
                Money::from_centavos(refund.amount_centavos),
            )
            .map_err(ledger)?;
            let movement = Movement {
                postings: vec![posting],
                refund_completed: Some((refund.id.clone(), notice.reversal_id.clone(), medpay_store::now_ms())),
                webhook: hook,
                events: vec![event(
                    "payment.refund_completed",
                    payment_event(
                        state,
                        &payment,
                        None,
                        json!({"refund_id": refund.id, "amount_centavos": refund.amount_centavos}),
                    ),
                )],
                ..Movement::default()
            };
            commit(state, movement).await?;
            Ok(true)
        }
        NoticeKind::Chargeback | NoticeKind::Med => {
            if charge.status != "paid" {
                return Ok(false);
            }
            let (kind, source) =
                if notice.kind == NoticeKind::Med { ("med", "med") } else { ("chargeback", "chargeback") };
            let refund_id =
                format!("{kind}-{}", notice.reversal_id.clone().unwrap_or_else(|| webhook.webhook_id.clone()));
            if notice.amount_centavos <= 0 {
                return mark_webhook(state, webhook, "ignored", "a take-back of no money".into()).await;
            }
            // The bank took the money whatever our state says: what is left of the charge is given
            // back as usual, anything beyond it (after a partial refund, say) goes to suspense.
            let refunds = state.refunds.clone();
            let before: i64 = refunds.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum();
            let taken = notice.amount_centavos.min(charge.amount_centavos - before).max(0);
            let mut movement = match taken {
                0 => Movement::default(),
                _ => take_back(state, &payment, &refunds, &charge, taken, kind, &refund_id, true).await?.ok_or_else(
                    || CoreError::Invariant(format!("{taken} centavos of charge {} not taken back", charge.id)),
                )?,
            };
            let excess = notice.amount_centavos - taken;
            if excess > 0 {
                let note = format!(
                    "{kind} of {} centavos, {excess} beyond what was left of the charge",
                    notice.amount_centavos
                );
                suspend(state, &mut movement, &payment, Account::Suspense, Account::GatewayClearing, excess, &note)?;
            }
            movement.webhook = hook;
            movement.label = Some((true, source, format!("{kind} of {} centavos", notice.amount_centavos)));
            commit(state, movement).await?;
            tracing::warn!(payment_id = %payment.id, kind, amount_centavos = notice.amount_centavos, "money taken back by the payer's side");
            Ok(true)
        }
    }
}

/// Adds to `movement` the posting of `amount` between suspense and the gateway's clearing account
/// (`debit` gets it), the event that tells the provider and a case for a person.
fn suspend(
    state: &TransactionState,
    movement: &mut Movement,
    payment: &PaymentRecord,
    debit: Account,
    credit: Account,
    amount: i64,
    note: &str,
) -> Result<(), CoreError> {
    let kind = if credit == Account::Suspense { "unexpected_in" } else { "unexpected_out" };
    movement
        .postings
        .push(Posting::transfer(Some(payment.id), kind, debit, credit, Money::from_centavos(amount)).map_err(ledger)?);
    movement.case = Some("unexpected_money");
    let direction = if credit == Account::Suspense { "received" } else { "taken" };
    movement.events.push(event(
        "payment.unexpected_money",
        payment_event(state, payment, None, json!({"unexpected": {direction: amount, "note": note}})),
    ));
    tracing::warn!(payment_id = %payment.id, amount_centavos = amount, direction, note, "money moved unexpectedly: in suspense, case opened");
    Ok(())
}

/// The movement that gives `amount` of `charge` back (after `refunds`): the provider's and the platform's parts
/// in proportion, from escrow when still held. `settled`: the money already left (a chargeback),
/// so the refund is completed at once.
#[allow(clippy::too_many_arguments)]
async fn take_back(
    state: &TransactionState,
    payment: &PaymentRecord,
    refunds: &[RefundRecord],
    charge: &ChargeRecord,
    amount: i64,
    kind: &str,
    refund_id: &str,
    settled: bool,
) -> Result<Option<Movement>, CoreError> {
    let before: i64 = refunds.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum();
    if amount <= 0 || before + amount > charge.amount_centavos {
        return Ok(None);
    }
    let split = split_of(payment, charge.amount_centavos)?;
    // From the escrow while any of it is held (whatever the status says: a partial refund leaves
    // the rest held), else from what the provider has available.
    let held = state.escrow_held_centavos() > 0;
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
    let now = medpay_store::now_ms();
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
        kind: kind.to_owned(),
        amount_centavos: amount,
        reason: kind.to_owned(),
        status: if settled { "completed" } else { "requested" }.to_owned(),
        gateway_id: None,
        created_at_ms: now,
        completed_at_ms: settled.then_some(now),
    };
    // Everything paid so far given back: refunded (charged back for a dispute); else partly.
    let charges = state.charges.clone();
    let paid: i64 = charges.iter().filter(|c| c.status == "paid").map(|c| c.amount_centavos).sum();
    let returned: i64 = refunds.iter().map(|r| r.amount_centavos).sum::<i64>() + amount;
    let to = match (returned >= paid, kind) {
        (true, "chargeback" | "med") => PaymentStatus::ChargedBack,
        (true, _) => PaymentStatus::Refunded,
        (false, _) => PaymentStatus::PartiallyRefunded,
    };
    payment.status.transition(to).map_err(|e| CoreError::Invariant(e.to_string()))?;
    let mut shown = payment.clone();
    shown.status = to;
    let data = payment_event(
        state,
        &shown,
        None,
        json!({"refund": {"id": refund.id, "kind": kind, "amount_centavos": amount}}),
    );
    Ok(Some(Movement {
        new_status: Some(to),
        postings,
        new_refunds: vec![refund],
        events: vec![event(event_type(to), data)],
        now_ms: now,
        ..Movement::default()
    }))
}

/// Refunds `amount` of what the patient paid (newest charge first), then asks the gateway to send
/// it back. `key` (the caller's idempotency key, hashed with its scope) names the refund's rows, so a
/// retry returns the refund made instead of making another, and finishes one a crash cut short.
/// Returns the refunds made under this key.
pub(crate) async fn refund(
    state: &mut TransactionState,
    amount: i64,
    kind: &str,
    reason: &str,
    key: &str,
) -> Result<Vec<RefundRecord>, MoneyError> {
    let payment = state.payment.clone().ok_or(CoreError::Invariant("no payment".into()))?;
    if amount <= 0 {
        return Err(refused("invalid_amount", "amount_centavos must be a positive number of centavos"));
    }
    let refunds = state.refunds.clone();
    let prefix = format!("{key}-");
    let earlier: Vec<RefundRecord> = refunds.iter().filter(|r| r.id.starts_with(&prefix)).cloned().collect();
    let done: i64 = earlier.iter().map(|r| r.amount_centavos).sum();
    // A key names one refund: the same again returns it; any other amount or reason is refused
    // (a refund's pieces are committed together, so there is never half of one to finish).
    if !earlier.is_empty() {
        if done == amount && earlier.iter().all(|r| r.reason == reason) {
            return Ok(earlier);
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
    let charges = state.charges.clone();
    let left_of = |charge: &ChargeRecord| {
        charge.amount_centavos
            - refunds.iter().filter(|r| r.charge_id == charge.id).map(|r| r.amount_centavos).sum::<i64>()
    };
    let refundable: i64 = charges.iter().filter(|c| c.status == "paid").map(left_of).sum();
    let mut left = amount - done;
    if left > refundable {
        return Err(refused(
            "refund_exceeds_paid",
            format!("{left} centavos asked, {refundable} centavos paid and not yet refunded"),
        ));
    }
    // Newest charge first, one piece per charge, all in one commit.
    let mut shown = payment.clone();
    let mut so_far = refunds.clone();
    let mut whole = Movement::default();
    for charge in charges.iter().rev().filter(|c| c.status == "paid") {
        let piece = left.min(left_of(charge));
        if piece <= 0 {
            continue;
        }
        let refund_id = format!("{key}-{}", whole.new_refunds.len() + 1);
        let Some(mut movement) = take_back(state, &shown, &so_far, charge, piece, kind, &refund_id, false).await?
        else {
            break;
        };
        for refund in &mut movement.new_refunds {
            refund.reason = reason.to_owned();
        }
        so_far.extend(movement.new_refunds.iter().cloned());
        shown.status = movement.new_status.unwrap_or(shown.status);
        whole.new_status = movement.new_status;
        whole.now_ms = movement.now_ms;
        whole.postings.extend(movement.postings);
        whole.new_refunds.extend(movement.new_refunds);
        whole.events.extend(movement.events);
        left -= piece;
        if left == 0 {
            break;
        }
    }
    let made = whole.new_refunds.clone();
    match commit(state, whole).await {
        Ok(()) => {}
        // The key's refund ids are taken by a refund of another payment.
        Err(CoreError::Store(StoreError::Conflict("refund"))) => return Err(key_reused()),
        Err(error) => return Err(error.into()),
    }
    send_refunds(state).await;
    Ok(made)
}

/// Asks the gateway to pay back every refund still owed (idempotent by the refund's id).
pub(crate) async fn send_refunds(state: &mut TransactionState) {
    let context = state.context.clone();
    let Some(gateways) = context.gateways.clone() else { return };
    let (refunds, charges) = (state.refunds.clone(), state.charges.clone());
    for refund in refunds.iter().filter(|r| r.status == "requested") {
        let Some(charge) = charges.iter().find(|c| c.id == refund.charge_id) else { continue };
        match gateways.celcoin.refund(&charge.gateway_id, &refund.id, refund.amount_centavos, &refund.reason).await {
            Ok(reversal) => tracing::info!(payment_id = %state.id, refund_id = %refund.id, %reversal, "refund sent"),
            Err(error) => {
                tracing::warn!(payment_id = %state.id, refund_id = %refund.id, %error, "refund not sent yet; will retry")
            }
        }
    }
}

/// The provider says the procedure happened (release the escrow) or was cancelled (refund all).
pub(crate) async fn procedure(state: &mut TransactionState, performed: bool) -> Result<(), MoneyError> {
    let context = state.context.clone();
    let payment = state.payment.clone().ok_or(CoreError::Invariant("no payment".into()))?;
    // Held in escrow, or partly refunded with the rest still held.
    let held_now = payment.status == PaymentStatus::HeldInEscrow
        || (payment.status == PaymentStatus::PartiallyRefunded && state.escrow_held_centavos() > 0);
    if !held_now {
        return Err(refused(
            "payment_not_held",
            format!("only a payment held in escrow awaits its procedure; this one is {}", payment.status),
        ));
    }
    if !performed {
        let charges = state.charges.clone();
        let refunds = state.refunds.clone();
        let paid: i64 = charges.iter().filter(|c| c.status == "paid").map(|c| c.amount_centavos).sum();
        let returned: i64 = refunds.iter().map(|r| r.amount_centavos).sum();
        let key = format!("cancel{}", payment.id.as_uuid().simple());
        refund(state, paid - returned, "cancellation", "procedure cancelled", &key).await?;
        return Ok(());
    }
    let gateways = context.gateways.clone().ok_or_else(|| CoreError::Unavailable("no gateway".into()))?;
    for charge in state.charges.clone().iter().filter(|c| c.status == "paid") {
        gateways
            .celcoin
            .release_escrow(&charge.gateway_id)
            .await
            .map_err(|error| CoreError::Unavailable(format!("Celcoin escrow release: {error}")))?;
    }
    let held = state.escrow_held_centavos();
    let mut postings = Vec::new();
    if held > 0 {
        postings.push(release_posting(payment.id, payment.provider_id, Money::from_centavos(held)).map_err(ledger)?);
    }
    let mut shown = payment.clone();
    shown.status = PaymentStatus::Released;
    let data = payment_event(state, &shown, None, json!({"released_centavos": held}));
    let movement = Movement {
        new_status: Some(PaymentStatus::Released),
        postings,
        events: vec![event(event_type(PaymentStatus::Released), data)],
        ..Movement::default()
    };
    commit(state, movement).await?;
    tracing::info!(payment_id = %payment.id, released_centavos = held, "escrow released");
    Ok(())
}

/// The patient disputes the payment in a chat: a review case (reason `patient_disputed`) with the
/// conversation, and an event that tells the provider. Disputing twice changes nothing more.
pub(crate) async fn dispute(state: &mut TransactionState, conversation_id: String) -> Result<(), MoneyError> {
    let payment = state.payment.clone().ok_or(CoreError::Invariant("no payment".into()))?;
    let reason = json!({"code": "patient_disputed", "message": "the patient does not recognise this payment",
                        "message_pt": "O paciente não reconhece esta cobrança."});
    let data =
        payment_event(state, &payment, None, json!({"review": {"reason": reason, "conversation_id": conversation_id}}));
    let movement = Movement {
        review_case: Some(("patient_disputed".to_owned(), Some(conversation_id))),
        events: vec![event("payment.disputed", data)],
        ..Movement::default()
    };
    match commit(state, movement).await {
        Ok(()) => {
            tracing::warn!(payment_id = %payment.id, "payment disputed by its patient; sent to review");
            Ok(())
        }
        Err(CoreError::Store(StoreError::Conflict("review case already open"))) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// An analyst closes a review case of this payment. Upheld: the charge was not the patient's — an
/// unpaid payment is cancelled, a paid one refunded in full, and it is labelled fraud. Rejected: the
/// charge stands and it is labelled legitimate.
pub(crate) async fn close_review(
    state: &mut TransactionState,
    case_id: String,
    upheld: bool,
    note: String,
) -> Result<(), MoneyError> {
    let payment = state.payment.clone().ok_or(CoreError::Invariant("no payment".into()))?;
    let outcome = if upheld { "upheld" } else { "rejected" };
    let now = medpay_store::now_ms();
    if upheld
        && matches!(
            payment.status,
            PaymentStatus::Paid
                | PaymentStatus::HeldInEscrow
                | PaymentStatus::Released
                | PaymentStatus::PartiallyRefunded
        )
    {
        // Give back what is left first (idempotent under the case's id), then close the case.
        let charges = state.charges.clone();
        let refunds = state.refunds.clone();
        let paid: i64 = charges.iter().filter(|c| c.status == "paid").map(|c| c.amount_centavos).sum();
        let returned: i64 = refunds.iter().map(|r| r.amount_centavos).sum();
        if paid > returned {
            let key = format!("review{}", case_id.replace('-', ""));
            refund(state, paid - returned, "refund", "disputed charge upheld", &key).await?;
        }
    }
    let payment = state.payment.clone().ok_or(CoreError::Invariant("no payment".into()))?;
    let cancel = upheld && matches!(payment.status, PaymentStatus::Approved | PaymentStatus::AwaitingPayment);
    let mut shown = payment.clone();
    if cancel {
        shown.status = PaymentStatus::Cancelled;
    }
    let data =
        payment_event(state, &shown, None, json!({"review": {"case_id": case_id, "outcome": outcome, "note": note}}));
    let mut events = vec![event("payment.review_closed", data.clone())];
    if cancel {
        events.push(event(event_type(PaymentStatus::Cancelled), data));
    }
    let movement = Movement {
        new_status: cancel.then_some(PaymentStatus::Cancelled),
        charges_cancelled: cancel,
        intents_abandoned: cancel,
        review_closed: Some((case_id, outcome, note.clone())),
        label: Some((upheld, "analyst", format!("review case {outcome}: {note}"))),
        events,
        now_ms: now,
        ..Movement::default()
    };
    match commit(state, movement).await {
        Ok(()) => {
            tracing::info!(payment_id = %payment.id, outcome, "review case closed");
            Ok(())
        }
        Err(CoreError::Store(StoreError::Conflict(_))) => {
            Err(refused("review_case_closed", "this review case is closed already"))
        }
        Err(error) => Err(error.into()),
    }
}

/// A first PIX charge left unpaid past its expiry expires the payment (and is no longer payable).
async fn expire_if_due(state: &mut TransactionState) -> Result<(), CoreError> {
    let Some(payment) = state.payment.clone().filter(|p| p.status == PaymentStatus::AwaitingPayment) else {
        return Ok(());
    };
    let now = medpay_store::now_ms();
    let charges = state.charges.clone();
    let expired = charges.iter().any(|c| c.status == "active" && c.expires_at_ms.is_some_and(|at| at <= now));
    if !expired {
        return Ok(());
    }
    let mut shown = payment.clone();
    shown.status = PaymentStatus::Expired;
    let data = payment_event(state, &shown, None, json!({"reason": "pix_expired"}));
    let movement = Movement {
        new_status: Some(PaymentStatus::Expired),
        charges_cancelled: true,
        events: vec![event(event_type(PaymentStatus::Expired), data)],
        now_ms: now,
        ..Movement::default()
    };
    commit(state, movement).await?;
    tracing::info!(payment_id = %payment.id, "payment expired: its PIX was not paid in time");
    Ok(())
}

/// Everything the sweep asks of a payment: webhooks waiting, charges due or expired, refunds owed.
pub(crate) async fn work(state: &mut TransactionState) {
    if let Err(error) = apply_pending(state).await {
        tracing::warn!(payment_id = %state.id, %error, "pending webhooks not applied");
    }
    if let Err(error) = expire_if_due(state).await {
        tracing::warn!(payment_id = %state.id, %error, "expiry not recorded yet; will retry");
    }
    if let Err(error) = perform_intents(state).await {
        tracing::warn!(payment_id = %state.id, %error, "intents not performed yet; will retry");
    }
    send_refunds(state).await;
}

/// Finds payments with money work left and pokes their actors, every `sweep_ms`.
pub(crate) fn spawn_sweep(
    context: Arc<Context>,
    payments: crate::Registry<crate::TransactionActor>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(gateways) = context.gateways.clone() else { return };
    tokio::spawn(async move {
        let mut stop = stop;
        let period = Duration::from_millis(gateways.config.sweep_ms.max(10));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            let older_than = medpay_store::now_ms() - i64::try_from(period.as_millis()).unwrap_or(0);
            let ids: Vec<PaymentId> = match context.store.payments_needing_work(older_than, 500).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::warn!(%error, "money sweep could not read the store");
                    continue;
                }
            };
            for id in ids {
                if let Ok(actor) = payments.get(id).await {
                    let _ = actor.send_message(crate::TransactionMsg::Work);
                }
            }
        }
    });
}
