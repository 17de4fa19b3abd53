//! One actor per active patient: the patient's recent payments in memory (velocity), rebuilt from
//! the store when it starts.

use crate::Context;
use crate::registry::Entity;
use medpay_ml::PatientFeatures;
use medpay_models::{PatientId, PaymentStatus};
use medpay_store::RecentPayment;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How far back the session remembers payments.
pub const PATIENT_HISTORY_MS: i64 = 7 * 24 * 60 * 60 * 1_000;
/// Most payments the session keeps; older ones are dropped first.
pub const PATIENT_HISTORY_MAX: usize = 1_000;
const HOUR_MS: i64 = 60 * 60 * 1_000;
const DAY_MS: i64 = 24 * HOUR_MS;

pub enum PatientMsg {
    /// What scoring needs of this patient, as of `now_ms`.
    Features {
        now_ms: i64,
        reply: RpcReplyPort<PatientFeatures>,
    },
    /// A payment of this patient was recorded.
    PaymentRecorded(RecentPayment),
    IdleCheck,
}

#[derive(Default)]
pub struct PatientSessionActor;

pub struct PatientState {
    recent: VecDeque<RecentPayment>,
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

impl PatientState {
    fn remember(&mut self, payment: RecentPayment) {
        // A session that started while this payment committed has read it from the store already.
        if self.recent.iter().rev().any(|known| known.id == payment.id) {
            return;
        }
        if self.recent.len() >= PATIENT_HISTORY_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(payment);
    }

    fn features(&mut self, now_ms: i64) -> PatientFeatures {
        while self.recent.front().is_some_and(|payment| payment.created_at_ms < now_ms - PATIENT_HISTORY_MS) {
            self.recent.pop_front();
        }
        let mut features =
            PatientFeatures { first_payment_at_ms: self.recent.front().map(|p| p.created_at_ms), ..Default::default() };
        for payment in self.recent.iter().rev() {
            let age_ms = now_ms - payment.created_at_ms;
            if age_ms > DAY_MS {
                break;
            }
            features.payments_24h += 1;
            features.amount_24h_centavos = features.amount_24h_centavos.saturating_add(payment.amount_centavos);
            if payment.status == PaymentStatus::Declined {
                features.declines_24h += 1;
            }
            if age_ms <= HOUR_MS {
                features.payments_1h += 1;
            }
        }
        features
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
        let recent = args.context.store.patient_payments_since(args.id, since).await?;
        let idle = Duration::from_millis(args.context.config.idle_ms);
        myself.send_after(idle, || PatientMsg::IdleCheck);
        let mut state = PatientState { recent: VecDeque::new(), idle, last_activity: Instant::now() };
        recent.into_iter().for_each(|payment| state.remember(payment));
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<PatientMsg>,
        message: PatientMsg,
        state: &mut PatientState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PatientMsg::Features { now_ms, reply } => {
                state.last_activity = Instant::now();
                let _ = reply.send(state.features(now_ms));
            }
            PatientMsg::PaymentRecorded(payment) => {
                state.last_activity = Instant::now();
                state.remember(payment);
            }
            PatientMsg::IdleCheck => {
                crate::passivate_or_wait(&myself, state.last_activity, state.idle, || PatientMsg::IdleCheck)
            }
        }
        Ok(())
    }
}
