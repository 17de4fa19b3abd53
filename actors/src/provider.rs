//! One actor per active provider: its configuration, its usual prices per procedure and its recent
//! decisions, rebuilt from the store.

use crate::Context;
use crate::registry::Entity;
use medpay_ml::features::{ProviderHistory, ProviderSnapshot, RequestFacts};
use medpay_models::{DecisionOutcome, ProviderId};
use medpay_store::ProviderRecord;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Recent payments read to rebuild a provider's history.
pub const PROVIDER_REBUILD_ROWS: i64 = 20_000;

#[derive(Debug, Clone)]
pub struct ProviderProfile {
    pub record: ProviderRecord,
    pub snapshot: ProviderSnapshot,
}

pub enum ProviderMsg {
    Profile { request: Box<RequestFacts>, reply: RpcReplyPort<ProviderProfile> },
    PaymentRecorded { tuss_code: String, amount_centavos: i64, at_ms: i64, outcome: DecisionOutcome },
    IdleCheck,
}

#[derive(Default)]
pub struct ProviderSessionActor;

pub struct ProviderState {
    record: ProviderRecord,
    history: ProviderHistory,
    idle: Duration,
    last_activity: Instant,
}

pub struct ProviderArgs {
    id: ProviderId,
    context: Arc<Context>,
}

impl Entity for ProviderSessionActor {
    type Id = ProviderId;
    type Context = Context;
    const KIND: &'static str = "provider";
    fn arguments(id: ProviderId, context: Arc<Context>, _fresh: bool) -> ProviderArgs {
        ProviderArgs { id, context }
    }
}

impl Actor for ProviderSessionActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ProviderMsg>,
        args: ProviderArgs,
    ) -> Result<ProviderState, ActorProcessingErr> {
        let store = &args.context.store;
        let record = store.provider(args.id).await?.ok_or_else(|| format!("provider {} does not exist", args.id))?;
        let mut history = ProviderHistory::default();
        // Newest first from the store; observed oldest first.
        for payment in store.provider_history(args.id, PROVIDER_REBUILD_ROWS).await?.into_iter().rev() {
            history.observe(&payment.tuss_code, payment.amount_centavos, payment.created_at_ms, payment.outcome);
        }
        let idle = Duration::from_millis(args.context.config.idle_ms);
        myself.send_after(idle, || ProviderMsg::IdleCheck);
        Ok(ProviderState { record, history, idle, last_activity: Instant::now() })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProviderMsg>,
        message: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProviderMsg::Profile { request, reply } => {
                state.last_activity = Instant::now();
                let snapshot = state.history.snapshot(&request);
                let _ = reply.send(ProviderProfile { record: state.record.clone(), snapshot });
            }
            ProviderMsg::PaymentRecorded { tuss_code, amount_centavos, at_ms, outcome } => {
                state.last_activity = Instant::now();
                state.history.observe(&tuss_code, amount_centavos, at_ms, outcome);
            }
            ProviderMsg::IdleCheck => {
                crate::passivate_or_wait(&myself, state.last_activity, state.idle, || ProviderMsg::IdleCheck)
            }
        }
        Ok(())
    }
}
