//! One actor per live payment: the payment's only writer. It drives the state machine, gathers
//! features from the patient's and the provider's sessions, scores within a time budget, records
//! the decision and the events, and tells the sessions.

use crate::lifecycle::{self, Book};
use crate::money::{self, MoneyError};
use crate::patient::PatientMsg;
use crate::provider::{ProviderMsg, ProviderProfile};
use crate::registry::{Entity, ask};
use crate::{Context, CoreError};
use medpay_ml::features::{PatientEvent, RequestFacts, assemble};
use medpay_ml::{Assessment, ListKeys, ProviderPolicy, ScoringInput, list_hash};
use medpay_models::{
    Cpf, FailMode, InstallmentPlan, PatientId, PaymentId, PaymentMethod, PaymentStatus, ProviderId, Reason, TussCode,
};
use medpay_store::{
    DecisionRecord, IdempotencyRecord, IntentKind, NewPaymentWrite, PaymentRecord, RefundKind, RefundRecord,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The score recorded when scoring could not answer: the payment goes to review (fail-open) or is
/// declined (fail-closed), and the number says which.
const FALLBACK_SCORE_OPEN: u16 = 500;
const FALLBACK_SCORE_CLOSED: u16 = 1000;
pub const FALLBACK_MODEL_VERSION: &str = "fallback";
const UNAVAILABLE_PT: &str = "Não foi possível concluir a análise agora; o pagamento segue as regras do prestador.";

/// A validated payment request, ready to be decided.
#[derive(Debug)]
pub struct NewPayment {
    pub id: PaymentId,
    pub provider_id: ProviderId,
    pub patient_id: PatientId,
    pub cpf: Cpf,
    pub tuss_code: TussCode,
    pub description: String,
    pub amount_centavos: i64,
    pub method: PaymentMethod,
    pub monthly_interest_bps: u32,
    pub plan: InstallmentPlan,
    pub device_id: String,
    pub ip: String,
    /// The card gateway's fingerprint of the card, when paid by card.
    pub card_fingerprint: Option<String>,
    pub created_at_ms: i64,
    /// The idempotency key whose answer is written with the payment.
    pub idempotency: Option<IdempotencyTarget>,
    /// The key's in-flight claim: released when the payment's actor is done with the request
    /// (not when its caller stops waiting), so no retry runs beside it.
    pub claim: Option<medpay_store::Claim>,
    /// The provider's fee and escrow choice, fixed for this payment.
    pub fee_bps: u32,
    pub escrow: bool,
    /// The patient's name when the caller has it (the first charge is made out to them without
    /// reading the store on the decision path).
    pub patient_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyTarget {
    pub scope: String,
    pub key: String,
    /// SHA-256 of the canonical request.
    pub request_hash: String,
}

/// A payment that was decided and recorded, with the HTTP body that was stored for it.
#[derive(Debug, Clone)]
pub struct Created {
    pub payment: PaymentRecord,
    pub decision: DecisionRecord,
    pub body: String,
}

pub enum TransactionMsg {
    Decide {
        payment: Box<NewPayment>,
        reply: RpcReplyPort<Result<Created, CoreError>>,
    },
    Get {
        reply: RpcReplyPort<Option<PaymentRecord>>,
    },
    /// A retry of the request that created this payment found its answer unfinished (a crash
    /// between the payment's commit and its first charge's): finish it.
    Resume {
        reply: RpcReplyPort<Result<(), CoreError>>,
    },
    /// Money work the sweep found: charges due, refunds owed, webhooks waiting.
    Work,
    /// A gateway webhook of this payment was recorded: apply it (and what waited for it).
    WebhookRecorded(Box<medpay_store::GatewayWebhook>),
    /// `key` names the refund (an idempotency key hashed with its caller's scope).
    Refund {
        amount_centavos: i64,
        reason: String,
        key: String,
        reply: RpcReplyPort<Result<Vec<RefundRecord>, MoneyError>>,
    },
    /// The patient does not recognise this payment (in the chat `conversation_id`): review it.
    Dispute {
        conversation_id: String,
        reply: RpcReplyPort<Result<(), MoneyError>>,
    },
    /// An analyst closes a review case of this payment (upheld: cancel or refund, label fraud).
    CloseReview {
        case_id: String,
        upheld: bool,
        note: String,
        /// Who decided (the label's author) and what: written in the decision's commit.
        audit: Box<medpay_store::AuditEntry>,
        reply: RpcReplyPort<Result<PaymentRecord, MoneyError>>,
    },
    /// The payment's review case waited longer than its provider allows: its fail mode decides.
    ReviewOverdue {
        case_id: String,
        fail_mode: FailMode,
        hours: u32,
    },
    /// The provider confirms (true) or cancels (false) the procedure of a payment held in escrow.
    Procedure {
        performed: bool,
        reply: RpcReplyPort<Result<PaymentRecord, MoneyError>>,
    },
    IdleCheck,
}

#[derive(Default)]
pub struct TransactionActor;

pub struct TransactionArgs {
    id: PaymentId,
    context: Arc<Context>,
    fresh: bool,
}

pub struct TransactionState {
    pub(crate) id: PaymentId,
    pub(crate) context: Arc<Context>,
    /// The payment, its charges, refunds, contract, escrow and pending intents (the actor is
    /// their only writer); none before the payment is decided.
    pub(crate) book: Option<Book>,
    pub(crate) last_seq: i64,
    /// Some recorded webhook of this payment waits for another (read them from the store again
    /// when the payment moves on).
    pub(crate) webhooks_waiting: bool,
    /// A commit's outcome is unknown (the store failed): the actor stops and is rebuilt.
    pub(crate) stale: bool,
    idle: Duration,
    last_activity: Instant,
}

/// A payment's book and last event number as the store holds them (no book: not decided yet).
async fn rebuild(store: &medpay_store::Store, id: PaymentId) -> Result<(Option<Book>, i64), medpay_store::StoreError> {
    let last_seq = store.last_event_seq(id).await?;
    let Some((payment, decision, _)) = store.payment_view(id).await? else { return Ok((None, last_seq)) };
    let book = Book {
        payment,
        // Its features are for training; the events show the decision without them.
        decision: decision.map(|decision| DecisionRecord { features: serde_json::Value::Null, ..decision }),
        charges: store.charges(id).await?,
        refunds: store.refunds(id).await?,
        intents: store.pending_intents(id).await?,
        contract: store.contract(id).await?,
        escrow_balance_centavos: store.payment_ledger(id).await?.escrow,
        escrow_released: store.escrow_released(id).await?,
    };
    Ok((Some(book), last_seq))
}

impl TransactionState {
    /// The payment as its actor holds it.
    pub(crate) fn payment(&self) -> Option<PaymentRecord> {
        self.book.as_ref().map(|book| book.payment.clone())
    }
}

impl Entity for TransactionActor {
    type Id = PaymentId;
    type Context = Context;
    const KIND: &'static str = "transaction";
    /// Payments in flight (an idle one stops after 2 s).
    const LIVE_MAX: usize = 100_000;
    fn arguments(id: PaymentId, context: Arc<Context>, fresh: bool) -> TransactionArgs {
        TransactionArgs { id, context, fresh }
    }
}

impl Actor for TransactionActor {
    type Msg = TransactionMsg;
    type State = TransactionState;
    type Arguments = TransactionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TransactionMsg>,
        args: TransactionArgs,
    ) -> Result<TransactionState, ActorProcessingErr> {
        // Boxed: the reads' futures would otherwise stay reserved in every idle actor's task.
        let (book, last_seq) =
            if args.fresh { (None, 0) } else { Box::pin(rebuild(&args.context.store, args.id)).await? };
        let idle = Duration::from_millis(args.context.config.payment_rest_ms.min(args.context.config.idle_ms));
        myself.send_after(idle, || TransactionMsg::IdleCheck);
        Ok(TransactionState {
            id: args.id,
            context: args.context,
            book,
            last_seq,
            // A rebuilt payment may have webhooks waiting from before.
            webhooks_waiting: !args.fresh,
            stale: false,
            idle,
            last_activity: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TransactionMsg>,
        message: TransactionMsg,
        state: &mut TransactionState,
    ) -> Result<(), ActorProcessingErr> {
        // Each piece of work is boxed: an actor's task is as large as the largest future it may
        // await, and a hundred thousand idle payments would each carry a charge's worth of it.
        match message {
            TransactionMsg::Decide { mut payment, reply } => {
                state.last_activity = Instant::now();
                let claim = payment.claim.take();
                let result = Box::pin(decide(state, *payment)).await;
                let follow_up = matches!(&result, Ok(created) if created.payment.status == PaymentStatus::Approved);
                let _ = reply.send(result);
                drop(claim);
                if follow_up {
                    // No charge yet: a contract to sign first, or the gateway did not answer in time.
                    Box::pin(money::work(state)).await;
                }
            }
            TransactionMsg::Resume { reply } => {
                state.last_activity = Instant::now();
                let _ = reply.send(Box::pin(resume(state)).await);
            }
            TransactionMsg::Work => {
                state.last_activity = Instant::now();
                Box::pin(money::work(state)).await;
            }
            TransactionMsg::WebhookRecorded(webhook) => {
                state.last_activity = Instant::now();
                Box::pin(money::apply_recorded(state, &webhook)).await;
            }
            TransactionMsg::Refund { amount_centavos, reason, key, reply } => {
                state.last_activity = Instant::now();
                let _ = reply
                    .send(Box::pin(money::refund(state, amount_centavos, RefundKind::Refund, &reason, &key)).await);
            }
            TransactionMsg::Dispute { conversation_id, reply } => {
                state.last_activity = Instant::now();
                let _ = reply.send(Box::pin(money::dispute(state, conversation_id)).await);
            }
            TransactionMsg::CloseReview { case_id, upheld, note, audit, reply } => {
                state.last_activity = Instant::now();
                let result = Box::pin(money::close_review(state, case_id, upheld, note, *audit)).await;
                let _ =
                    reply.send(result.and_then(|()| {
                        state.payment().ok_or(MoneyError::Core(CoreError::Invariant("no payment".into())))
                    }));
            }
            TransactionMsg::ReviewOverdue { case_id, fail_mode, hours } => {
                state.last_activity = Instant::now();
                if let Err(error) = Box::pin(money::close_overdue_review(state, case_id, fail_mode, hours)).await {
                    tracing::warn!(payment_id = %state.id, %error, "overdue review not resolved yet; will retry");
                }
            }
            TransactionMsg::Procedure { performed, reply } => {
                state.last_activity = Instant::now();
                let result = Box::pin(money::procedure(state, performed)).await;
                let _ =
                    reply.send(result.and_then(|()| {
                        state.payment().ok_or(MoneyError::Core(CoreError::Invariant("no payment".into())))
                    }));
            }
            TransactionMsg::Get { reply } => {
                state.last_activity = Instant::now();
                let _ = reply.send(state.payment());
            }
            TransactionMsg::IdleCheck => {
                // At rest when nothing is owed; else it stays for the sweep to drive (or until idle).
                let owed =
                    state.webhooks_waiting || state.book.as_ref().is_some_and(|book| !lifecycle::owed(book).is_empty());
                let idle = Duration::from_millis(state.context.config.idle_ms);
                if owed && state.last_activity.elapsed() < idle {
                    myself.send_after(state.idle, || TransactionMsg::IdleCheck);
                } else {
                    crate::passivate_or_wait(&myself, state.last_activity, state.idle, || TransactionMsg::IdleCheck)
                }
            }
        }
        if state.stale {
            // Its supervisor restarts it from what the store holds.
            return Err(
                format!("payment {}: a commit's outcome is unknown; rebuilding from the store", state.id).into()
            );
        }
        Ok(())
    }
}

fn fallback(mode: FailMode, code: &str, message: &str, message_pt: &str) -> Assessment {
    Assessment {
        outcome: mode.outcome(),
        score: match mode {
            FailMode::Open => FALLBACK_SCORE_OPEN,
            FailMode::Closed => FALLBACK_SCORE_CLOSED,
        },
        reasons: vec![Reason { code: code.to_owned(), message: message.to_owned(), message_pt: message_pt.to_owned() }],
        rules_hit: Vec::new(),
        model_version: FALLBACK_MODEL_VERSION.to_owned(),
        features: None,
        shadow: None,
    }
}

/// Gathers features and scores. Never fails: when anything does not answer in time, the
/// provider's fail mode decides.
async fn assess(context: &Context, request: &NewPayment) -> Assessment {
    let facts = request_facts(request);
    let call_ms = context.config.feature_call_timeout_ms;
    let (patient, provider) = tokio::join!(
        ask(&context.patients, request.patient_id, call_ms, |reply| PatientMsg::Features {
            request: Box::new(facts.clone()),
            reply
        }),
        ask(&context.providers, request.provider_id, call_ms, |reply| ProviderMsg::Profile {
            request: Box::new(facts.clone()),
            reply
        }),
    );
    let fail_mode =
        provider.as_ref().map_or(context.config.default_fail_mode, |profile| profile.record.score_fail_mode);
    let (patient, provider): (_, ProviderProfile) = match (patient, provider) {
        (Ok(patient), Ok(provider)) => (patient, provider),
        (patient, provider) => {
            let error = patient.err().or(provider.err()).map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(payment_id = %request.id, %error, "features unavailable; applying fail mode");
            return fallback(
                fail_mode,
                "features_unavailable",
                "risk features could not be gathered in time",
                UNAVAILABLE_PT,
            );
        }
    };
    let sightings = context.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).patients_24h(&facts);
    let input = ScoringInput {
        payment_id: request.id,
        amount_centavos: request.amount_centavos,
        features: {
            let features = assemble(&facts, &patient, &provider.snapshot, sightings);
            match context.config.scoring_hour {
                Some(hour) => features.at_hour(hour),
                None => features,
            }
        },
        keys: ListKeys {
            cpf_hash: list_hash(request.cpf.as_str()),
            device_hash: facts.device_hash.clone(),
            ip_hash: facts.ip_hash.clone(),
            card_hash: request.card_fingerprint.as_deref().map(list_hash),
            legacy: ListKeys::legacy(
                request.cpf.as_str(),
                &request.device_id,
                &request.ip,
                request.card_fingerprint.as_deref(),
            ),
        },
        policy: ProviderPolicy {
            max_amount_centavos: provider.record.max_amount_centavos,
            review_score_min: provider.record.review_score_min,
            decline_score_min: provider.record.decline_score_min,
        },
    };
    let budget = Duration::from_millis(context.config.score_budget_ms);
    match tokio::time::timeout(budget, context.scorer.score(&input)).await {
        Ok(Ok(assessment)) => assessment,
        Ok(Err(error)) => {
            tracing::warn!(payment_id = %request.id, %error, "scorer failed; applying fail mode");
            fallback(fail_mode, "scorer_unavailable", "the risk scorer is unavailable", UNAVAILABLE_PT)
        }
        Err(_) => {
            tracing::warn!(payment_id = %request.id, budget_ms = budget.as_millis(), "scoring exceeded its budget; applying fail mode");
            metrics::counter!("medpay_score_timeouts_total").increment(1);
            fallback(fail_mode, "score_timeout", "risk scoring did not finish within its time budget", UNAVAILABLE_PT)
        }
    }
}

fn request_facts(request: &NewPayment) -> RequestFacts {
    RequestFacts {
        payment_id: request.id,
        patient_id: request.patient_id,
        provider_id: request.provider_id,
        at_ms: request.created_at_ms,
        amount_centavos: request.amount_centavos,
        installments: u32::try_from(request.plan.installments.len()).unwrap_or(u32::MAX),
        method: request.method,
        tuss_code: request.tuss_code.as_str().to_owned(),
        device_hash: list_hash(&request.device_id),
        ip_hash: list_hash(&request.ip),
    }
}

async fn decide(state: &mut TransactionState, request: NewPayment) -> Result<Created, CoreError> {
    if state.book.is_some() {
        return Err(CoreError::AlreadyExists);
    }
    if request.id != state.id {
        return Err(CoreError::Invariant(format!("payment {} sent to the actor of {}", request.id, state.id)));
    }
    let started = Instant::now();
    let context = state.context.clone();
    let assessment = assess(&context, &request).await;
    let status = PaymentStatus::Requested
        .transition(assessment.outcome.status())
        .map_err(|error| CoreError::Invariant(error.to_string()))?;
    let latency_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    let payment = PaymentRecord {
        id: request.id,
        provider_id: request.provider_id,
        patient_id: request.patient_id,
        tuss_code: request.tuss_code.clone(),
        description: request.description.clone(),
        amount_centavos: request.amount_centavos,
        method: request.method,
        monthly_interest_bps: i64::from(request.monthly_interest_bps),
        total_centavos: request.plan.total_centavos,
        cet_annual_bps: request.plan.cet_annual_bps(),
        status,
        device_id: request.device_id.clone(),
        ip: request.ip.clone(),
        created_at_ms: request.created_at_ms,
        updated_at_ms: request.created_at_ms,
        installments: request.plan.installments.clone(),
        fee_bps: i64::from(request.fee_bps),
        escrow: request.escrow,
    };
    let decision = DecisionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        payment_id: request.id,
        outcome: assessment.outcome,
        score: assessment.score,
        reasons: assessment.reasons,
        rules_hit: assessment.rules_hit,
        model_version: assessment.model_version,
        latency_us,
        created_at_ms: request.created_at_ms,
        features: assessment.features.map_or_else(|| json!({}), |features| features.to_json()),
        shadow: assessment.shadow.map(|shadow| (shadow.model_version, shadow.score)),
    };
    // The effect an approval asks for is written with it and performed only once it is durable:
    // the first charge (before the answer, so that it carries the BR Code or the boleto), or the
    // contract to sign first (after the answer).
    let intent =
        lifecycle::opening_intent(&payment, context.gateways.is_some(), money::needs_contract(&context, &payment));
    let charge_first = intent.as_ref().is_some_and(|intent| intent.kind == IntentKind::Charge);
    let (mut events, body) = lifecycle::opening_events(&*context.render, &payment, &decision);
    for (seq, event) in (state.last_seq + 1..).zip(events.iter_mut()) {
        event.seq = seq;
    }
    let idempotency = request.idempotency.as_ref().map(|target| IdempotencyRecord {
        scope: target.scope.clone(),
        key: target.key.clone(),
        request_hash: target.request_hash.clone(),
        payment_id: payment.id,
        // Completed now unless the answer waits for the first charge.
        response: (!charge_first).then(|| (201, body.clone())),
        now_ms: request.created_at_ms,
    });
    let write = NewPaymentWrite { payment, decision, events, idempotency, intents: intent.into_iter().collect() };
    let committed = context.store.record_new_payment(&write).await?;
    state.last_seq += 2;
    // Its features are for training and for the caller; the events show the decision without them.
    let shown = DecisionRecord { features: serde_json::Value::Null, ..write.decision.clone() };
    state.book = Some(Book::opened(write.payment.clone(), Some(shown), write.intents.clone()));
    announce(&context, &write.payment, write.decision.outcome, committed);
    metrics::counter!("medpay_decisions_total", "outcome" => write.decision.outcome.as_str()).increment(1);
    tracing::info!(
        payment_id = %write.payment.id, provider_id = %write.payment.provider_id, outcome = write.decision.outcome.as_str(),
        score = write.decision.score, rules = ?write.decision.rules_hit, latency_us = write.decision.latency_us,
        "payment decided"
    );
    let body = if charge_first {
        let debtor =
            request.patient_name.clone().map(|name| money::Debtor { name, cpf: request.cpf.as_str().to_owned() });
        let first = money::FirstCharge { card_token: request.card_fingerprint.clone(), debtor };
        money::first_charge(state, first).await?
    } else {
        body
    };
    metrics::histogram!("medpay_decision_seconds").record(started.elapsed().as_secs_f64());
    let payment = state.payment().ok_or_else(|| CoreError::Invariant("no payment after its commit".into()))?;
    Ok(Created { payment, decision: write.decision, body })
}

/// Finishes the answer of the request that created this payment: its first charge, if still owed,
/// then the key completed with the payment as it stands.
async fn resume(state: &mut TransactionState) -> Result<(), CoreError> {
    if state.book.is_none() {
        return Err(CoreError::Invariant(format!("payment {} is not in the store", state.id)));
    }
    money::first_charge(state, money::FirstCharge { card_token: None, debtor: None }).await?;
    Ok(())
}

/// Tells the patient's and the provider's sessions and the device index. A session that is not
/// running will read the payment from the store when it starts, so a lost notice loses nothing.
fn announce(
    context: &Context,
    payment: &PaymentRecord,
    outcome: medpay_models::DecisionOutcome,
    events: Vec<medpay_store::EventRecord>,
) {
    let _ = context.outbox.send_message(crate::outbox::OutboxMsg::Pump);
    let (device_hash, ip_hash) = (list_hash(&payment.device_id), list_hash(&payment.ip));
    context.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).observe(
        &device_hash,
        &ip_hash,
        payment.created_at_ms,
        payment.patient_id,
    );
    if let Some(patient) = context.patients.live(payment.patient_id) {
        let _ = patient.send_message(PatientMsg::PaymentRecorded(Box::new(PatientEvent {
            payment_id: payment.id,
            provider_id: payment.provider_id,
            at_ms: payment.created_at_ms,
            amount_centavos: payment.amount_centavos,
            declined: payment.status == PaymentStatus::Declined,
            device_hash,
            ip_hash,
        })));
    }
    if let Some(provider) = context.providers.live(payment.provider_id) {
        let _ = provider.send_message(ProviderMsg::EventsCommitted(std::sync::Arc::new(events)));
        let _ = provider.send_message(ProviderMsg::PaymentRecorded {
            tuss_code: payment.tuss_code.as_str().to_owned(),
            amount_centavos: payment.amount_centavos,
            at_ms: payment.created_at_ms,
            outcome,
        });
    }
}
