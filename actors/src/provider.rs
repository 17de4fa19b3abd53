//! One actor per active provider: its configuration and its recent volume, rebuilt from the store.

use crate::Context;
use crate::registry::Entity;
use medpay_ml::ProviderFeatures;
use medpay_models::ProviderId;
use medpay_store::ProviderRecord;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const DAY_MS: i64 = 24 * 60 * 60 * 1_000;
/// Most request instants the provider session keeps for its 24-hour count.
pub const PROVIDER_HISTORY_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct ProviderProfile {
    pub record: ProviderRecord,
    pub features: ProviderFeatures,
}

pub enum ProviderMsg {
    Profile { now_ms: i64, reply: RpcReplyPort<ProviderProfile> },
    PaymentRecorded { created_at_ms: i64 },
    IdleCheck,
}

#[derive(Default)]
pub struct ProviderSessionActor;

pub struct ProviderState {
    record: ProviderRecord,
    requests: VecDeque<i64>,
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
        let record = args
            .context
            .store
            .provider(args.id)
            .await?
            .ok_or_else(|| format!("provider {} does not exist", args.id))?;
        let limit = i64::try_from(PROVIDER_HISTORY_MAX).unwrap_or(i64::MAX);
        let since = medpay_store::now_ms() - DAY_MS;
        let requests = args.context.store.provider_payment_times_since(args.id, since, limit).await?;
        let idle = Duration::from_millis(args.context.config.idle_ms);
        myself.send_after(idle, || ProviderMsg::IdleCheck);
        Ok(ProviderState { record, requests: requests.into(), idle, last_activity: Instant::now() })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProviderMsg>,
        message: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProviderMsg::Profile { now_ms, reply } => {
                state.last_activity = Instant::now();
                while state.requests.front().is_some_and(|at| *at < now_ms - DAY_MS) {
                    state.requests.pop_front();
                }
                let features = ProviderFeatures {
                    max_amount_centavos: state.record.max_amount_centavos,
                    payments_24h: u32::try_from(state.requests.len()).unwrap_or(u32::MAX),
                };
                let _ = reply.send(ProviderProfile { record: state.record.clone(), features });
            }
            ProviderMsg::PaymentRecorded { created_at_ms } => {
                state.last_activity = Instant::now();
                if state.requests.len() >= PROVIDER_HISTORY_MAX {
                    state.requests.pop_front();
                }
                state.requests.push_back(created_at_ms);
            }
            ProviderMsg::IdleCheck => {
                crate::passivate_or_wait(&myself, state.last_activity, state.idle, || ProviderMsg::IdleCheck)
            }
        }
        Ok(())
    }
}
