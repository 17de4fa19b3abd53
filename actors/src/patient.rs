//! One actor per active patient: the patient's recent payments in memory (velocity, devices,
//! providers), rebuilt from the store when it starts.

use crate::Context;
use crate::registry::Entity;
use medpay_ml::features::{PatientEvent, PatientHistory, PatientSnapshot, RequestFacts};
use medpay_ml::list_hash;
use medpay_models::{PatientId, PaymentStatus};
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
    IdleCheck,
}

#[derive(Default)]
pub struct PatientSessionActor;

pub struct PatientState {
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
        let idle = Duration::from_millis(args.context.config.idle_ms);
        myself.send_after(idle, || PatientMsg::IdleCheck);
        Ok(PatientState { history, idle, last_activity: Instant::now() })
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
            }
            PatientMsg::PaymentRecorded(event) => {
                state.last_activity = Instant::now();
                state.history.observe(*event);
            }
            PatientMsg::IdleCheck => {
                crate::passivate_or_wait(&myself, state.last_activity, state.idle, || PatientMsg::IdleCheck)
            }
        }
        Ok(())
    }
}
