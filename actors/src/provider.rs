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

/// Events handed to a live subscriber at a time.
pub type EventBatch = Arc<Vec<medpay_store::EventRecord>>;
/// Batches a subscriber may fall behind by before it is dropped.
pub const SUBSCRIBER_BUFFER: usize = 256;
/// Live subscribers per provider.
pub const SUBSCRIBERS_MAX: usize = 64;

pub enum ProviderMsg {
    Profile {
        request: Box<RequestFacts>,
        reply: RpcReplyPort<ProviderProfile>,
    },
    /// A live feed of this provider's events; `None` when the provider has too many already.
    Subscribe {
        reply: RpcReplyPort<Option<tokio::sync::mpsc::Receiver<EventBatch>>>,
    },
    /// Events committed for this provider, to fan out.
    EventsCommitted(EventBatch),
    /// The provider's settings changed in the store: read them again.
    Reload {
        reply: RpcReplyPort<Result<(), String>>,
    },
    PaymentRecorded {
        tuss_code: String,
        amount_centavos: i64,
        at_ms: i64,
        outcome: DecisionOutcome,
    },
    IdleCheck,
}

#[derive(Default)]
pub struct ProviderSessionActor;

pub struct ProviderState {
    context: Arc<Context>,
    record: ProviderRecord,
    history: ProviderHistory,
    subscribers: Vec<tokio::sync::mpsc::Sender<EventBatch>>,
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
    /// Providers' sessions.
    const LIVE_MAX: usize = 50_000;
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
        history.set_prices(store.provider_prices(args.id).await?);
        let idle = Duration::from_millis(args.context.config.idle_ms);
        myself.send_after(idle, || ProviderMsg::IdleCheck);
        Ok(ProviderState {
            context: args.context.clone(),
            record,
            history,
            subscribers: Vec::new(),
            idle,
            last_activity: Instant::now(),
        })
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
            ProviderMsg::Reload { reply } => {
                let store = &state.context.store;
                let result = match store.provider(state.record.id).await {
                    Ok(Some(record)) => match store.provider_prices(record.id).await {
                        Ok(prices) => {
                            state.history.set_prices(prices);
                            state.record = record;
                            Ok(())
                        }
                        Err(error) => Err(error.to_string()),
                    },
                    Ok(None) => Err("the provider no longer exists".to_owned()),
                    Err(error) => Err(error.to_string()),
                };
                let _ = reply.send(result);
            }
            ProviderMsg::Subscribe { reply } => {
                state.subscribers.retain(|subscriber| !subscriber.is_closed());
                let receiver = (state.subscribers.len() < SUBSCRIBERS_MAX).then(|| {
                    let (sender, receiver) = tokio::sync::mpsc::channel(SUBSCRIBER_BUFFER);
                    state.subscribers.push(sender);
                    receiver
                });
                let _ = reply.send(receiver);
            }
            ProviderMsg::EventsCommitted(batch) => {
                // A subscriber that cannot keep up is dropped, not waited for: the others must not
                // slow down. It sees its feed close and resumes from its cursor.
                state.subscribers.retain(|subscriber| match subscriber.try_send(batch.clone()) {
                    Ok(()) => true,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(provider_id = %state.record.id, "live subscriber too slow; dropped");
                        metrics::counter!("medpay_subscribers_dropped_total").increment(1);
                        false
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
                });
            }
            ProviderMsg::IdleCheck => {
                // A provider with live subscribers stays.
                state.subscribers.retain(|subscriber| !subscriber.is_closed());
                if !state.subscribers.is_empty() {
                    state.last_activity = Instant::now();
                }
                crate::passivate_or_wait(&myself, state.last_activity, state.idle, || ProviderMsg::IdleCheck)
            }
        }
        Ok(())
    }
}
