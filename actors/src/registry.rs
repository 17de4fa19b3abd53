//! Per-entity actors found by id: a supervisor per entity kind starts them on demand, restarts a
//! crashed one within a bounded budget (its state is rebuilt from the store), and forgets one that
//! stopped after its idle time (passivation).

use crate::CoreError;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// Restarts allowed per entity within `RESTART_WINDOW_MS` before its supervisor gives up on it.
pub const RESTARTS_MAX: usize = 3;
pub const RESTART_WINDOW_MS: u64 = 60_000;
/// How long a caller waits for a supervisor to find or start an actor.
pub const START_TIMEOUT_MS: u64 = 2_000;

/// An actor that is one entity's single owner.
pub trait Entity: Actor + Default {
    type Id: Copy + Eq + Hash + Debug + Display + Send + Sync + 'static;
    type Context: Send + Sync + 'static;
    /// The actor kind, for logs and metrics.
    const KIND: &'static str;
    /// Most actors of this kind alive at once; past it a start is refused (the caller answers 503
    /// and is retried), so that a flood of new ids cannot take all the memory.
    const LIVE_MAX: usize;
    /// `fresh` is true for an entity that does not exist in the store yet (nothing to rebuild).
    fn arguments(id: Self::Id, context: Arc<Self::Context>, fresh: bool) -> Self::Arguments;
}

pub type SharedMap<E> = Arc<RwLock<HashMap<<E as Entity>::Id, ActorRef<<E as Actor>::Msg>>>>;

pub enum SupervisorMsg<E: Entity> {
    GetOrStart { id: E::Id, fresh: bool, reply: RpcReplyPort<Result<ActorRef<E::Msg>, String>> },
    Stats { reply: RpcReplyPort<SupervisorStats> },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupervisorStats {
    pub live: usize,
    pub started: u64,
    pub restarted: u64,
    pub given_up: u64,
    pub passivated: u64,
}

pub struct EntitySupervisor<E: Entity>(PhantomData<fn() -> E>);

impl<E: Entity> Default for EntitySupervisor<E> {
    fn default() -> Self {
        EntitySupervisor(PhantomData)
    }
}

pub struct SupervisorState<E: Entity> {
    context: Arc<std::sync::OnceLock<Arc<E::Context>>>,
    live: SharedMap<E>,
    ids: HashMap<ActorId, E::Id>,
    restarts: HashMap<E::Id, VecDeque<Instant>>,
    stats: SupervisorStats,
}

pub struct SupervisorArgs<E: Entity> {
    pub context: Arc<std::sync::OnceLock<Arc<E::Context>>>,
    pub live: SharedMap<E>,
}

impl<E: Entity> SupervisorState<E> {
    fn live_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<E::Id, ActorRef<E::Msg>>> {
        // Only this supervisor writes the map and it never panics while holding the lock.
        self.live.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg<E>>,
        id: E::Id,
        fresh: bool,
    ) -> Result<ActorRef<E::Msg>, String> {
        let context = self.context.get().cloned().ok_or("runtime not initialised")?;
        if self.ids.len() >= E::LIVE_MAX {
            metrics::counter!("medpay_actor_starts_refused_total", "kind" => E::KIND).increment(1);
            tracing::warn!(kind = E::KIND, %id, live = self.ids.len(), "too many live actors; start refused");
            return Err(format!("too many live {} actors ({}); retry later", E::KIND, E::LIVE_MAX));
        }
        let (actor, _) = Actor::spawn_linked(None, E::default(), E::arguments(id, context, fresh), myself.get_cell())
            .await
            .map_err(|error| format!("{} {id} failed to start: {error}", E::KIND))?;
        self.ids.insert(actor.get_id(), id);
        self.live_map().insert(id, actor.clone());
        self.stats.started += 1;
        Ok(actor)
    }

    fn forget(&mut self, actor: ActorId) -> Option<E::Id> {
        let id = self.ids.remove(&actor)?;
        let mut live = self.live_map();
        if live.get(&id).is_some_and(|current| current.get_id() == actor) {
            live.remove(&id);
        }
        Some(id)
    }

    /// True when `id` may be restarted once more within the budget.
    fn restart_allowed(&mut self, id: E::Id) -> bool {
        let now = Instant::now();
        let window = Duration::from_millis(RESTART_WINDOW_MS);
        let history = self.restarts.entry(id).or_default();
        while history.front().is_some_and(|at| now.duration_since(*at) > window) {
            history.pop_front();
        }
        if history.len() >= RESTARTS_MAX {
            return false;
        }
        history.push_back(now);
        true
    }
}

impl<E: Entity> Actor for EntitySupervisor<E> {
    type Msg = SupervisorMsg<E>;
    type State = SupervisorState<E>;
    type Arguments = SupervisorArgs<E>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            context: args.context,
            live: args.live,
            ids: HashMap::new(),
            restarts: HashMap::new(),
            stats: SupervisorStats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::GetOrStart { id, fresh, reply } => {
                let existing = state.live_map().get(&id).cloned();
                let result = match existing {
                    Some(actor) if accepts_messages(actor.get_status()) => Ok(actor),
                    _ => state.spawn(&myself, id, fresh).await,
                };
                // The caller may have timed out and gone: nothing to do then.
                let _ = reply.send(result);
            }
            SupervisorMsg::Stats { reply } => {
                let mut stats = state.stats;
                stats.live = state.ids.len();
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(id) = state.forget(cell.get_id()) {
                    state.stats.passivated += 1;
                    tracing::debug!(kind = E::KIND, %id, ?reason, "actor stopped");
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(id) = state.forget(cell.get_id()) else { return Ok(()) };
                metrics::counter!("medpay_actor_failures_total", "kind" => E::KIND).increment(1);
                if state.restart_allowed(id) {
                    tracing::warn!(kind = E::KIND, %id, %error, "actor crashed; restarting it from the store");
                    match state.spawn(&myself, id, false).await {
                        Ok(_) => state.stats.restarted += 1,
                        Err(spawn_error) => tracing::error!(kind = E::KIND, %id, %spawn_error, "restart failed"),
                    }
                } else {
                    state.stats.given_up += 1;
                    tracing::error!(kind = E::KIND, %id, %error, "actor crashed too often; not restarting it");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether an actor takes messages: a running one, and one just spawned whose status is not
/// `Running` yet (its mailbox is open). Treating the latter as gone started a second actor for the
/// same entity when two callers asked for it at once: two owners, and a burst of one patient's
/// payments that did not see each other.
fn accepts_messages(status: ActorStatus) -> bool {
    matches!(status, ActorStatus::Unstarted | ActorStatus::Starting | ActorStatus::Running | ActorStatus::Upgrading)
}

/// The way in to one kind of entity actor.
pub struct Registry<E: Entity> {
    supervisor: ActorRef<SupervisorMsg<E>>,
    live: SharedMap<E>,
}

impl<E: Entity> Clone for Registry<E> {
    fn clone(&self) -> Self {
        Registry { supervisor: self.supervisor.clone(), live: self.live.clone() }
    }
}

impl<E: Entity> Registry<E> {
    pub async fn start(
        context: Arc<std::sync::OnceLock<Arc<E::Context>>>,
        supervisor_of: Option<ractor::ActorCell>,
    ) -> Result<Registry<E>, CoreError> {
        let live: SharedMap<E> = Arc::default();
        let args = SupervisorArgs { context, live: live.clone() };
        let (supervisor, _) = match supervisor_of {
            Some(parent) => Actor::spawn_linked(None, EntitySupervisor::<E>::default(), args, parent).await,
            None => Actor::spawn(None, EntitySupervisor::<E>::default(), args).await,
        }
        .map_err(|error| CoreError::Unavailable(format!("{} supervisor: {error}", E::KIND)))?;
        Ok(Registry { supervisor, live })
    }

    /// The running actor of `id`, started (and rebuilt from the store) if there is none.
    pub async fn get(&self, id: E::Id) -> Result<ActorRef<E::Msg>, CoreError> {
        self.lookup(id, false).await
    }

    /// Starts the actor of an entity that is not in the store yet.
    pub async fn start_new(&self, id: E::Id) -> Result<ActorRef<E::Msg>, CoreError> {
        self.lookup(id, true).await
    }

    async fn lookup(&self, id: E::Id, fresh: bool) -> Result<ActorRef<E::Msg>, CoreError> {
        if let Some(actor) = self.live(id) {
            return Ok(actor);
        }
        let result = self
            .supervisor
            .call(|reply| SupervisorMsg::GetOrStart { id, fresh, reply }, Some(Duration::from_millis(START_TIMEOUT_MS)))
            .await;
        match result {
            Ok(ractor::rpc::CallResult::Success(Ok(actor))) => Ok(actor),
            Ok(ractor::rpc::CallResult::Success(Err(error))) => Err(CoreError::Unavailable(error)),
            Ok(ractor::rpc::CallResult::Timeout) => Err(CoreError::Timeout(E::KIND)),
            _ => Err(CoreError::Unavailable(format!("{} supervisor is down", E::KIND))),
        }
    }

    /// The running actor of `id`, if there is one; never starts one.
    pub fn live(&self, id: E::Id) -> Option<ActorRef<E::Msg>> {
        let live = self.live.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.get(&id).filter(|actor| accepts_messages(actor.get_status())).cloned()
    }

    pub fn is_live(&self, id: E::Id) -> bool {
        self.live(id).is_some()
    }

    pub async fn stats(&self) -> Result<SupervisorStats, CoreError> {
        match self
            .supervisor
            .call(|reply| SupervisorMsg::Stats { reply }, Some(Duration::from_millis(START_TIMEOUT_MS)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(stats)) => Ok(stats),
            _ => Err(CoreError::Unavailable(format!("{} supervisor is down", E::KIND))),
        }
    }

    pub fn supervisor(&self) -> &ActorRef<SupervisorMsg<E>> {
        &self.supervisor
    }
}

/// Sends a call to the actor of `id` and waits at most `timeout_ms` for the answer. When the actor
/// had already stopped (passivated between lookup and send) the call is sent once more to a fresh
/// actor; when it crashed while handling the call, the crash is reported and nothing is retried.
pub async fn ask<E, R, B>(registry: &Registry<E>, id: E::Id, timeout_ms: u64, build: B) -> Result<R, CoreError>
where
    E: Entity,
    R: Send + 'static,
    B: Fn(RpcReplyPort<R>) -> E::Msg,
{
    for _attempt in 0..2 {
        let actor = registry.get(id).await?;
        match actor.call(&build, Some(Duration::from_millis(timeout_ms))).await {
            Ok(ractor::rpc::CallResult::Success(reply)) => return Ok(reply),
            Ok(ractor::rpc::CallResult::Timeout) => return Err(CoreError::Timeout(E::KIND)),
            Ok(ractor::rpc::CallResult::SenderError) => return Err(CoreError::Crashed(E::KIND)),
            Err(_) => continue,
        }
    }
    Err(CoreError::Unavailable(format!("{} {id} is not accepting messages", E::KIND)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entity that does nothing, with room for two.
    #[derive(Default)]
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    impl Entity for Idle {
        type Id = u32;
        type Context = ();
        const KIND: &'static str = "idle";
        const LIVE_MAX: usize = 2;
        fn arguments(_: u32, _: Arc<()>, _: bool) {}
    }

    #[tokio::test]
    async fn no_more_actors_start_than_the_kind_allows() {
        let context = Arc::new(std::sync::OnceLock::new());
        let _ = context.set(Arc::new(()));
        let registry = Registry::<Idle>::start(context, None).await.unwrap();
        registry.get(1).await.unwrap();
        registry.get(2).await.unwrap();
        assert!(registry.get(1).await.is_ok(), "a live one is found, not started");
        match registry.get(3).await {
            Err(CoreError::Unavailable(why)) => assert!(why.contains("too many live idle actors"), "{why}"),
            other => panic!("a third started: {:?}", other.map(|_| ())),
        }
        // One stops: there is room again.
        registry.live(2).unwrap().stop(None);
        for _ in 0..200 {
            if registry.stats().await.unwrap().live < 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        registry.get(3).await.unwrap();
        assert_eq!(registry.stats().await.unwrap().live, 2);
    }
}
