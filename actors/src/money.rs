//! The shell around a payment's lifecycle (`lifecycle/`), run by its transaction actor (its
//! only writer): it commits each step the lifecycle computes, then performs the effects the book
//! owes — charges, contracts, escrow releases, refunds — under our own ids, and commits their
//! answers. A crash between any two of these leaves a pending intent or a requested refund that
//! the sweep or the client's retry performs again with the same id, so nothing is done twice.

use crate::lifecycle::{self, Applied, Book, Effect, Fault, RefundPlan};
use crate::transaction::TransactionState;
use crate::{Context, CoreError};
use medpay_gateways::celcoin::CelcoinClient;
use medpay_models::{PaymentId, PaymentStatus};
use medpay_store::{
    GatewayWebhook, IntentKind, IntentRecord, Movement, PaymentRecord, RefundKind, RefundRecord, StoreError,
};
use std::sync::Arc;
use std::time::Duration;

pub use crate::lifecycle::CELCOIN;

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
    /// Where contracts are kept, before they go to ClickSign.
    pub documents: Arc<crate::documents::Documents>,
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

impl From<Fault> for MoneyError {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Refused { code, message } => MoneyError::Refused { code, message },
            Fault::Broken(message) => MoneyError::Core(CoreError::Invariant(message)),
        }
    }
}

fn core(fault: Fault) -> CoreError {
    match fault {
        Fault::Refused { code, message } => CoreError::Invariant(format!("{code}: {message}")),
        Fault::Broken(message) => CoreError::Invariant(message),
    }
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

/// The payment's book, or an invariant error when the actor has none yet.
fn book(state: &TransactionState) -> Result<&Book, CoreError> {
    state.book.as_ref().ok_or_else(|| CoreError::Invariant(format!("payment {} has no book", state.id)))
}

fn view(state: &TransactionState) -> crate::Renderer {
    state.context.render.clone()
}

/// Writes a movement (numbering its events, guarded by the status the book holds), applies it to
/// the book, and tells the provider's session and the outbox.
pub(crate) async fn commit(state: &mut TransactionState, mut movement: Movement) -> Result<(), CoreError> {
    let context = state.context.clone();
    if state.stale {
        return Err(CoreError::Unavailable(format!("payment {} is being rebuilt", state.id)));
    }
    let current = book(state)?;
    lifecycle::check(current, &movement).map_err(core)?;
    movement.payment_id = Some(state.id);
    movement.provider_id = Some(current.payment.provider_id);
    movement.expect_status = Some(current.payment.status);
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
    if movement.case == Some("unexpected_money") {
        tracing::warn!(payment_id = %state.id, "money moved unexpectedly: posted to suspense, case opened");
    }
    let Some(held) = state.book.as_mut() else { return Ok(()) };
    lifecycle::apply(held, &movement);
    if !written.is_empty() {
        let _ = context.outbox.send_message(crate::outbox::OutboxMsg::Pump);
        if let Some(provider) = context.providers.live(held.payment.provider_id) {
            let _ = provider.send_message(crate::provider::ProviderMsg::EventsCommitted(Arc::new(written)));
        }
    }
    Ok(())
}

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
    let intent = book(state)?
        .intents
        .iter()
        .find(|intent| intent.kind == IntentKind::Charge && intent.installment == Some(1))
        .cloned();
    if let Some(intent) = intent {
        let budget = state.context.gateways.as_ref().map(|g| Duration::from_millis(g.config.charge_budget_ms));
        if let Some(body) = perform_charge(state, &intent, 1, first.card_token, first.debtor, budget).await? {
            return Ok(body);
        }
    }
    let (movement, body) = lifecycle::answer_without_charge(book(state)?, &*view(state));
    commit(state, movement).await?;
    Ok(body)
}

/// Asks the gateway for the charge a pending intent names (under the intent's id, so asking again
/// after a lost answer finds it instead of charging twice) and records it with the intent done.
/// `budget`: how long a waiting request gives the gateway. Ok(None): not charged now (the gateway
/// failed or was slow; the intent stays pending for the sweep). Ok(Some(body)): the first
/// charge's answer, with the charge.
async fn perform_charge(
    state: &mut TransactionState,
    intent: &IntentRecord,
    number: u32,
    card_token: Option<String>,
    debtor: Option<Debtor>,
    budget: Option<Duration>,
) -> Result<Option<String>, CoreError> {
    let context = state.context.clone();
    let Some(gateways) = context.gateways.clone() else { return Ok(None) };
    if !lifecycle::chargeable(book(state)?, number) {
        // Made already, its answer lost? Then it is recorded (cancelled) before the intent ends.
        let found = match gateways.celcoin.charge_made(&intent.id).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(payment_id = %state.id, intent_id = %intent.id, %error, "charge intent not resolved yet; will retry");
                return Ok(None);
            }
        };
        let now = medpay_store::now_ms();
        let request =
            lifecycle::charge_request(book(state)?, number, (String::new(), String::new()), None, 0).map_err(core)?;
        let held = book(state)?;
        let found = found
            .map(|answer| lifecycle::charge_record(held, &request, answer, number, now))
            .transpose()
            .map_err(core)?;
        tracing::warn!(payment_id = %state.id, intent_id = %intent.id, made = found.is_some(), "charge intent given up: the payment moved on");
        commit(state, lifecycle::charge_given_up(book(state)?, intent, found, now)).await?;
        return Ok(None);
    }
    let debtor = match debtor {
        Some(debtor) => debtor,
        None => {
            let patient = context
                .store
                .patient(book(state)?.payment.patient_id)
                .await?
                .ok_or_else(|| CoreError::Invariant("the payment's patient is gone".into()))?;
            Debtor { name: patient.name, cpf: patient.cpf.as_str().to_owned() }
        }
    };
    let request = lifecycle::charge_request(
        book(state)?,
        number,
        (debtor.name, debtor.cpf),
        card_token,
        gateways.config.pix_expiration_seconds,
    )
    .map_err(core)?;
    let making = gateways.celcoin.create_charge(&request);
    let made = match budget {
        Some(budget) => tokio::time::timeout(budget, making).await.unwrap_or_else(|_| {
            Err(medpay_gateways::celcoin::CelcoinError::Protocol("exceeded its budget".to_owned()))
        }),
        None => making.await,
    };
    let answer = match made {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(payment_id = %state.id, installment = number, %error, "charge not made yet; the sweep will retry");
            return Ok(None);
        }
    };
    let now = medpay_store::now_ms();
    let charge = lifecycle::charge_record(book(state)?, &request, answer, number, now).map_err(core)?;
    let (movement, body) = lifecycle::charge_made(book(state)?, intent, charge, now, &*view(state));
    commit(state, movement).await?;
    tracing::info!(payment_id = %state.id, installment = number, "charge issued");
    Ok(Some(body.unwrap_or_default()))
}

/// Sends the contract a pending intent asks for, and records it with the intent done.
async fn send_contract(state: &mut TransactionState, intent: &IntentRecord) -> Result<(), CoreError> {
    let context = state.context.clone();
    if !lifecycle::contract_wanted(book(state)?) {
        return commit(state, lifecycle::done(intent, medpay_store::now_ms())).await;
    }
    let Some(signer) = context.gateways.as_ref().and_then(|g| g.contracts.clone()) else { return Ok(()) };
    let payment = book(state)?.payment.clone();
    let patient = context
        .store
        .patient(payment.patient_id)
        .await?
        .ok_or_else(|| CoreError::Invariant("the payment's patient is gone".into()))?;
    let provider = context
        .store
        .provider(payment.provider_id)
        .await?
        .ok_or_else(|| CoreError::Invariant("the payment's provider is gone".into()))?;
    let parties = crate::contracts::Parties {
        patient_name: &patient.name,
        cpf_formatted: &patient.cpf.formatted(),
        provider_name: &provider.name,
        provider_cnpj_formatted: &provider.cnpj.formatted(),
    };
    let document = crate::contracts::contract_pdf(&payment, &parties);
    // Kept first: what the patient signs can always be opened again, from the app or by support.
    // Writing it again (a retried intent) writes the same contract.
    if let Some(documents) = context.gateways.as_ref().map(|g| g.documents.clone()) {
        documents
            .put(&crate::documents::contract_key(payment.id), document.clone())
            .await
            .map_err(|error| CoreError::Unavailable(format!("the document store: {error}")))?;
    }
    let request = medpay_gateways::clicksign::ContractRequest {
        name: format!("Parcelamento {}", payment.id),
        filename: format!("contrato-{}.pdf", payment.id),
        document,
        signer_name: patient.name.clone(),
        signer_email: patient.email.clone(),
        signer_cpf: patient.cpf.formatted(),
    };
    let envelope = signer.send_contract(&request).await.map_err(|error| CoreError::Unavailable(error.to_string()))?;
    let movement = lifecycle::contract_sent(book(state)?, intent, &envelope, medpay_store::now_ms(), &*view(state));
    commit(state, movement).await?;
    tracing::info!(payment_id = %payment.id, envelope_id = %envelope, "installment contract sent for signature");
    Ok(())
}

/// Performs everything the book owes, oldest first: pending intents (each answer committed) and
/// refunds not yet paid back (their webhook completes them).
pub(crate) async fn perform_owed(state: &mut TransactionState) -> Result<(), CoreError> {
    let Some(gateways) = state.context.gateways.clone() else { return Ok(()) };
    for effect in lifecycle::owed(book(state)?) {
        match effect {
            Effect::Charge { intent, installment } => {
                perform_charge(state, &intent, installment, None, None, None).await?;
            }
            Effect::Contract { intent } => send_contract(state, &intent).await?,
            Effect::Release { intent, gateway_ids } => {
                for gateway_id in &gateway_ids {
                    gateways
                        .celcoin
                        .release_escrow(gateway_id)
                        .await
                        .map_err(|error| CoreError::Unavailable(format!("Celcoin escrow release: {error}")))?;
                }
                commit(state, lifecycle::done(&intent, medpay_store::now_ms())).await?;
                tracing::info!(payment_id = %state.id, charges = gateway_ids.len(), "escrow released at Celcoin");
            }
            Effect::Refund { refund_id, gateway_id, amount_centavos, reason } => {
                match gateways.celcoin.refund(&gateway_id, &refund_id, amount_centavos, &reason).await {
                    Ok(reversal) => tracing::info!(payment_id = %state.id, %refund_id, %reversal, "refund sent"),
                    Err(error) => {
                        tracing::warn!(payment_id = %state.id, %refund_id, %error, "refund not sent yet; will retry")
                    }
                }
            }
        }
    }
    Ok(())
}

/// Performs what is owed, logging (not returning) what could not be done yet: the sweep retries.
async fn perform_or_log(state: &mut TransactionState) {
    if let Err(error) = perform_owed(state).await {
        tracing::warn!(payment_id = %state.id, %error, "owed effects not performed yet; the sweep will retry");
    }
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
    perform_or_log(state).await;
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

/// Ok(true): applied or set aside for good; Ok(false): has to wait.
async fn apply_webhook(state: &mut TransactionState, webhook: &GatewayWebhook) -> Result<bool, CoreError> {
    let Some(held) = state.book.as_ref() else { return Ok(false) };
    match lifecycle::webhook(held, webhook, medpay_store::now_ms(), &*view(state)).map_err(core)? {
        Applied::Wait => Ok(false),
        Applied::Step(movement) => {
            if let Some((_, _, outcome @ "ignored", note)) = &movement.webhook {
                tracing::warn!(payment_id = %state.id, webhook_id = %webhook.webhook_id, outcome, %note, "webhook not applied");
            }
            let paid = movement.charge_paid.is_some();
            let taken = movement.label.as_ref().is_some_and(|(fraud, _, _)| *fraud);
            commit(state, *movement).await?;
            if paid {
                tracing::info!(payment_id = %state.id, "charge paid");
            }
            if taken {
                tracing::warn!(payment_id = %state.id, "money taken back by the payer's side");
            }
            Ok(true)
        }
    }
}

/// Refunds `amount` of what the patient paid, then asks the gateway to send it back. `key` names
/// the refund: a retry returns the refund made instead of making another. Returns its pieces.
pub(crate) async fn refund(
    state: &mut TransactionState,
    amount: i64,
    kind: RefundKind,
    reason: &str,
    key: &str,
) -> Result<Vec<RefundRecord>, MoneyError> {
    let plan = lifecycle::refund(book(state)?, amount, kind, reason, key, medpay_store::now_ms(), &*view(state))?;
    let made = match plan {
        RefundPlan::Made(made) => made,
        RefundPlan::New(movement) => {
            let made = movement.new_refunds.clone();
            match commit(state, *movement).await {
                Ok(()) => {}
                // The key's refund ids are taken by a refund of another payment.
                Err(CoreError::Store(StoreError::Conflict("refund"))) => return Err(lifecycle::key_reused().into()),
                Err(error) => return Err(error.into()),
            }
            made
        }
    };
    perform_or_log(state).await;
    Ok(made)
}

/// The provider says the procedure happened (release the escrow) or was cancelled (refund all).
pub(crate) async fn procedure(state: &mut TransactionState, performed: bool) -> Result<(), MoneyError> {
    let held = book(state)?.escrow_held_centavos();
    let movement = lifecycle::procedure(book(state)?, performed, medpay_store::now_ms(), &*view(state))?;
    commit(state, movement).await?;
    if performed {
        tracing::info!(payment_id = %state.id, released_centavos = held, "escrow released in the ledger");
    }
    perform_or_log(state).await;
    Ok(())
}

/// The patient disputes the payment in a chat: a review case with the conversation. Disputing
/// twice changes nothing more.
pub(crate) async fn dispute(state: &mut TransactionState, conversation_id: String) -> Result<(), MoneyError> {
    let movement = lifecycle::dispute(book(state)?, &conversation_id, medpay_store::now_ms(), &*view(state));
    match commit(state, movement).await {
        Ok(()) => {
            tracing::warn!(payment_id = %state.id, "payment disputed by its patient; sent to review");
            Ok(())
        }
        Err(CoreError::Store(StoreError::Conflict("review case already open"))) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// An analyst closes a review case of this payment (see `lifecycle::close_review`).
pub(crate) async fn close_review(
    state: &mut TransactionState,
    case_id: String,
    upheld: bool,
    note: String,
    audit: medpay_store::AuditEntry,
) -> Result<(), MoneyError> {
    let current = book(state)?;
    let approval = lifecycle::Approval {
        charging: state.context.gateways.is_some(),
        contract: needs_contract(&state.context, &current.payment),
    };
    let mut movement =
        lifecycle::close_review(current, &case_id, upheld, &note, approval, medpay_store::now_ms(), &*view(state))?;
    movement.label_by = Some(audit.actor.clone());
    movement.audit = Some(audit);
    let outcome = if upheld { "upheld" } else { "rejected" };
    match commit(state, movement).await {
        Ok(()) => tracing::info!(payment_id = %state.id, outcome, "review case closed"),
        Err(CoreError::Store(StoreError::Conflict("refund"))) => return Err(lifecycle::key_reused().into()),
        Err(CoreError::Store(StoreError::Conflict(_))) => {
            return Err(MoneyError::Refused {
                code: "review_case_closed",
                message: "this review case is closed already".to_owned(),
            });
        }
        Err(error) => return Err(error.into()),
    }
    perform_or_log(state).await;
    Ok(())
}

/// A payment its decision sent to review waited longer than its provider's review time limit:
/// the provider's fail mode decides it (open approves, closed declines), as its case says. No
/// label: nobody looked at it.
pub(crate) async fn close_overdue_review(
    state: &mut TransactionState,
    case_id: String,
    fail_mode: medpay_models::FailMode,
    hours: u32,
) -> Result<(), MoneyError> {
    let current = book(state)?;
    if current.payment.status != PaymentStatus::InReview {
        return Ok(());
    }
    let approve = fail_mode == medpay_models::FailMode::Open;
    let approval = lifecycle::Approval {
        charging: state.context.gateways.is_some(),
        contract: needs_contract(&state.context, &current.payment),
    };
    let note = format!("not decided within {hours} h: resolved by the provider's fail mode ({})", fail_mode.as_str());
    let mut movement =
        lifecycle::close_review(current, &case_id, !approve, &note, approval, medpay_store::now_ms(), &*view(state))?;
    movement.label = None;
    match commit(state, movement).await {
        Ok(()) => {
            tracing::warn!(payment_id = %state.id, %case_id, hours, approve, "review not decided in time; the fail mode decided it")
        }
        // Closed meanwhile by an analyst.
        Err(CoreError::Store(StoreError::Conflict(_))) => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    perform_or_log(state).await;
    Ok(())
}

/// A first PIX charge left unpaid past its expiry expires the payment.
async fn expire_if_due(state: &mut TransactionState) -> Result<(), CoreError> {
    let Some(movement) = lifecycle::expire(book(state)?, medpay_store::now_ms(), &*view(state)) else { return Ok(()) };
    commit(state, movement).await?;
    tracing::info!(payment_id = %state.id, "payment expired: its PIX was not paid in time");
    Ok(())
}

/// Everything the sweep asks of a payment: webhooks waiting, charges due or expired, effects owed.
pub(crate) async fn work(state: &mut TransactionState) {
    if state.book.is_none() {
        return;
    }
    if let Err(error) = apply_pending(state).await {
        tracing::warn!(payment_id = %state.id, %error, "pending webhooks not applied");
    }
    if let Err(error) = expire_if_due(state).await {
        tracing::warn!(payment_id = %state.id, %error, "expiry not recorded yet; will retry");
    }
    perform_or_log(state).await;
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
            match context.store.overdue_review_cases(medpay_store::now_ms(), 200).await {
                Ok(cases) => {
                    for (case_id, payment, fail_mode, hours) in cases {
                        if let Ok(actor) = payments.get(payment).await {
                            let _ =
                                actor.send_message(crate::TransactionMsg::ReviewOverdue { case_id, fail_mode, hours });
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "overdue reviews could not be read"),
            }
        }
    });
}
