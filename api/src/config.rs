//! Configuration, from the environment, with embedded defaults that run on a fresh machine.

use medpay_actors::RuntimeConfig;
use std::net::SocketAddr;

/// Printed with its secrets (tokens, client secrets, passwords in URLs) left out: a `{:?}` of the
/// configuration in a log line must not hand them over.
#[derive(Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// `sqlite://…` (embedded default) or `postgres://…`.
    pub database_url: String,
    /// Rate limits in Redis when set, in process otherwise.
    pub redis_url: Option<String>,
    /// The event log and the reports in MongoDB when set (`mongodb://host:27017/medpay`);
    /// without it, the SQL store's tables are the log and the reports run on SQL.
    pub mongodb_url: Option<String>,
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
    /// The key of list hashes (64 hex digits, the same on every node); when unset, one is made
    /// once and kept in the database.
    pub list_key: Option<String>,
    pub runtime: RuntimeConfig,
    pub limits: Limits,
    pub money: MoneySettings,
    pub patients: PatientSettings,
}

/// The patient app and what is sent to patients.
#[derive(Clone)]
pub struct PatientSettings {
    /// The address patients reach the service at (`https://pagamentos.example.com.br`), put in
    /// sign-in links and e-mails; without it, `http://` and the bound address.
    pub public_url: Option<String>,
    /// `smtp://host:port` (plain), `smtp://host:587?tls=required` or `smtps://user:pass@host`;
    /// without it, e-mails are written to `mail_dir` as `.eml` files.
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub mail_dir: std::path::PathBuf,
    /// How often the notifier derives and sends.
    pub notify_poll_ms: u64,
    /// The first retry of a failed e-mail after this long; each next one twice as late (up to an hour).
    pub notify_retry_base_ms: u64,
    /// How often installments due soon are looked for (they change by the day).
    pub notify_due_check_ms: u64,
    /// Documents (contracts) in this folder, unless `documents_url` (`s3://bucket/prefix`) is set.
    pub documents_dir: std::path::PathBuf,
    pub documents_url: Option<String>,
    /// The object store's options (`aws_endpoint`, `aws_access_key_id`, `aws_region`, …); from
    /// the environment's `AWS_*` variables.
    pub documents_options: Vec<(String, String)>,
}

impl Default for PatientSettings {
    fn default() -> Self {
        PatientSettings {
            public_url: None,
            smtp_url: None,
            mail_from: "MedPay <nao-responda@medpay.com.br>".to_owned(),
            mail_dir: std::path::PathBuf::from("data/mail"),
            notify_poll_ms: 1_000,
            notify_retry_base_ms: 30_000,
            notify_due_check_ms: 60 * 60 * 1_000,
            documents_dir: std::path::PathBuf::from("data/documents"),
            documents_url: None,
            documents_options: Vec::new(),
        }
    }
}

impl std::fmt::Debug for PatientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatientSettings")
            .field("public_url", &self.public_url)
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("mail_from", &self.mail_from)
            .field("mail_dir", &self.mail_dir)
            .field("notify_poll_ms", &self.notify_poll_ms)
            .field("notify_retry_base_ms", &self.notify_retry_base_ms)
            .field("notify_due_check_ms", &self.notify_due_check_ms)
            .field("documents_dir", &self.documents_dir)
            .field("documents_url", &self.documents_url.as_deref().map(redact_url))
            .field("documents_options", &self.documents_options.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .finish()
    }
}

/// The payment gateways. Without `celcoin_url` (and `clicksign_url`) their sandboxes are started in
/// process, so that the embedded defaults move money end to end.
#[derive(Clone)]
pub struct MoneySettings {
    pub celcoin_url: Option<String>,
    pub celcoin_client_id: String,
    pub celcoin_client_secret: String,
    /// The platform's PIX key, that charges are made out to.
    pub celcoin_pix_key: String,
    /// The HTTP Basic credentials Celcoin's webhooks must carry.
    pub celcoin_webhook_user: String,
    pub celcoin_webhook_password: String,
    pub clicksign_url: Option<String>,
    pub clicksign_token: String,
    /// The secret of ClickSign's `Content-Hmac` webhook signatures.
    pub clicksign_webhook_secret: String,
    /// Time-out of one gateway call (retries and the breaker come on top).
    pub gateway_timeout_ms: u64,
    /// How long the circuit stays open after five gateway calls in a row failed (calls fail at
    /// once meanwhile; the sweep performs what they owed once it closes).
    pub gateway_breaker_open_ms: u64,
    pub runtime: medpay_actors::money::MoneyConfig,
}

/// What a secret prints as.
const REDACTED: &str = "[redacted]";

/// A URL with its password (if any) redacted; what is not a URL is redacted whole.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some(REDACTED));
            }
            url.to_string()
        }
        Err(_) => REDACTED.to_owned(),
    }
}

fn secret(value: &str) -> &'static str {
    if value.is_empty() { "" } else { REDACTED }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("mongodb_url", &self.mongodb_url.as_deref().map(redact_url))
            .field("admin_token", &self.admin_token.as_deref().map(secret))
            .field("analyst_token", &self.analyst_token.as_deref().map(secret))
            .field("receita_url", &self.receita_url.as_deref().map(redact_url))
            .field("receita_client_id", &self.receita_client_id)
            .field("receita_client_secret", &secret(&self.receita_client_secret))
            .field("model_path", &self.model_path)
            .field("list_key", &self.list_key.as_deref().map(secret))
            .field("runtime", &self.runtime)
            .field("limits", &self.limits)
            .field("money", &self.money)
            .field("patients", &self.patients)
            .finish()
    }
}

impl std::fmt::Debug for MoneySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoneySettings")
            .field("celcoin_url", &self.celcoin_url.as_deref().map(redact_url))
            .field("celcoin_client_id", &self.celcoin_client_id)
            .field("celcoin_client_secret", &secret(&self.celcoin_client_secret))
            .field("celcoin_pix_key", &self.celcoin_pix_key)
            .field("celcoin_webhook_user", &self.celcoin_webhook_user)
            .field("celcoin_webhook_password", &secret(&self.celcoin_webhook_password))
            .field("clicksign_url", &self.clicksign_url.as_deref().map(redact_url))
            .field("clicksign_token", &secret(&self.clicksign_token))
            .field("clicksign_webhook_secret", &secret(&self.clicksign_webhook_secret))
            .field("gateway_timeout_ms", &self.gateway_timeout_ms)
            .field("gateway_breaker_open_ms", &self.gateway_breaker_open_ms)
            .field("runtime", &self.runtime)
            .finish()
    }
}

impl MoneySettings {
    /// The retry and breaker policy of every gateway client.
    pub fn policy(&self) -> medpay_gateways::resilience::Policy {
        medpay_gateways::resilience::Policy {
            timeout_ms: self.gateway_timeout_ms,
            breaker_open_ms: self.gateway_breaker_open_ms,
            ..medpay_gateways::resilience::Policy::default()
        }
    }
}

impl Default for MoneySettings {
    fn default() -> Self {
        MoneySettings {
            celcoin_url: None,
            celcoin_client_id: "medpay".to_owned(),
            celcoin_client_secret: String::new(),
            celcoin_pix_key: "pix@medpay.com.br".to_owned(),
            celcoin_webhook_user: "celcoin".to_owned(),
            celcoin_webhook_password: crate::auth::new_secret("whk"),
            clicksign_url: None,
            clicksign_token: crate::auth::new_secret("cst"),
            clicksign_webhook_secret: crate::auth::new_secret("css"),
            gateway_timeout_ms: 2_000,
            gateway_breaker_open_ms: medpay_gateways::resilience::Policy::default().breaker_open_ms,
            runtime: medpay_actors::money::MoneyConfig::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted.
    pub body_bytes_max: usize,
    /// Requests served at once; more wait (bounded by the request time-out).
    pub concurrency_max: usize,
    /// Requests one credential (or one client address without one) may have in flight, waiting
    /// included; past it, 503 `tenant_busy`. A quarter of `concurrency_max` by default.
    pub tenant_concurrency_max: usize,
    pub request_timeout_ms: u64,
    /// Requests per minute per API key or token.
    pub requests_per_key_per_minute: u64,
    /// Payment requests per minute per patient.
    pub payments_per_patient_per_minute: u64,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// How often the champion's drift is measured for `/metrics` (at least a second).
    pub drift_interval_ms: u64,
    /// How often a node looks for rows to export to MongoDB when the last pass found none.
    pub log_export_poll_ms: u64,
    /// How long the export to MongoDB may wait while this node's commits queue behind each other
    /// (see `export`); past it the export takes its paced share of the load.
    pub log_export_yield_max_ms: u64,
    /// A chat WebSocket with no message from the patient for this long is closed (code 4008).
    pub websocket_idle_ms: u64,
    /// Failed authentications from one client address (an IPv6 /64) in a minute; past it the
    /// address gets 429 `too_many_auth_failures` without its token being looked at.
    pub auth_failures_per_address_per_minute: u32,
    /// How long a patient's financial records (and the CPF on them) are kept after an LGPD
    /// erasure: the law's retention period for tax records (five years).
    pub retention_years: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 64 * 1024,
            concurrency_max: 1_024,
            tenant_concurrency_max: 256,
            request_timeout_ms: 10_000,
            requests_per_key_per_minute: 60_000,
            payments_per_patient_per_minute: 30,
            shutdown_grace_ms: 15_000,
            drift_interval_ms: 300_000,
            log_export_poll_ms: 500,
            log_export_yield_max_ms: 60_000,
            websocket_idle_ms: 300_000,
            auth_failures_per_address_per_minute: 30,
            retention_years: 5,
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
    /// Where patients reach the service: the configured public address, else the bound one.
    pub fn public_base(&self) -> String {
        match &self.patients.public_url {
            Some(url) => url.clone(),
            None if self.bind.ip().is_unspecified() => format!("http://127.0.0.1:{}", self.bind.port()),
            None => format!("http://{}", self.bind),
        }
    }

    /// Reads `MEDPAY_*`, `DATABASE_URL`, `REDIS_URL` and `MONGODB_URL`.
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
            mongodb_url: optional("MONGODB_URL"),
            admin_token: optional("MEDPAY_ADMIN_TOKEN"),
            analyst_token: optional("MEDPAY_ANALYST_TOKEN"),
            list_key: optional("MEDPAY_LIST_KEY"),
            receita_url: optional("RECEITA_URL"),
            receita_client_id: optional("RECEITA_CLIENT_ID").unwrap_or_else(|| "medpay".to_owned()),
            receita_client_secret: optional("RECEITA_CLIENT_SECRET").unwrap_or_default(),
            model_path: optional("MEDPAY_MODEL").map(std::path::PathBuf::from),
            runtime: RuntimeConfig {
                score_budget_ms: parsed("MEDPAY_SCORE_BUDGET_MS", defaults.score_budget_ms)?,
                idle_ms: parsed("MEDPAY_ACTOR_IDLE_MS", defaults.idle_ms)?,
                payment_rest_ms: parsed("MEDPAY_PAYMENT_REST_MS", defaults.payment_rest_ms)?,
                patient_idle_ms: parsed("MEDPAY_PATIENT_IDLE_MS", defaults.patient_idle_ms)?,
                scoring_hour: match optional("MEDPAY_SCORING_HOUR") {
                    Some(raw) => Some(raw.trim().parse::<u32>().ok().filter(|hour| *hour < 24).ok_or_else(|| {
                        ConfigError { name: "MEDPAY_SCORING_HOUR", message: "an hour from 0 to 23".to_owned() }
                    })?),
                    None => None,
                },
                webhooks: medpay_actors::outbox::WebhookConfig {
                    backoff_base_ms: parsed("MEDPAY_WEBHOOK_BACKOFF_BASE_MS", defaults.webhooks.backoff_base_ms)?,
                    poll_ms: parsed("MEDPAY_OUTBOX_POLL_MS", defaults.webhooks.poll_ms)?,
                    allow_loopback: parsed("MEDPAY_WEBHOOK_ALLOW_LOOPBACK", defaults.webhooks.allow_loopback)?,
                    ..defaults.webhooks.clone()
                },
                ..defaults
            },
            money: {
                let defaults = MoneySettings::default();
                MoneySettings {
                    celcoin_url: optional("CELCOIN_URL"),
                    celcoin_client_id: optional("CELCOIN_CLIENT_ID").unwrap_or(defaults.celcoin_client_id),
                    celcoin_client_secret: optional("CELCOIN_CLIENT_SECRET").unwrap_or_default(),
                    celcoin_pix_key: optional("CELCOIN_PIX_KEY").unwrap_or(defaults.celcoin_pix_key),
                    celcoin_webhook_user: optional("CELCOIN_WEBHOOK_USER").unwrap_or(defaults.celcoin_webhook_user),
                    celcoin_webhook_password: optional("CELCOIN_WEBHOOK_PASSWORD")
                        .unwrap_or(defaults.celcoin_webhook_password),
                    clicksign_url: optional("CLICKSIGN_URL"),
                    clicksign_token: optional("CLICKSIGN_TOKEN").unwrap_or(defaults.clicksign_token),
                    clicksign_webhook_secret: optional("CLICKSIGN_WEBHOOK_SECRET")
                        .unwrap_or(defaults.clicksign_webhook_secret),
                    gateway_timeout_ms: parsed("MEDPAY_GATEWAY_TIMEOUT_MS", defaults.gateway_timeout_ms)?,
                    gateway_breaker_open_ms: parsed(
                        "MEDPAY_GATEWAY_BREAKER_OPEN_MS",
                        defaults.gateway_breaker_open_ms,
                    )?,
                    runtime: medpay_actors::money::MoneyConfig {
                        contract_min_centavos: parsed(
                            "MEDPAY_CONTRACT_MIN_CENTAVOS",
                            defaults.runtime.contract_min_centavos,
                        )?,
                        sweep_ms: parsed("MEDPAY_MONEY_SWEEP_MS", defaults.runtime.sweep_ms)?,
                        pix_expiration_seconds: parsed(
                            "MEDPAY_PIX_EXPIRATION_SECONDS",
                            defaults.runtime.pix_expiration_seconds,
                        )?
                        .max(1),
                        ..defaults.runtime
                    },
                }
            },
            patients: {
                let defaults = PatientSettings::default();
                PatientSettings {
                    public_url: optional("MEDPAY_PUBLIC_URL").map(|url| url.trim_end_matches('/').to_owned()),
                    smtp_url: optional("MEDPAY_SMTP_URL"),
                    mail_from: optional("MEDPAY_MAIL_FROM").unwrap_or(defaults.mail_from),
                    mail_dir: optional("MEDPAY_MAIL_DIR").map_or(defaults.mail_dir, std::path::PathBuf::from),
                    notify_poll_ms: parsed("MEDPAY_NOTIFY_POLL_MS", defaults.notify_poll_ms)?,
                    notify_retry_base_ms: parsed("MEDPAY_NOTIFY_RETRY_BASE_MS", defaults.notify_retry_base_ms)?,
                    notify_due_check_ms: parsed("MEDPAY_NOTIFY_DUE_CHECK_MS", defaults.notify_due_check_ms)?,
                    documents_dir: optional("MEDPAY_DOCUMENTS_DIR")
                        .map_or(defaults.documents_dir, std::path::PathBuf::from),
                    documents_url: optional("MEDPAY_DOCUMENTS_URL"),
                    documents_options: std::env::vars()
                        .filter(|(name, value)| name.starts_with("AWS_") && !value.is_empty())
                        .map(|(name, value)| (name.to_ascii_lowercase(), value))
                        .collect(),
                }
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
                drift_interval_ms: parsed("MEDPAY_DRIFT_INTERVAL_MS", limits.drift_interval_ms)?,
                log_export_poll_ms: parsed("MEDPAY_LOG_EXPORT_POLL_MS", limits.log_export_poll_ms)?,
                log_export_yield_max_ms: parsed("MEDPAY_LOG_EXPORT_YIELD_MAX_MS", limits.log_export_yield_max_ms)?,
                websocket_idle_ms: parsed("MEDPAY_WEBSOCKET_IDLE_MS", limits.websocket_idle_ms)?,
                auth_failures_per_address_per_minute: parsed(
                    "MEDPAY_AUTH_FAILURES_PER_ADDRESS_PER_MINUTE",
                    limits.auth_failures_per_address_per_minute,
                )?,
                retention_years: parsed("MEDPAY_RETENTION_YEARS", limits.retention_years)?,
                tenant_concurrency_max: parsed("MEDPAY_TENANT_CONCURRENCY_MAX", limits.tenant_concurrency_max)?,
                ..limits
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_left_out_of_debug() {
        let mut config = Config::from_env().unwrap();
        config.database_url = "postgres://medpay:s3cr3t-db@db.internal:5432/medpay".to_owned();
        config.redis_url = Some("redis://:s3cr3t-redis@cache:6379".to_owned());
        config.admin_token = Some("mpa_s3cr3t-admin".to_owned());
        config.analyst_token = Some("s3cr3t-analyst".to_owned());
        config.receita_client_secret = "s3cr3t-receita".to_owned();
        config.money.celcoin_client_secret = "s3cr3t-celcoin".to_owned();
        config.money.celcoin_webhook_password = "s3cr3t-hook".to_owned();
        config.money.clicksign_token = "s3cr3t-clicksign".to_owned();
        config.money.clicksign_webhook_secret = "s3cr3t-hmac".to_owned();
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("db.internal:5432") && printed.contains("[redacted]"), "{printed}");
        assert_eq!(redact_url("not a url"), "[redacted]");
    }
}
