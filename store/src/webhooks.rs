//! Webhook endpoints and the delivery outbox.

use crate::database::{Store, StoreError};
use crate::parties::parse_column;
use crate::payments::EventRecord;
use medpay_models::{PaymentId, ProviderId};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashMap;

/// Enabled webhook endpoints one provider may have at once.
pub const WEBHOOK_ENDPOINTS_PER_PROVIDER_MAX: i64 = 10;
/// The reason an endpoint its provider removed is disabled with.
pub const ENDPOINT_REMOVED: &str = "removed by the provider";

/// Most deliveries one outbox pass picks up.
pub const DELIVERY_BATCH_MAX: i64 = 256;

/// `Debug` leaves the signing secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub provider_id: ProviderId,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub secret: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    pub cursor: i64,
    pub created_at_ms: i64,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("provider_id", &self.provider_id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("secret", &"[redacted]")
            .field("enabled", &self.enabled)
            .field("disabled_reason", &self.disabled_reason)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("cursor", &self.cursor)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

impl WebhookEndpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|wanted| wanted == event_type)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub provider_id: ProviderId,
    pub provider_seq: i64,
    pub payment_id: PaymentId,
    pub event_seq: i64,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// What one attempt to deliver came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub at_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub delivered: bool,
    /// When to try again; `None` gives up (the delivery is failed).
    pub retry_at_ms: Option<i64>,
    /// Consecutive failures at which the endpoint is disabled.
    pub endpoint_failures_max: i64,
}

const ENDPOINT_COLUMNS: &str =
    "id, provider_id, url, event_types, secret, status, disabled_reason, consecutive_failures, cursor, created_at_ms";
const DELIVERY_COLUMNS: &str = "id, endpoint_id, provider_id, provider_seq, payment_id, event_seq, event_type, status, attempts, \
     next_attempt_at_ms, last_status_code, last_error, created_at_ms, delivered_at_ms";

fn endpoint_from_row(row: &AnyRow) -> Result<WebhookEndpoint, StoreError> {
    let types: String = row.try_get("event_types")?;
    let status: String = row.try_get("status")?;
    Ok(WebhookEndpoint {
        id: row.try_get("id")?,
        provider_id: parse_column(row, "provider_id")?,
        url: row.try_get("url")?,
        event_types: serde_json::from_str(&types).map_err(StoreError::corrupt)?,
        secret: row.try_get("secret")?,
        enabled: status == "enabled",
        disabled_reason: row.try_get("disabled_reason")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        cursor: row.try_get("cursor")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<WebhookDelivery, StoreError> {
    Ok(WebhookDelivery {
        id: row.try_get("id")?,
        endpoint_id: row.try_get("endpoint_id")?,
        provider_id: parse_column(row, "provider_id")?,
        provider_seq: row.try_get("provider_seq")?,
        payment_id: parse_column(row, "payment_id")?,
        event_seq: row.try_get("event_seq")?,
        event_type: row.try_get("event_type")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        created_at_ms: row.try_get("created_at_ms")?,
        delivered_at_ms: row.try_get("delivered_at_ms")?,
    })
}

impl Store {
    /// Registers an endpoint; it receives the provider's events from now on.
    pub async fn insert_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<WebhookEndpoint, StoreError> {
        let mut transaction = self.begin_write().await?;
        let cursor: i64 = sqlx::query(
            "SELECT COALESCE((SELECT last_event_seq FROM provider_event_counters WHERE provider_id = $1), 0) AS last_event_seq
             FROM providers WHERE id = $1",
        )
            .bind(endpoint.provider_id.to_string())
            .fetch_one(&mut *transaction)
            .await?
            .try_get("last_event_seq")?;
        let enabled: i64 = sqlx::query(
            "SELECT COUNT(*) AS enabled FROM webhook_endpoints WHERE provider_id = $1 AND status = 'enabled'",
        )
        .bind(endpoint.provider_id.to_string())
        .fetch_one(&mut *transaction)
        .await?
        .try_get("enabled")?;
        if enabled >= WEBHOOK_ENDPOINTS_PER_PROVIDER_MAX {
            return Err(StoreError::Conflict("webhook endpoints"));
        }
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, provider_id, url, event_types, secret, status, consecutive_failures, cursor, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, 'enabled', 0, $6, $7)",
        )
        .bind(endpoint.id.clone())
        .bind(endpoint.provider_id.to_string())
        .bind(endpoint.url.clone())
        .bind(serde_json::to_string(&endpoint.event_types).map_err(StoreError::corrupt)?)
        .bind(endpoint.secret.clone())
        .bind(cursor)
        .bind(endpoint.created_at_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(WebhookEndpoint { cursor, enabled: true, ..endpoint.clone() })
    }

    /// Disables an endpoint for good (its provider removed it): nothing more is sent to it, its
    /// deliveries and their attempts stay readable. False when it was not found or removed already.
    pub async fn remove_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let removed = sqlx::query(
            "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2
             WHERE id = $1 AND (disabled_reason IS NULL OR disabled_reason <> $2)",
        )
        .bind(id.to_owned())
        .bind(ENDPOINT_REMOVED)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(removed == 1)
    }

    pub async fn webhook_endpoints(&self, provider: Option<ProviderId>) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE ($1 = '' OR provider_id = $1) ORDER BY created_at_ms"
        ));
        let rows =
            sqlx::query(sql).bind(provider.map(|id| id.to_string()).unwrap_or_default()).fetch_all(&self.pool).await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"));
        let row = sqlx::query(sql).bind(id.to_owned()).fetch_optional(&self.pool).await?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    /// Turns `events` (the endpoint's next ones, in order) into deliveries and moves its cursor
    /// past them, in one transaction: an event is enqueued once, even across a crash.
    pub async fn enqueue_deliveries(
        &self,
        endpoint: &WebhookEndpoint,
        events: &[EventRecord],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let Some(last) = events.last() else { return Ok(()) };
        let mut transaction = self.begin_write().await?;
        let moved = sqlx::query("UPDATE webhook_endpoints SET cursor = $2 WHERE id = $1 AND cursor = $3")
            .bind(endpoint.id.clone())
            .bind(last.provider_seq)
            .bind(endpoint.cursor)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        if moved != 1 {
            // Another pass (another node) enqueued them already.
            return Ok(());
        }
        for event in events.iter().filter(|event| endpoint.wants(&event.kind)) {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, endpoint_id, provider_id, provider_seq, payment_id, event_seq, event_type, status,
                     attempts, next_attempt_at_ms, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8) ON CONFLICT (endpoint_id, provider_seq) DO NOTHING",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(endpoint.id.clone())
            .bind(event.provider_id.to_string())
            .bind(event.provider_seq)
            .bind(event.payment_id.to_string())
            .bind(event.seq)
            .bind(event.kind.clone())
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Pending deliveries whose time has come, of enabled endpoints only, taken in turns: every
    /// endpoint's oldest first, then every endpoint's second, and so on, at most `per_endpoint`
    /// of one endpoint and `DELIVERY_BATCH_MAX` in all — so that neither a disabled endpoint's
    /// backlog nor one busy endpoint's keeps the others waiting. Each with its endpoint.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        per_endpoint: i64,
    ) -> Result<Vec<(WebhookDelivery, WebhookEndpoint)>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM (
                 SELECT d.*, ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at_ms, d.provider_seq) AS turn
                 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
                 WHERE d.status = 'pending' AND d.next_attempt_at_ms <= $1 AND e.status = 'enabled'
             ) due
             WHERE turn <= $2 ORDER BY turn, next_attempt_at_ms, endpoint_id LIMIT $3"
        ));
        let rows = sqlx::query(sql)
            .bind(now_ms)
            .bind(per_endpoint.max(1))
            .bind(DELIVERY_BATCH_MAX)
            .fetch_all(&self.pool)
            .await?;
        // Each endpoint read once per pass.
        let mut endpoints: HashMap<String, Option<WebhookEndpoint>> = HashMap::new();
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = delivery_from_row(row)?;
            if !endpoints.contains_key(&delivery.endpoint_id) {
                let endpoint = self.webhook_endpoint(&delivery.endpoint_id).await?;
                endpoints.insert(delivery.endpoint_id.clone(), endpoint);
            }
            // Enabled when the query ran; still enabled now (or skipped until it is again).
            if let Some(endpoint) = endpoints[&delivery.endpoint_id].as_ref().filter(|endpoint| endpoint.enabled) {
                due.push((delivery, endpoint.clone()));
            }
        }
        Ok(due)
    }

    /// One event of a payment.
    pub async fn event(&self, payment: PaymentId, seq: i64) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.events(payment, seq - 1, 1).await?.into_iter().find(|event| event.seq == seq))
    }

    /// Records an attempt, moves the delivery on, and keeps the endpoint's failure count; an
    /// endpoint that failed `endpoint_failures_max` times in a row is disabled.
    pub async fn record_attempt(&self, delivery: &WebhookDelivery, outcome: &AttemptOutcome) -> Result<(), StoreError> {
        let attempt = delivery.attempts + 1;
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at_ms, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (delivery_id, attempt) DO NOTHING",
        )
        .bind(delivery.id.clone())
        .bind(attempt)
        .bind(outcome.at_ms)
        .bind(outcome.status_code)
        .bind(outcome.error.clone())
        .bind(outcome.duration_ms)
        .execute(&mut *transaction)
        .await?;
        let (status, next) = match (outcome.delivered, outcome.retry_at_ms) {
            (true, _) => ("delivered", delivery.next_attempt_at_ms),
            (false, Some(retry)) => ("pending", retry),
            (false, None) => ("failed", delivery.next_attempt_at_ms),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at_ms = $4, last_status_code = $5, last_error = $6,
                 delivered_at_ms = $7 WHERE id = $1",
        )
        .bind(delivery.id.clone())
        .bind(status)
        .bind(attempt)
        .bind(next)
        .bind(outcome.status_code)
        .bind(outcome.error.clone())
        .bind(outcome.delivered.then_some(outcome.at_ms))
        .execute(&mut *transaction)
        .await?;
        if outcome.delivered {
            sqlx::query("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1")
                .bind(delivery.endpoint_id.clone())
                .execute(&mut *transaction)
                .await?;
        } else {
            sqlx::query(
                "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1,
                     status = CASE WHEN consecutive_failures + 1 >= $2 THEN 'disabled' ELSE status END,
                     disabled_reason = CASE WHEN consecutive_failures + 1 >= $2 THEN $3 ELSE disabled_reason END
                 WHERE id = $1",
            )
            .bind(delivery.endpoint_id.clone())
            .bind(outcome.endpoint_failures_max)
            .bind(format!("{} consecutive failed deliveries", outcome.endpoint_failures_max))
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// An endpoint's deliveries, newest first.
    pub async fn webhook_deliveries(&self, endpoint: &str, limit: i64) -> Result<Vec<WebhookDelivery>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY provider_seq DESC LIMIT $2"
        ));
        let rows = sqlx::query(sql).bind(endpoint.to_owned()).bind(limit.clamp(1, 500)).fetch_all(&self.pool).await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// Sends a delivery again (failed or not): pending from now. False when there is none.
    pub async fn resend_delivery(&self, endpoint: &str, delivery: &str, now_ms: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $3 WHERE endpoint_id = $1 AND id = $2",
        )
        .bind(endpoint.to_owned())
        .bind(delivery.to_owned())
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }
}
