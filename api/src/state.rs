use crate::config::Config;
use crate::error::ApiError;
use medpay_actors::Runtime;
use medpay_store::{RateLimiter, Store};
use std::sync::Arc;

const MINUTE_MS: i64 = 60_000;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub limiter: Arc<RateLimiter>,
    /// Failed authentications per client address (refused before any lookup past the limit).
    pub auth_failures: Arc<crate::auth::AuthFailures>,
    /// The payment path's reads of parties and credentials, kept in memory.
    pub lookups: Arc<crate::lookups::Lookups>,
    /// Idempotency keys of the requests running now (in Redis when nodes share them).
    pub in_flight: Arc<medpay_store::InFlight>,
    pub config: Arc<Config>,
    pub admin_token: Arc<str>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The analysts' rules and lists, shared with the scorer: a change here is seen by the next
    /// decision.
    pub rules: Arc<medpay_ml::RuleBook>,
    pub lists: Arc<medpay_ml::Lists>,
    /// Receita Federal's CPF and CNPJ statuses.
    pub receita: Arc<medpay_gateways::receita::ReceitaClient>,
    /// Turns true when the server shuts down: long-lived streams end so that shutdown can finish.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Contracts and other documents (a folder, or S3).
    pub documents: Arc<medpay_actors::documents::Documents>,
    /// ClickSign, for what the edge asks of it directly (a signing link sent again).
    pub signer: Option<Arc<medpay_gateways::clicksign::ClickSignClient>>,
    /// The TUSS catalogue, when one is loaded.
    pub catalogue: Arc<crate::catalogue::Catalogue>,
    /// The event log and the reports' documents in MongoDB, when `MONGODB_URL` is set.
    pub log: Option<medpay_store::mongo::LogStore>,
}

impl AppState {
    /// Counts one request in `bucket`; refuses it past `per_minute`. When the limiter's store
    /// (Redis) fails, the request is let through and the failure logged: a rate limit protects
    /// the service and must not take it down.
    pub async fn rate_limit(&self, bucket: &str, per_minute: u64) -> Result<(), ApiError> {
        match self.limiter.hit(bucket, per_minute, MINUTE_MS, medpay_store::now_ms()).await {
            Ok(decision) if decision.allowed => Ok(()),
            Ok(decision) => Err(ApiError::rate_limited(decision.retry_after_ms)),
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable; request allowed");
                Ok(())
            }
        }
    }
}
