//! The SQL side of the event log's export to MongoDB: the outbox that triggers fill in the same
//! commit as each change (migrations 0027 and 0028: one row appended per change, nothing looked
//! up), claimed in bounded batches under a lease, and the documents the claimed rows stand for,
//! read fresh from the tables at export time (a payment changed three times in one batch's rows
//! is read and exported once, as it is now).

use crate::analytics::{PaymentFact, facts_sql};
use crate::database::{Store, StoreError};
use crate::raw_json::json_to_bson;
use mongodb::bson::{RawBson, RawDocumentBuf, rawdoc};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::{BTreeMap, BTreeSet};

/// Most outbox rows one pass claims (a payment has four or five: its events and its decision).
pub const LOG_EXPORT_BATCH_MAX: i64 = 1_000;
/// How long a claimed batch is kept from the other nodes.
pub const LOG_EXPORT_LEASE_MS: i64 = 30_000;

/// What an outbox row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExportKind {
    /// A payment: its analytics facts, its events and its decisions.
    Payment,
    GatewayWebhook,
    ChatMessage,
    Audit,
}

impl ExportKind {
    pub const ALL: [ExportKind; 4] =
        [ExportKind::Payment, ExportKind::GatewayWebhook, ExportKind::ChatMessage, ExportKind::Audit];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Payment => "payment",
            ExportKind::GatewayWebhook => "gateway_webhook",
            ExportKind::ChatMessage => "chat_message",
            ExportKind::Audit => "audit",
        }
    }

    fn parse(text: &str) -> Option<ExportKind> {
        ExportKind::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One claimed outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub kind: ExportKind,
    /// The thing's key: a payment id, `gateway:webhook_id`, `conversation:seq` or an audit id.
    pub reference: String,
}

/// The documents of one batch, by MongoDB collection, and the ids whose source is gone.
#[derive(Debug, Default)]
pub struct ExportDocuments {
    pub documents: BTreeMap<&'static str, Vec<RawDocumentBuf>>,
    pub removed: BTreeMap<&'static str, Vec<String>>,
}

impl ExportDocuments {
    fn add(&mut self, collection: &'static str, document: RawDocumentBuf) {
        self.documents.entry(collection).or_default().push(document);
    }

    fn remove(&mut self, collection: &'static str, id: String) {
        self.removed.entry(collection).or_default().push(id);
    }

    pub fn count(&self) -> usize {
        self.documents.values().map(Vec::len).sum::<usize>() + self.removed.values().map(Vec::len).sum::<usize>()
    }
}

/// The MongoDB collections the export writes.
pub const COLLECTION_PAYMENTS: &str = "payments";
pub const COLLECTION_EVENTS: &str = "events";
pub const COLLECTION_DECISIONS: &str = "decisions";
pub const COLLECTION_GATEWAY_WEBHOOKS: &str = "gateway_webhooks";
pub const COLLECTION_CHAT_MESSAGES: &str = "chat_messages";
pub const COLLECTION_AUDIT: &str = "audit";

fn placeholders(from: usize, count: usize) -> String {
    (from..from + count).map(|index| format!("${index}")).collect::<Vec<_>>().join(", ")
}

/// A TEXT column that holds JSON, as BSON (kept as text if it is not JSON); see `raw_json`.
fn json_column(row: &AnyRow, column: &str) -> Result<RawBson, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    Ok(match text {
        None => RawBson::Null,
        Some(text) => json_to_bson(&text).unwrap_or(RawBson::String(text)),
    })
}

/// A nullable column as BSON.
fn or_null<T: Into<RawBson>>(value: Option<T>) -> RawBson {
    value.map_or(RawBson::Null, Into::into)
}

impl Store {
    /// Turns the export on or off for every node writing this database: while it is off the
    /// triggers add nothing (the embedded default pays nothing for it).
    pub async fn set_log_export(&self, on: bool) -> Result<(), StoreError> {
        let sql = if on {
            "INSERT INTO settings (name, value) VALUES ('log_export', 'on') ON CONFLICT (name) DO NOTHING"
        } else {
            "DELETE FROM settings WHERE name = 'log_export'"
        };
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    /// Rows waiting to be exported (claimed or not), counted from the oldest to the newest: two
    /// lookups of the primary key, where a `COUNT(*)` read the whole table (22 ms at 850,000 rows
    /// here, every half second while the export waited out a load). Exact while the rows waiting
    /// are one run of seqs, as one node claiming in seq order leaves them; an upper bound when
    /// another node has exported rows inside the run or, on PostgreSQL, a rolled-back commit
    /// left a gap in the sequence.
    pub async fn log_export_backlog(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE((SELECT MAX(seq) FROM log_outbox) - (SELECT MIN(seq) FROM log_outbox) + 1, 0) AS n",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Claims up to `limit` rows no other node holds, oldest first, until `now_ms + lease`.
    pub async fn claim_log_export(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let query = sqlx::query(
            "UPDATE log_outbox SET lease_until_ms = $1
             WHERE seq IN (SELECT seq FROM log_outbox WHERE lease_until_ms <= $2 ORDER BY seq LIMIT $3)
               AND lease_until_ms <= $2
             RETURNING seq, kind, ref",
        )
        .bind(now_ms + LOG_EXPORT_LEASE_MS)
        .bind(now_ms)
        .bind(limit.clamp(1, LOG_EXPORT_BATCH_MAX));
        let rows = self.fetch_rows(query).await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                Ok(OutboxRow {
                    seq: row.try_get("seq")?,
                    kind: ExportKind::parse(&kind)
                        .ok_or_else(|| StoreError::corrupt(format!("outbox kind {kind:?}")))?,
                    reference: row.try_get("ref")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|row| row.seq);
        Ok(claimed)
    }

    /// The batch is in MongoDB: its rows go, in one statement. A change made since the claim is a
    /// row of its own (the outbox only grows by appending), which stays for the next pass.
    pub async fn complete_log_export(&self, rows: &[OutboxRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!("DELETE FROM log_outbox WHERE seq IN ({})", placeholders(1, rows.len()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in rows {
            query = query.bind(row.seq);
        }
        self.execute_rows(query).await?;
        Ok(())
    }

    /// The export failed: the rows are another pass's to try, after `retry_at_ms`.
    pub async fn release_log_export(&self, rows: &[OutboxRow], retry_at_ms: i64) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!("UPDATE log_outbox SET lease_until_ms = $1 WHERE seq IN ({})", placeholders(2, rows.len()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(retry_at_ms);
        for row in rows {
            query = query.bind(row.seq);
        }
        self.execute_rows(query).await?;
        Ok(())
    }

    /// The documents the claimed rows stand for, read as they are now.
    pub async fn log_export_documents(&self, rows: &[OutboxRow]) -> Result<ExportDocuments, StoreError> {
        let mut documents = ExportDocuments::default();
        // Each thing once, however many of the batch's rows name it.
        let of = |kind: ExportKind| -> Vec<String> {
            let named: BTreeSet<&str> =
                rows.iter().filter(|row| row.kind == kind).map(|row| row.reference.as_str()).collect();
            named.into_iter().map(str::to_owned).collect()
        };
        self.export_payments(&of(ExportKind::Payment), &mut documents).await?;
        self.export_gateway_webhooks(&of(ExportKind::GatewayWebhook), &mut documents).await?;
        self.export_chat_messages(&of(ExportKind::ChatMessage), &mut documents).await?;
        self.export_audit(&of(ExportKind::Audit), &mut documents).await?;
        Ok(documents)
    }

    async fn export_payments(&self, ids: &[String], documents: &mut ExportDocuments) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = placeholders(1, ids.len());
        for fact in self.payment_facts_where(&format!("p.id IN ({list})"), ids).await? {
            documents.add(COLLECTION_PAYMENTS, fact.document());
        }
        let sql = format!(
            "SELECT payment_id, provider_id, seq, provider_seq, kind, data, created_at_ms FROM events
             WHERE payment_id IN ({list}) ORDER BY payment_id, seq"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.clone());
        }
        for row in self.fetch_rows(query).await? {
            let payment: String = row.try_get("payment_id")?;
            let seq: i64 = row.try_get("seq")?;
            documents.add(
                COLLECTION_EVENTS,
                rawdoc! {
                    "_id": format!("{payment}.{seq}"),
                    "payment_id": payment,
                    "provider_id": row.try_get::<String, _>("provider_id")?,
                    "seq": seq,
                    "provider_seq": or_null(row.try_get::<Option<i64>, _>("provider_seq")?),
                    "type": row.try_get::<String, _>("kind")?,
                    "data": json_column(&row, "data")?,
                    "at_ms": row.try_get::<i64, _>("created_at_ms")?,
                },
            );
        }
        let sql = format!(
            "SELECT d.id, d.payment_id, p.provider_id, d.outcome, d.score, d.reasons, d.rules_hit, d.model_version,
                    d.latency_us, d.features, d.shadow_model_version, d.shadow_score, d.created_at_ms
             FROM decisions d JOIN payments p ON p.id = d.payment_id WHERE d.payment_id IN ({list})"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.clone());
        }
        for row in self.fetch_rows(query).await? {
            documents.add(
                COLLECTION_DECISIONS,
                rawdoc! {
                    "_id": row.try_get::<String, _>("id")?,
                    "payment_id": row.try_get::<String, _>("payment_id")?,
                    "provider_id": row.try_get::<String, _>("provider_id")?,
                    "outcome": row.try_get::<String, _>("outcome")?,
                    "score": row.try_get::<i64, _>("score")?,
                    "reasons": json_column(&row, "reasons")?,
                    "rules_hit": json_column(&row, "rules_hit")?,
                    "model_version": row.try_get::<String, _>("model_version")?,
                    "latency_us": row.try_get::<i64, _>("latency_us")?,
                    "features": json_column(&row, "features")?,
                    "shadow_model_version": or_null(row.try_get::<Option<String>, _>("shadow_model_version")?),
                    "shadow_score": or_null(row.try_get::<Option<i64>, _>("shadow_score")?),
                    "at_ms": row.try_get::<i64, _>("created_at_ms")?,
                },
            );
        }
        Ok(())
    }

    async fn export_gateway_webhooks(
        &self,
        refs: &[String],
        documents: &mut ExportDocuments,
    ) -> Result<(), StoreError> {
        let wanted: BTreeSet<(String, String)> = refs
            .iter()
            .filter_map(|reference| reference.split_once(':'))
            .map(|(gateway, id)| (gateway.to_owned(), id.to_owned()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let gateways: BTreeSet<&String> = wanted.iter().map(|(gateway, _)| gateway).collect();
        let ids: BTreeSet<&String> = wanted.iter().map(|(_, id)| id).collect();
        let sql = format!(
            "SELECT gateway, webhook_id, payment_id, kind, body, state, note, received_at_ms, applied_at_ms
             FROM gateway_webhooks WHERE gateway IN ({}) AND webhook_id IN ({})",
            placeholders(1, gateways.len()),
            placeholders(1 + gateways.len(), ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for gateway in &gateways {
            query = query.bind((*gateway).clone());
        }
        for id in &ids {
            query = query.bind((*id).clone());
        }
        let mut found = BTreeSet::new();
        for row in self.fetch_rows(query).await? {
            let key: (String, String) = (row.try_get("gateway")?, row.try_get("webhook_id")?);
            if !wanted.contains(&key) {
                continue;
            }
            documents.add(
                COLLECTION_GATEWAY_WEBHOOKS,
                rawdoc! {
                    "_id": format!("{}:{}", key.0, key.1),
                    "gateway": key.0.as_str(),
                    "webhook_id": key.1.as_str(),
                    "payment_id": or_null(row.try_get::<Option<String>, _>("payment_id")?),
                    "kind": row.try_get::<String, _>("kind")?,
                    "body": json_column(&row, "body")?,
                    "state": row.try_get::<String, _>("state")?,
                    "note": row.try_get::<String, _>("note")?,
                    "received_at_ms": row.try_get::<i64, _>("received_at_ms")?,
                    "applied_at_ms": or_null(row.try_get::<Option<i64>, _>("applied_at_ms")?),
                },
            );
            found.insert(key);
        }
        for (gateway, id) in wanted.difference(&found) {
            documents.remove(COLLECTION_GATEWAY_WEBHOOKS, format!("{gateway}:{id}"));
        }
        Ok(())
    }

    async fn export_chat_messages(&self, refs: &[String], documents: &mut ExportDocuments) -> Result<(), StoreError> {
        let wanted: BTreeSet<(String, i64)> = refs
            .iter()
            .filter_map(|reference| reference.rsplit_once(':'))
            .filter_map(|(conversation, seq)| Some((conversation.to_owned(), seq.parse().ok()?)))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let conversations: BTreeSet<&String> = wanted.iter().map(|(conversation, _)| conversation).collect();
        let sql = format!(
            "SELECT m.conversation_id, c.patient_id, m.seq, m.role, m.text, m.intent, m.confidence_bps, m.created_at_ms
             FROM chat_messages m JOIN chat_conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id IN ({})",
            placeholders(1, conversations.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for conversation in &conversations {
            query = query.bind((*conversation).clone());
        }
        let mut found = BTreeSet::new();
        for row in self.fetch_rows(query).await? {
            let key: (String, i64) = (row.try_get("conversation_id")?, row.try_get("seq")?);
            if !wanted.contains(&key) {
                continue;
            }
            documents.add(
                COLLECTION_CHAT_MESSAGES,
                rawdoc! {
                    "_id": format!("{}:{}", key.0, key.1),
                    "conversation_id": key.0.as_str(),
                    "patient_id": row.try_get::<String, _>("patient_id")?,
                    "seq": key.1,
                    "role": row.try_get::<String, _>("role")?,
                    "text": row.try_get::<String, _>("text")?,
                    "intent": or_null(row.try_get::<Option<String>, _>("intent")?),
                    "confidence_bps": or_null(row.try_get::<Option<i64>, _>("confidence_bps")?),
                    "at_ms": row.try_get::<i64, _>("created_at_ms")?,
                },
            );
            found.insert(key);
        }
        for (conversation, seq) in wanted.difference(&found) {
            documents.remove(COLLECTION_CHAT_MESSAGES, format!("{conversation}:{seq}"));
        }
        Ok(())
    }

    async fn export_audit(&self, ids: &[String], documents: &mut ExportDocuments) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT id, at_ms, actor, action, target, before_json, after_json FROM audit_log WHERE id IN ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.clone());
        }
        for row in self.fetch_rows(query).await? {
            documents.add(
                COLLECTION_AUDIT,
                rawdoc! {
                    "_id": row.try_get::<String, _>("id")?,
                    "at_ms": row.try_get::<i64, _>("at_ms")?,
                    "actor": row.try_get::<String, _>("actor")?,
                    "action": row.try_get::<String, _>("action")?,
                    "target": row.try_get::<String, _>("target")?,
                    "before": json_column(&row, "before_json")?,
                    "after": json_column(&row, "after_json")?,
                },
            );
        }
        Ok(())
    }

    /// The analytics facts of the payments `filter` selects (`p` is `payments`; its `$N` are
    /// `binds`, in order).
    pub(crate) async fn payment_facts_where(
        &self,
        filter: &str,
        binds: &[String],
    ) -> Result<Vec<PaymentFact>, StoreError> {
        let sql = facts_sql(filter);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(bind.clone());
        }
        self.fetch_rows(query).await?.iter().map(PaymentFact::from_row).collect()
    }
}
