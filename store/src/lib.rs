//! Durable storage: SQL through sqlx (SQLite embedded, PostgreSQL in production) and the rate
//! limiter (in process, or Redis shared between nodes).
//!
//! Both engines are driven through `sqlx::Any` with the same SQL: `$N` placeholders (SQLite accepts
//! them), integers as BIGINT, timestamps as epoch milliseconds, JSON as TEXT.

pub mod analytics;
mod catalogue;
mod chat;
mod database;
mod idempotency;
pub mod log_export;
mod models;
mod money;
pub mod mongo;
mod notifications;
mod parties;
mod payments;
mod people;
mod privacy;
pub mod rate_limit;
mod raw_json;
mod reader;
mod risk;
mod sessions;
mod webhooks;
mod writer;

pub use catalogue::{CatalogueEntry, EvidenceRecord};
pub use chat::{ChatMessage, ChatTurn, ConversationRecord, ReviewCase, TRANSCRIPT_MAX};
pub use database::{Engine, Store, StoreError};
pub use idempotency::{
    Claim, ClaimError, IDEMPOTENCY_KEY_LENGTH_MAX, IDEMPOTENCY_RETENTION_MS, IdempotencyCompletion, IdempotencyRecord,
    InFlight, StoredKey,
};
pub use models::{AliasMove, MODEL_ALIASES, ModelVersionRecord, ShadowScore, TrainingExample, TrainingRun};
pub use money::{
    ChargeRecord, ChargeStatus, ContractRecord, ContractStatus, GatewayWebhook, IntentKind, IntentRecord,
    LedgerProblem, Movement, PaymentLedger, RefundKind, RefundRecord, RefundStatus,
};
pub use notifications::{NOTIFICATION_KINDS, NotificationOutcome, NotificationRecord, PreparedNotification};
pub use parties::{
    CheckoutLink, LinkOpening, PatientCredential, PatientRecord, ProviderKey, ProviderRecord,
    REVIEW_TIME_LIMIT_HOURS_DEFAULT, REVIEW_TIME_LIMIT_HOURS_MAX,
};
pub use payments::{
    DecisionRecord, EVENTS_PAGE_MAX, EventRecord, NewEvent, NewPaymentWrite, PAYMENTS_PAGE_MAX, PaymentFilter,
    PaymentRecord, REVIEW_REASON_DECISION,
};
pub use people::{AuditEntry, CaseClaim, PersonRecord, PersonToken};
pub use privacy::{ERASED_DEVICE, ERASED_IP, ERASED_NAME};
pub use rate_limit::{RateDecision, RateLimitError, RateLimiter};
pub use risk::{
    ListEntry, PatientHistoryRows, PatientPayment, ProviderPayment, REBUILD_ROWS_MAX, RuleRecord, ScoredPayment,
    Sighting, outcome_of,
};
pub use webhooks::{
    AttemptOutcome, DELIVERY_BATCH_MAX, ENDPOINT_REMOVED, WEBHOOK_ENDPOINTS_PER_PROVIDER_MAX, WebhookDelivery,
    WebhookEndpoint,
};
pub use writer::WriteReading;

use sha2::{Digest, Sha256};

/// SHA-256 in lower-case hex: how secrets (API keys, tokens) and listed values are stored.
pub fn sha256_hex(input: &[u8]) -> String {
    hex::encode(Sha256::digest(input))
}

/// The JSON text of `value` with every object's keys in sorted order: the same document whatever
/// order its fields came in. (serde_json keeps insertion order once any crate in the build turns
/// on its `preserve_order` feature, as the MongoDB driver's `bson` does, so sorting is done here.)
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(fields) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = fields.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(entries.into_iter().map(|(key, item)| (key.clone(), sorted(item))).collect())
            }
            serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let one: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"d":[{"y":2,"x":1}],"c":null}}"#).unwrap();
        let two: serde_json::Value = serde_json::from_str(r#"{"a":{"c":null,"d":[{"x":1,"y":2}]},"b":1}"#).unwrap();
        assert_eq!(super::canonical_json(&one), r#"{"a":{"c":null,"d":[{"x":1,"y":2}]},"b":1}"#);
        assert_eq!(super::canonical_json(&one), super::canonical_json(&two));
    }
}
