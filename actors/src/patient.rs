//! One actor per active patient: the patient's recent payments in memory (velocity, devices,
//! providers), rebuilt from the store when it starts.

use crate::registry::Entity;
use crate::{Context, CoreError};
use medpay_ml::features::{PatientEvent, PatientHistory, PatientSnapshot, RequestFacts};
use medpay_ml::list_hash;
use medpay_models::{PatientId, PaymentStatus, ProviderId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How far back the session remembers payments.
pub const PATIENT_HISTORY_MS: i64 = 7 * 24 * 60 * 60 * 1_000;

pub enum PatientMsg {
    /// The patient's side of the features of `request`.
    Features {
        request: Box<RequestFacts>,
        reply: RpcReplyPort<PatientSnapshot>,
    },
    /// A payment of this patient was recorded.
    PaymentRecorded(Box<PatientEvent>),
    /// The patient's own payments, newest first, as the chat may tell them: only those with
    /// `scope`'s provider when the conversation is scoped to one.
    OwnPayments {
        scope: Option<ProviderId>,
        reply: RpcReplyPort<Result<Vec<medpay_chatbot::dialogue::PaymentFacts>, CoreError>>,
    },
    IdleCheck,
}

#[derive(Default)]
pub struct PatientSessionActor;

pub struct PatientState {
    id: PatientId,
    context: Arc<Context>,
    history: PatientHistory,
    idle: Duration,
    last_activity: Instant,
}

pub struct PatientArgs {
    id: PatientId,
    context: Arc<Context>,
}

impl Entity for PatientSessionActor {
    type Id = PatientId;
    type Context = Context;
    const KIND: &'static str = "patient";
    /// Patients' sessions (10 s of quiet stops one).
    const LIVE_MAX: usize = 200_000;
    fn arguments(id: PatientId, context: Arc<Context>, _fresh: bool) -> PatientArgs {
        PatientArgs { id, context }
    }
}

impl Actor for PatientSessionActor {
    type Msg = PatientMsg;
    type State = PatientState;
    type Arguments = PatientArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PatientMsg>,
        args: PatientArgs,
    ) -> Result<PatientState, ActorProcessingErr> {
        let since = medpay_store::now_ms() - PATIENT_HISTORY_MS;
        let rows = args.context.store.patient_history(args.id, since).await?;
        let mut history = PatientHistory::new(rows.first_payment_at_ms, rows.providers);
        for payment in rows.recent {
            history.observe(PatientEvent {
                payment_id: payment.id,
                provider_id: payment.provider_id,
                at_ms: payment.created_at_ms,
                amount_centavos: payment.amount_centavos,
                declined: payment.status == PaymentStatus::Declined,
                device_hash: list_hash(&payment.device_id),
                ip_hash: list_hash(&payment.ip),
            });
        }
        let idle = Duration::from_millis(args.context.config.patient_idle_ms.min(args.context.config.idle_ms));
        myself.send_after(idle, || PatientMsg::IdleCheck);
        Ok(PatientState { id: args.id, context: args.context, history, idle, last_activity: Instant::now() })
    }

    async fn handle(
        &self,
        myself: ActorRef<PatientMsg>,
        message: PatientMsg,
        state: &mut PatientState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PatientMsg::Features { request, reply } => {
                state.last_activity = Instant::now();
                let _ = reply.send(state.history.snapshot(&request));
                // Counted from now, not from its commit: a burst of payments in flight at once
                // sees itself. An attempt that never commits stays counted (velocity of attempts).
                state.history.observe(PatientEvent {
                    payment_id: request.payment_id,
                    provider_id: request.provider_id,
                    at_ms: request.at_ms,
                    amount_centavos: request.amount_centavos,
                    declined: false,
                    device_hash: request.device_hash,
                    ip_hash: request.ip_hash,
                });
            }
            PatientMsg::PaymentRecorded(event) => {
                state.last_activity = Instant::now();
                state.history.observe(*event);
            }
            PatientMsg::OwnPayments { scope, reply } => {
                state.last_activity = Instant::now();
                // Read off the mailbox: the features of this patient's next payment do not wait.
                let (store, id) = (state.context.store.clone(), state.id);
                tokio::spawn(async move {
                    let _ = reply.send(own_payments(&store, id, scope).await);
                });
            }
            PatientMsg::IdleCheck => {
                crate::passivate_or_wait(&myself, state.last_activity, state.idle, || PatientMsg::IdleCheck)
            }
        }
        Ok(())
    }
}

/// Payments the chat may show: the patient's latest, newest first.
const CHAT_PAYMENTS_MAX: i64 = 20;

async fn own_payments(
    store: &medpay_store::Store,
    patient: PatientId,
    scope: Option<ProviderId>,
) -> Result<Vec<medpay_chatbot::dialogue::PaymentFacts>, CoreError> {
    use medpay_chatbot::dialogue::{ChargeFacts, PaymentFacts};
    let filter = medpay_store::PaymentFilter {
        patient_id: Some(patient),
        provider_id: scope,
        limit: CHAT_PAYMENTS_MAX,
        ..Default::default()
    };
    let mut facts = Vec::new();
    for listed in store.list_payments(&filter).await? {
        debug_assert!(listed.patient_id == patient && scope.is_none_or(|scope| listed.provider_id == scope));
        // One snapshot per payment: the payment with its installments, decision and current charge.
        let Some((payment, decision, charge)) = store.payment_view(listed.id).await? else { continue };
        let refunds = store.refunds(payment.id).await?;
        facts.push(PaymentFacts {
            id: payment.id.to_string(),
            status: payment.status.as_str().to_owned(),
            amount_centavos: payment.amount_centavos,
            method: payment.method.as_str().to_owned(),
            installments: u32::try_from(payment.installments.len()).unwrap_or(1),
            monthly_interest_bps: u32::try_from(payment.monthly_interest_bps).unwrap_or(0),
            created_on: chrono::DateTime::from_timestamp_millis(payment.created_at_ms)
                .map(|at| at.date_naive())
                .unwrap_or_default(),
            escrow: payment.escrow,
            reasons_pt: decision.map(|d| d.reasons.into_iter().map(|r| r.message_pt).collect()).unwrap_or_default(),
            charge: charge.map(|charge| ChargeFacts {
                installment: charge.installment,
                amount_centavos: charge.amount_centavos,
                status: charge.status.as_str().to_owned(),
                br_code: charge.br_code,
                linha_digitavel: charge.linha_digitavel,
                due_date: charge.due_date,
            }),
            refunded_centavos: refunds.iter().map(|r| r.amount_centavos).sum(),
        });
    }
    Ok(facts)
}
