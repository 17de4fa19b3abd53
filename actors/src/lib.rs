//! The supervision tree: a root supervisor over one supervisor per entity kind (payments,
//! patients, providers), each owning per-entity actors found by id.

pub mod chat;
pub mod contracts;
pub mod documents;
pub mod lifecycle;
pub mod money;
pub mod netguard;
pub mod outbox;
mod patient;
mod provider;
pub mod registry;
pub mod simulation;
mod transaction;

#[cfg(test)]
mod tests;

pub use patient::{PatientMsg, PatientSessionActor};
pub use provider::{EventBatch, ProviderMsg, ProviderProfile, ProviderSessionActor, SUBSCRIBER_BUFFER};
pub use registry::{Registry, SupervisorStats};
pub use transaction::{
    Created, FALLBACK_MODEL_VERSION, IdempotencyTarget, NewPayment, TransactionActor, TransactionMsg,
};

use medpay_ml::RiskScorer;
use medpay_models::{ConversationId, FailMode, PaymentId};
use medpay_store::{DecisionRecord, PaymentRecord, Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0} actor did not answer in time")]
    Timeout(&'static str),
    #[error("{0} actor crashed while handling the request")]
    Crashed(&'static str),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("the payment exists already")]
    AlreadyExists,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invariant broken: {0}")]
    Invariant(String),
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Time budget of one scoring call.
    pub score_budget_ms: u64,
    /// Time budget of each feature call to a patient's or provider's session.
    pub feature_call_timeout_ms: u64,
    /// Time budget of a whole decision (features, scoring, durable write).
    pub decide_timeout_ms: u64,
    /// An entity actor with no message for this long stops (its state is in the store).
    pub idle_ms: u64,
    /// A payment's actor with nothing owed (no intent pending, no refund to send, no webhook
    /// waiting) stops after this much quiet: most payments then wait days for a PIX or a boleto,
    /// and a resident ractor actor costs about 8 KB before any state (docs/PERFORMANCE.md). The
    /// next message for it (a webhook, a refund, the sweep) starts it again from the store.
    pub payment_rest_ms: u64,
    /// A patient's session with no message for this long stops; its recent payments are read back
    /// (one indexed query) at its next payment. A burst keeps it alive, and most patients pay a
    /// few times a month: 50,000 sessions kept for five minutes were 300 MB of the server's RSS.
    pub patient_idle_ms: u64,
    /// The fail mode when the provider's own cannot be read.
    pub default_fail_mode: FailMode,
    /// Pins the hour of day (São Paulo) the model sees, for tests and demos whose outcome must not
    /// depend on when they run (night payments score higher). Unset in production.
    pub scoring_hour: Option<u32>,
    pub webhooks: outbox::WebhookConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            score_budget_ms: 50,
            feature_call_timeout_ms: 200,
            decide_timeout_ms: 5_000,
            idle_ms: 5 * 60 * 1_000,
            payment_rest_ms: 2_000,
            patient_idle_ms: 10_000,
            default_fail_mode: FailMode::Open,
            scoring_hour: None,
            webhooks: outbox::WebhookConfig::default(),
        }
    }
}

/// How the HTTP edge shows a payment: in its events, and as the answer stored with its idempotency
/// key so that a retry replays it byte for byte.
pub type Renderer = Arc<
    dyn Fn(&PaymentRecord, Option<&DecisionRecord>, Option<&medpay_store::ChargeRecord>) -> serde_json::Value
        + Send
        + Sync,
>;

/// What every entity actor shares.
pub struct Context {
    pub store: Store,
    pub scorer: Arc<dyn RiskScorer>,
    pub config: RuntimeConfig,
    pub patients: Registry<PatientSessionActor>,
    pub providers: Registry<ProviderSessionActor>,
    pub render: Renderer,
    /// Which patients each device and IP was seen with, shared by every payment.
    pub devices: std::sync::Mutex<medpay_ml::features::DeviceIndex>,
    /// Woken after each commit so that webhooks leave at once.
    pub outbox: ActorRef<outbox::OutboxMsg>,
    /// Where money moves; `None` decides payments without charging them (benchmarks, unit tests).
    pub gateways: Option<money::Gateways>,
    pub payments: Registry<TransactionActor>,
    /// The support bot's tokenizer and intent model.
    pub chat: Option<Arc<chat::ChatBrain>>,
}

/// The last day's sightings of devices and IPs, from the store.
async fn rebuild_device_index(store: &Store) -> Result<medpay_ml::features::DeviceIndex, CoreError> {
    let mut index = medpay_ml::features::DeviceIndex::default();
    let day_ms = 24 * 60 * 60 * 1_000;
    for sighting in store.sightings_since(medpay_store::now_ms() - day_ms).await? {
        let (device, ip) = (medpay_ml::list_hash(&sighting.device_id), medpay_ml::list_hash(&sighting.ip));
        index.observe(&device, &ip, sighting.created_at_ms, sighting.patient_id);
    }
    Ok(index)
}

/// Stops an idle actor, or checks again when it next could be idle.
pub(crate) fn passivate_or_wait<M: ractor::Message>(
    myself: &ActorRef<M>,
    last_activity: Instant,
    idle: Duration,
    check: impl FnOnce() -> M + Send + 'static,
) {
    let quiet = last_activity.elapsed();
    if quiet >= idle {
        myself.stop(Some("idle".to_owned()));
    } else {
        myself.send_after(idle - quiet, check);
    }
}

/// The root of the tree. Entity supervisors never fail by design (they catch their children's
/// failures); if one does, the root marks the runtime unhealthy so that readiness fails and the
/// node is restarted.
#[derive(Default)]
struct RootSupervisor;

impl Actor for RootSupervisor {
    type Msg = ();
    type State = Arc<AtomicBool>;
    type Arguments = Arc<AtomicBool>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        healthy: Arc<AtomicBool>,
    ) -> Result<Arc<AtomicBool>, ActorProcessingErr> {
        Ok(healthy)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        healthy: &mut Arc<AtomicBool>,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            tracing::error!(supervisor = ?cell.get_id(), %error, "an entity supervisor failed; the node is no longer ready");
            healthy.store(false, Ordering::SeqCst);
        }
        Ok(())
    }
}

pub struct Runtime {
    context: Arc<Context>,
    payments: Registry<TransactionActor>,
    chats: Registry<chat::ChatActor>,
    root: ActorRef<()>,
    healthy: Arc<AtomicBool>,
    /// Stops the money sweep.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Runtime {
    pub async fn start(
        store: Store,
        scorer: Arc<dyn RiskScorer>,
        config: RuntimeConfig,
        render: Renderer,
        gateways: Option<money::Gateways>,
    ) -> Result<Runtime, CoreError> {
        let healthy = Arc::new(AtomicBool::new(true));
        let (root, _) = Actor::spawn(None, RootSupervisor, healthy.clone())
            .await
            .map_err(|error| CoreError::Unavailable(format!("root supervisor: {error}")))?;
        let slot: Arc<OnceLock<Arc<Context>>> = Arc::default();
        let cell = Some(root.get_cell());
        let patients = Registry::<PatientSessionActor>::start(slot.clone(), cell.clone()).await?;
        let providers = Registry::<ProviderSessionActor>::start(slot.clone(), cell.clone()).await?;
        let payments = Registry::<TransactionActor>::start(slot.clone(), cell.clone()).await?;
        let chats = Registry::<chat::ChatActor>::start(slot.clone(), cell).await?;
        let brain = match chat::ChatBrain::committed() {
            Ok(brain) => Some(Arc::new(brain)),
            Err(error) => {
                tracing::error!(%error, "the chat model did not load; the chat answers 503");
                None
            }
        };
        let devices = std::sync::Mutex::new(rebuild_device_index(&store).await?);
        let (outbox, _) =
            Actor::spawn_linked(None, outbox::OutboxActor, (store.clone(), config.webhooks.clone()), root.get_cell())
                .await
                .map_err(|error| CoreError::Unavailable(format!("outbox: {error}")))?;
        let context = Arc::new(Context {
            store,
            scorer,
            config,
            patients,
            providers,
            render,
            devices,
            outbox,
            gateways,
            payments: payments.clone(),
            chat: brain,
        });
        slot.set(context.clone()).map_err(|_| CoreError::Invariant("runtime context set twice".to_owned()))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        money::spawn_sweep(context.clone(), payments.clone(), stopped);
        Ok(Runtime { context, payments, chats, root, healthy, stop })
    }

    /// Decides a new payment and records it; the decision comes back when it is durable.
    pub async fn submit(&self, payment: NewPayment) -> Result<Created, CoreError> {
        let id = payment.id;
        let actor = self.payments.start_new(id).await?;
        let timeout = Duration::from_millis(self.context.config.decide_timeout_ms);
        let payment = Box::new(payment);
        match actor.call(|reply| TransactionMsg::Decide { payment, reply }, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(ractor::rpc::CallResult::Timeout) => Err(CoreError::Timeout("transaction")),
            Ok(ractor::rpc::CallResult::SenderError) => Err(CoreError::Crashed("transaction")),
            Err(_) => Err(CoreError::Unavailable(format!("transaction actor of {id} stopped"))),
        }
    }

    /// Finishes the answer of the request that created `payment` (after a crash cut it short):
    /// its first charge if still owed, and its idempotency key completed.
    pub async fn resume(&self, payment: PaymentId) -> Result<(), CoreError> {
        let timeout_ms = self.context.config.decide_timeout_ms;
        registry::ask(&self.payments, payment, timeout_ms, |reply| TransactionMsg::Resume { reply }).await?
    }

    pub fn payments(&self) -> &Registry<TransactionActor> {
        &self.payments
    }

    pub fn patients(&self) -> &Registry<PatientSessionActor> {
        &self.context.patients
    }

    pub fn providers(&self) -> &Registry<ProviderSessionActor> {
        &self.context.providers
    }

    pub fn store(&self) -> &Store {
        &self.context.store
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// The payment as its actor holds it (started and rebuilt from the store if needed).
    pub async fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, CoreError> {
        registry::ask(&self.payments, id, self.context.config.feature_call_timeout_ms, |reply| TransactionMsg::Get {
            reply,
        })
        .await
    }

    /// A live feed of `provider`'s events as they commit (`None`: too many subscribers already).
    pub async fn subscribe(
        &self,
        provider: medpay_models::ProviderId,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<EventBatch>>, CoreError> {
        registry::ask(&self.context.providers, provider, self.context.config.feature_call_timeout_ms, |reply| {
            ProviderMsg::Subscribe { reply }
        })
        .await
    }

    /// Makes a running provider session read the provider's settings again (a session that is not
    /// running reads them when it starts).
    pub async fn reload_provider(&self, provider: medpay_models::ProviderId) -> Result<(), CoreError> {
        let Some(actor) = self.context.providers.live(provider) else { return Ok(()) };
        let timeout = Duration::from_millis(self.context.config.feature_call_timeout_ms);
        match actor.call(|reply| ProviderMsg::Reload { reply }, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(Ok(()))) => Ok(()),
            Ok(ractor::rpc::CallResult::Success(Err(error))) => Err(CoreError::Unavailable(error)),
            // It stopped meanwhile: it will read the store when it starts again.
            Err(_) | Ok(ractor::rpc::CallResult::SenderError) => Ok(()),
            Ok(ractor::rpc::CallResult::Timeout) => Err(CoreError::Timeout("provider")),
        }
    }

    /// Asks the outbox to look for work now (a resend, say).
    pub fn wake_outbox(&self) {
        let _ = self.context.outbox.send_message(outbox::OutboxMsg::Pump);
    }

    /// Hands the payment's actor a gateway webhook of it that was just recorded.
    pub async fn webhook_recorded(
        &self,
        payment: PaymentId,
        webhook: medpay_store::GatewayWebhook,
    ) -> Result<(), CoreError> {
        let actor = self.payments.get(payment).await?;
        actor
            .send_message(TransactionMsg::WebhookRecorded(Box::new(webhook)))
            .map_err(|_| CoreError::Unavailable(format!("transaction actor of {payment} stopped")))
    }

    /// Refunds part or all of what the patient paid.
    pub async fn refund(
        &self,
        payment: PaymentId,
        amount_centavos: i64,
        reason: String,
        key: String,
    ) -> Result<Vec<medpay_store::RefundRecord>, money::MoneyError> {
        let timeout_ms = self.context.config.decide_timeout_ms * 4;
        registry::ask(&self.payments, payment, timeout_ms, |reply| TransactionMsg::Refund {
            amount_centavos,
            reason: reason.clone(),
            key: key.clone(),
            reply,
        })
        .await?
    }

    /// An analyst closes a review case (upheld: the payment is cancelled or refunded, labelled fraud).
    pub async fn close_review(
        &self,
        payment: PaymentId,
        case_id: String,
        upheld: bool,
        note: String,
        audit: medpay_store::AuditEntry,
    ) -> Result<PaymentRecord, money::MoneyError> {
        let timeout_ms = self.context.config.decide_timeout_ms * 4;
        registry::ask(&self.payments, payment, timeout_ms, |reply| TransactionMsg::CloseReview {
            case_id: case_id.clone(),
            upheld,
            note: note.clone(),
            audit: Box::new(audit.clone()),
            reply,
        })
        .await?
    }

    /// The provider confirms (true) or cancels (false) the procedure of a payment held in escrow.
    pub async fn procedure(&self, payment: PaymentId, performed: bool) -> Result<PaymentRecord, money::MoneyError> {
        let timeout_ms = self.context.config.decide_timeout_ms * 4;
        registry::ask(&self.payments, payment, timeout_ms, |reply| TransactionMsg::Procedure { performed, reply })
            .await?
    }

    /// Hot-swaps the scorer's model: decisions started after this use `model`, those running
    /// finish with theirs. False when the scorer has no model (a test's).
    pub fn swap_model(&self, model: medpay_ml::ModelArtefact) -> bool {
        self.context.scorer.swap_model(model)
    }

    /// Puts a challenger in shadow beside the champion (or takes it out).
    pub fn set_challenger(&self, model: Option<medpay_ml::ModelArtefact>) -> bool {
        self.context.scorer.set_challenger(model)
    }

    /// Lets the challenger decide `share_bps` of the payments (by their id).
    pub fn set_canary(&self, share_bps: u32) -> bool {
        self.context.scorer.set_canary(share_bps)
    }

    /// The version of the model deciding payments now.
    pub fn model_version(&self) -> Option<String> {
        self.context.scorer.model_version()
    }

    pub fn gateways(&self) -> Option<&money::Gateways> {
        self.context.gateways.as_ref()
    }

    /// Starts a conversation with the bot of the patient of `by`, in its scope.
    pub async fn start_conversation(&self, by: medpay_store::PatientCredential) -> Result<ConversationId, CoreError> {
        let id = ConversationId::new();
        self.context.store.create_conversation(&id.to_string(), by, medpay_store::now_ms()).await?;
        Ok(id)
    }

    /// A message of the patient of `by` in `conversation`, and the bot's answer (none after a
    /// hand-off).
    pub async fn chat(
        &self,
        conversation: ConversationId,
        by: medpay_store::PatientCredential,
        text: String,
    ) -> Result<chat::ChatReply, chat::ChatError> {
        let timeout_ms = self.context.config.decide_timeout_ms;
        registry::ask(&self.chats, conversation, timeout_ms, |reply| chat::ChatMsg::Say {
            by,
            text: text.clone(),
            reply,
        })
        .await?
    }

    /// Stops every actor, leaves first, waiting at most `timeout` at each level.
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = self.stop.send(true);
        for supervisor in [
            self.chats.supervisor().get_cell(),
            self.payments.supervisor().get_cell(),
            self.context.patients.supervisor().get_cell(),
            self.context.providers.supervisor().get_cell(),
        ] {
            supervisor.stop_children_and_wait(Some("shutdown".to_owned()), Some(timeout)).await;
            let _ = supervisor.stop_and_wait(Some("shutdown".to_owned()), Some(timeout)).await;
        }
        let _ = self.context.outbox.stop_and_wait(Some("shutdown".to_owned()), Some(timeout)).await;
        let _ = self.root.stop_and_wait(Some("shutdown".to_owned()), Some(timeout)).await;
    }
}
