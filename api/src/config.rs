//! Configuration, from the environment, with embedded defaults that run on a fresh machine.

use medpay_actors::RuntimeConfig;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// `sqlite://…` (embedded default) or `postgres://…`.
    pub database_url: String,
    /// Rate limits in Redis when set, in process otherwise.
    pub redis_url: Option<String>,
    /// The admin bearer token; generated at start when not configured.
    pub admin_token: Option<String>,
    /// The risk analysts' bearer token; without it only the admin reaches the analyst endpoints.
    pub analyst_token: Option<String>,
    /// Receita Federal (Serpro-shaped API); when unset, the sandbox is started in process.
    pub receita_url: Option<String>,
    pub receita_client_id: String,
    pub receita_client_secret: String,
    /// A model artefact to score with instead of the bundled one.
    pub model_path: Option<std::path::PathBuf>,
    pub runtime: RuntimeConfig,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted.
    pub body_bytes_max: usize,
    /// Requests served at once; more wait (bounded by the request time-out).
    pub concurrency_max: usize,
    pub request_timeout_ms: u64,
    /// Requests per minute per API key or token.
    pub requests_per_key_per_minute: u64,
    /// Payment requests per minute per patient.
    pub payments_per_patient_per_minute: u64,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 64 * 1024,
            concurrency_max: 1_024,
            request_timeout_ms: 10_000,
            requests_per_key_per_minute: 60_000,
            payments_per_patient_per_minute: 30,
            shutdown_grace_ms: 15_000,
        }
    }
}

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/medpay.db";

#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    name: &'static str,
    message: String,
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(raw) if !raw.trim().is_empty() => {
            raw.trim().parse().map_err(|error: T::Err| ConfigError { name, message: error.to_string() })
        }
        _ => Ok(default),
    }
}

fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

impl Config {
    /// Reads `MEDPAY_*`, `DATABASE_URL` and `REDIS_URL`.
    pub fn from_env() -> Result<Config, ConfigError> {
        let defaults = RuntimeConfig::default();
        let limits = Limits::default();
        Ok(Config {
            bind: parsed(
                "MEDPAY_BIND",
                DEFAULT_BIND.parse().map_err(|_| ConfigError { name: "MEDPAY_BIND", message: "bad default".into() })?,
            )?,
            database_url: optional("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            redis_url: optional("REDIS_URL"),
            admin_token: optional("MEDPAY_ADMIN_TOKEN"),
            analyst_token: optional("MEDPAY_ANALYST_TOKEN"),
            receita_url: optional("RECEITA_URL"),
            receita_client_id: optional("RECEITA_CLIENT_ID").unwrap_or_else(|| "medpay".to_owned()),
            receita_client_secret: optional("RECEITA_CLIENT_SECRET").unwrap_or_default(),
            model_path: optional("MEDPAY_MODEL").map(std::path::PathBuf::from),
            runtime: RuntimeConfig {
                score_budget_ms: parsed("MEDPAY_SCORE_BUDGET_MS", defaults.score_budget_ms)?,
                idle_ms: parsed("MEDPAY_ACTOR_IDLE_MS", defaults.idle_ms)?,
                webhooks: medpay_actors::outbox::WebhookConfig {
                    backoff_base_ms: parsed("MEDPAY_WEBHOOK_BACKOFF_BASE_MS", defaults.webhooks.backoff_base_ms)?,
                    poll_ms: parsed("MEDPAY_OUTBOX_POLL_MS", defaults.webhooks.poll_ms)?,
                    ..defaults.webhooks.clone()
                },
                ..defaults
            },
            limits: Limits {
                requests_per_key_per_minute: parsed(
                    "MEDPAY_REQUESTS_PER_KEY_PER_MINUTE",
                    limits.requests_per_key_per_minute,
                )?,
                payments_per_patient_per_minute: parsed(
                    "MEDPAY_PAYMENTS_PER_PATIENT_PER_MINUTE",
                    limits.payments_per_patient_per_minute,
                )?,
                ..limits
            },
        })
    }
}
