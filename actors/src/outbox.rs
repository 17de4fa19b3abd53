//! The webhook outbox: turns each provider's committed events into deliveries for its endpoints
//! (durably, by cursor) and delivers them, signed, at least once, retrying with exponential backoff
//! and jitter. Everything it needs is in the store, so a restart resumes where it stopped.

use hmac::{Hmac, Mac};
use medpay_store::{AttemptOutcome, EventRecord, Store, WebhookDelivery, WebhookEndpoint};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::Rng;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::{Duration, Instant};

pub const SIGNATURE_HEADER: &str = "medpay-signature";
/// Events read per endpoint per pass.
const ENQUEUE_BATCH_MAX: i64 = 500;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// First retry after about this long; each next one twice as late, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Attempts before a delivery is failed. With the defaults the last one is over 24 h after the first.
    pub attempts_max: i64,
    /// Consecutive failed attempts that disable an endpoint.
    pub endpoint_failures_max: i64,
    pub request_timeout_ms: u64,
    /// How often the outbox looks for work when nothing wakes it.
    pub poll_ms: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Development only: webhooks may go to loopback addresses (over http too). Never private,
    /// link-local or metadata addresses (`netguard`).
    pub allow_loopback: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            backoff_base_ms: 30_000,
            backoff_max_ms: 6 * 60 * 60 * 1_000,
            attempts_max: 16,
            endpoint_failures_max: 100,
            request_timeout_ms: 10_000,
            poll_ms: 1_000,
            concurrency: 16,
            allow_loopback: false,
        }
    }
}

impl WebhookConfig {
    /// When attempt `attempts + 1` should happen after a failure, or `None` to give up.
    pub fn retry_at(&self, attempts_done: i64, now_ms: i64) -> Option<i64> {
        if attempts_done >= self.attempts_max {
            return None;
        }
        let exponent = u32::try_from(attempts_done.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let delay = self.backoff_base_ms.saturating_mul(1u64 << exponent).min(self.backoff_max_ms);
        // ±20 % jitter so that many failed deliveries do not retry in step.
        let jittered = (delay as f64 * rand::rng().random_range(0.8..1.2)) as i64;
        Some(now_ms + jittered.max(1))
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header as a receiver should: the HMAC matches and the timestamp is within
/// `tolerance_seconds` of `now_seconds` (so an old delivery cannot be replayed).
pub fn verify(secret: &str, header: &str, body: &str, now_seconds: i64, tolerance_seconds: i64) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signature = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else { return false };
    if (now_seconds - timestamp).abs() > tolerance_seconds {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{timestamp}.{body}").as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// An event as providers receive it, on every channel.
pub fn event_json(event: &EventRecord) -> Value {
    let created_at = chrono::DateTime::from_timestamp_millis(event.created_at_ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    json!({
        "id": event.id(),
        "type": event.kind,
        "payment_id": event.payment_id.to_string(),
        "seq": event.seq,
        "provider_seq": event.provider_seq,
        "created_at": created_at,
        "data": event.data,
    })
}

pub enum OutboxMsg {
    /// Look for new events and due deliveries now (coalesced: at most one pass per
    /// `PUMP_SPACING_MS`; a wake-up in between schedules one pass at the end of it).
    Pump,
    /// The scheduled pass.
    Scheduled,
}

/// Least time between two outbox passes under a stream of wake-ups.
const PUMP_SPACING_MS: u64 = 20;

#[derive(Default)]
pub struct OutboxActor;

pub struct OutboxState {
    sender: Sender,
    last_pass: Instant,
    scheduled: bool,
}

/// What a delivery needs, shared by the endpoints' delivery tasks.
#[derive(Clone)]
struct Sender {
    store: Store,
    client: reqwest::Client,
    config: WebhookConfig,
    /// Which endpoints have a task sending now, and when each one's last task ended.
    tasks: std::sync::Arc<std::sync::Mutex<EndpointTasks>>,
    /// Requests in flight at once, over every endpoint.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The endpoints' delivery tasks. A pass may hand an endpoint what it read only if no task of that
/// endpoint ran while it read: a task that ended after the read began may have sent some of it.
#[derive(Default)]
struct EndpointTasks {
    running: std::collections::HashSet<String>,
    /// The sequence number of each endpoint's last ended task.
    ended: std::collections::HashMap<String, u64>,
    seq: u64,
}

impl EndpointTasks {
    fn lock(tasks: &std::sync::Mutex<EndpointTasks>) -> std::sync::MutexGuard<'_, EndpointTasks> {
        tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Deliveries of one endpoint a pass hands to its task at most (sent one after the other, in
/// order); the others' come in turns beside them.
const DELIVERIES_PER_ENDPOINT_PER_PASS: i64 = 16;

impl Actor for OutboxActor {
    type Msg = OutboxMsg;
    type State = OutboxState;
    type Arguments = (Store, WebhookConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<OutboxMsg>,
        (store, config): (Store, WebhookConfig),
    ) -> Result<OutboxState, ActorProcessingErr> {
        // reqwest is built without a crypto provider of its own: use ring, as sqlx does. Installing
        // twice is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(std::sync::Arc::new(crate::netguard::GuardedResolver {
                allow_loopback: config.allow_loopback,
            }))
            .user_agent("MedPay-Webhooks/1")
            .build()?;
        myself.send_interval(Duration::from_millis(config.poll_ms), || OutboxMsg::Pump);
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
        let sender = Sender { store, client, config, tasks: std::sync::Arc::default(), permits };
        Ok(OutboxState { sender, last_pass: Instant::now(), scheduled: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<OutboxMsg>,
        message: OutboxMsg,
        state: &mut OutboxState,
    ) -> Result<(), ActorProcessingErr> {
        let spacing = Duration::from_millis(PUMP_SPACING_MS);
        match message {
            OutboxMsg::Pump if state.last_pass.elapsed() < spacing => {
                if !state.scheduled {
                    state.scheduled = true;
                    myself.send_after(spacing, || OutboxMsg::Scheduled);
                }
                return Ok(());
            }
            OutboxMsg::Scheduled => state.scheduled = false,
            OutboxMsg::Pump => {}
        }
        state.last_pass = Instant::now();
        if let Err(error) = pump(&state.sender).await {
            tracing::warn!(%error, "outbox pass failed; the next one retries");
        }
        Ok(())
    }
}

/// One pass: new events become deliveries, then each endpoint with deliveries due and no task
/// sending already gets a task that sends them in order. The pass waits for none of them: a slow
/// receiver holds up only its own deliveries (and one of the `concurrency` slots while it answers).
async fn pump(sender: &Sender) -> Result<(), medpay_store::StoreError> {
    for endpoint in sender.store.webhook_endpoints(None).await?.into_iter().filter(|endpoint| endpoint.enabled) {
        let events = sender.store.provider_events(endpoint.provider_id, endpoint.cursor, ENQUEUE_BATCH_MAX).await?;
        sender.store.enqueue_deliveries(&endpoint, &events, medpay_store::now_ms()).await?;
    }
    let (running_before, seq_before) = {
        let tasks = EndpointTasks::lock(&sender.tasks);
        (tasks.running.clone(), tasks.seq)
    };
    let due = sender.store.due_deliveries(medpay_store::now_ms(), DELIVERIES_PER_ENDPOINT_PER_PASS).await?;
    let mut by_endpoint: Vec<(WebhookEndpoint, Vec<WebhookDelivery>)> = Vec::new();
    for (delivery, endpoint) in due {
        match by_endpoint.iter_mut().find(|(known, _)| known.id == endpoint.id) {
            Some((_, deliveries)) => deliveries.push(delivery),
            None => by_endpoint.push((endpoint, vec![delivery])),
        }
    }
    for (endpoint, deliveries) in by_endpoint {
        {
            let mut tasks = EndpointTasks::lock(&sender.tasks);
            let stale = running_before.contains(&endpoint.id)
                || tasks.running.contains(&endpoint.id)
                || tasks.ended.get(&endpoint.id).is_some_and(|ended| *ended > seq_before);
            if stale {
                // Its task has it, or had it while this pass read: the next pass reads it afresh.
                continue;
            }
            tasks.running.insert(endpoint.id.clone());
        }
        let sender = sender.clone();
        tokio::spawn(async move {
            for delivery in &deliveries {
                let Ok(_permit) = sender.permits.acquire().await else { break };
                if let Err(error) = deliver(&sender, delivery, &endpoint).await {
                    tracing::warn!(delivery_id = %delivery.id, %error, "recording a delivery attempt failed");
                }
            }
            let mut tasks = EndpointTasks::lock(&sender.tasks);
            tasks.running.remove(&endpoint.id);
            tasks.seq += 1;
            let seq = tasks.seq;
            tasks.ended.insert(endpoint.id.clone(), seq);
        });
    }
    Ok(())
}

async fn deliver(
    state: &Sender,
    delivery: &WebhookDelivery,
    endpoint: &WebhookEndpoint,
) -> Result<(), medpay_store::StoreError> {
    let Some(event) = state.store.event(delivery.payment_id, delivery.event_seq).await? else {
        tracing::error!(delivery_id = %delivery.id, "the delivery's event is missing");
        return Ok(());
    };
    let body = event_json(&event).to_string();
    let timestamp = medpay_store::now_ms() / 1_000;
    let started = Instant::now();
    // Checked again at every attempt (registered under another setting, or before the check
    // existed): an address written in the URL is never resolved, so the resolver cannot refuse it.
    let url = match crate::netguard::check_url(&endpoint.url, state.config.allow_loopback) {
        Ok(url) => url,
        Err(why) => {
            tracing::warn!(delivery_id = %delivery.id, endpoint_id = %endpoint.id, %why, "webhook not sent: its address is not allowed");
            let now = medpay_store::now_ms();
            let outcome = AttemptOutcome {
                at_ms: now,
                status_code: None,
                error: Some("address not allowed".to_owned()),
                duration_ms: 0,
                delivered: false,
                retry_at_ms: state.config.retry_at(delivery.attempts + 1, now),
                endpoint_failures_max: state.config.endpoint_failures_max,
            };
            return state.store.record_attempt(delivery, &outcome).await;
        }
    };
    let result = state
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(&endpoint.secret, timestamp, &body))
        .header("medpay-event-id", event.id())
        .header("medpay-delivery-id", &delivery.id)
        .body(body)
        .send()
        .await;
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let now = medpay_store::now_ms();
    // The provider sees the status and a fixed reason, never what the receiver answered: the
    // body is not read at all.
    let (status_code, error) = match result {
        Ok(response) => {
            let status = response.status();
            let error = (!status.is_success()).then(|| format!("HTTP {}", status.as_u16()));
            (Some(i64::from(status.as_u16())), error)
        }
        Err(error) => (None, Some(failure_reason(&error).to_owned())),
    };
    let delivered = error.is_none();
    let outcome = AttemptOutcome {
        at_ms: now,
        status_code,
        error,
        duration_ms,
        delivered,
        retry_at_ms: if delivered { None } else { state.config.retry_at(delivery.attempts + 1, now) },
        endpoint_failures_max: state.config.endpoint_failures_max,
    };
    if delivered {
        metrics::counter!("medpay_webhook_deliveries_total", "result" => "delivered").increment(1);
    } else {
        metrics::counter!("medpay_webhook_deliveries_total", "result" => "failed_attempt").increment(1);
        tracing::info!(delivery_id = %delivery.id, endpoint_id = %endpoint.id, attempt = delivery.attempts + 1,
            error = outcome.error.as_deref().unwrap_or(""), retry_at_ms = ?outcome.retry_at_ms, "webhook attempt failed");
    }
    state.store.record_attempt(delivery, &outcome).await
}

/// A failed request in fixed words (reqwest's own text names addresses and internals).
fn failure_reason(error: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<crate::netguard::NotAllowed>() {
            return "address not allowed";
        }
        source = cause.source();
    }
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_forgeries_and_replays() {
        let header = sign("whsec_test", 1_700_000_000, "{\"a\":1}");
        assert!(verify("whsec_test", &header, "{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify("whsec_other", &header, "{\"a\":1}", 1_700_000_010, 300), "another secret");
        assert!(!verify("whsec_test", &header, "{\"a\":2}", 1_700_000_010, 300), "another body");
        assert!(!verify("whsec_test", &header, "{\"a\":1}", 1_700_001_000, 300), "too old: a replay");
        assert!(!verify("whsec_test", "t=1,v1=zz", "{}", 1, 300));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_gives_up() {
        let config = WebhookConfig::default();
        let first = config.retry_at(1, 0).unwrap();
        assert!((24_000..=36_000).contains(&first), "{first}");
        let fifth = config.retry_at(5, 0).unwrap();
        assert!((384_000..=576_000).contains(&fifth), "16 × 30 s ± 20 %: {fifth}");
        assert!(config.retry_at(15, 0).unwrap() <= 6 * 3_600_000 * 12 / 10, "capped at 6 h + jitter");
        assert_eq!(config.retry_at(16, 0), None);
        // The schedule spans more than a day before giving up.
        let span: i64 = (1..16)
            .map(|attempt| (config.backoff_base_ms << (attempt - 1).min(30)).min(config.backoff_max_ms) as i64)
            .sum();
        assert!(span > 24 * 3_600_000, "{span}");
    }
}
