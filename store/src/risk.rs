//! What scoring reads and analysts change: rules, allow and block lists, fraud labels, and the
//! histories that rebuild the actors' feature state.

use crate::database::{Store, StoreError};
use crate::parties::parse_column;
use crate::people::{AuditEntry, insert_audit};
use medpay_models::{DecisionOutcome, ListKind, ListType, PatientId, PaymentId, PaymentStatus, ProviderId};
use sqlx::Row;

/// Most rows any rebuild query reads.
pub const REBUILD_ROWS_MAX: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRecord {
    pub id: String,
    pub name: String,
    pub source: String,
    pub action: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub list: ListType,
    pub kind: ListKind,
    pub value_hash: String,
    pub reason: String,
    pub created_at_ms: i64,
    /// Keyed (HMAC-SHA256 with the server's list key); false for entries made before the key.
    pub keyed: bool,
}

/// A payment as the patient's history needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientPayment {
    pub id: PaymentId,
    pub provider_id: ProviderId,
    pub amount_centavos: i64,
    pub status: PaymentStatus,
    pub device_id: String,
    pub ip: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientHistoryRows {
    pub recent: Vec<PatientPayment>,
    pub first_payment_at_ms: Option<i64>,
    pub providers: Vec<ProviderId>,
}

/// A payment as the provider's history needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPayment {
    pub tuss_code: String,
    pub amount_centavos: i64,
    pub outcome: DecisionOutcome,
    pub created_at_ms: i64,
}

/// A recent sighting of a device and an IP with a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub patient_id: PatientId,
    pub device_id: String,
    pub ip: String,
    pub created_at_ms: i64,
}

/// A scored payment for a backtest: its features, its score and its label if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPayment {
    pub payment_id: PaymentId,
    pub features: serde_json::Value,
    pub score: i64,
    pub is_fraud: Option<bool>,
}

/// The outcome a payment's status shows (for rebuilding rates).
pub fn outcome_of(status: PaymentStatus) -> DecisionOutcome {
    match status {
        PaymentStatus::Declined => DecisionOutcome::Decline,
        PaymentStatus::InReview => DecisionOutcome::Review,
        _ => DecisionOutcome::Approve,
    }
}

impl Store {
    /// The sum of an account's ledger entries (debit positive).
    pub async fn account_balance(&self, account: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount_centavos), 0) AS BIGINT) AS total FROM ledger_entries WHERE account = $1",
        )
        .bind(account.to_owned())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("total")?)
    }

    pub async fn rules(&self) -> Result<Vec<RuleRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, source, action, created_at_ms FROM rules WHERE deleted_at_ms IS NULL ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RuleRecord {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    source: row.try_get("source")?,
                    action: row.try_get("action")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    /// A live rule with the same name is a `Conflict("rule")`.
    /// Adds a rule, with its audit entry in the same commit.
    pub async fn insert_rule(&self, rule: &RuleRecord, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("INSERT INTO rules (id, name, source, action, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(rule.id.clone())
            .bind(rule.name.clone())
            .bind(rule.source.clone())
            .bind(rule.action.clone())
            .bind(rule.created_at_ms)
            .execute(&mut *transaction)
            .await
            .map_err(|error| StoreError::on_unique(error, "rule"))?;
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Retires a live rule, with its audit entry in the same commit; false (and no entry) when
    /// there is none with that id.
    pub async fn delete_rule(&self, id: &str, now_ms: i64, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let deleted = sqlx::query("UPDATE rules SET deleted_at_ms = $2 WHERE id = $1 AND deleted_at_ms IS NULL")
            .bind(id.to_owned())
            .bind(now_ms)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        if deleted != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(true)
    }

    pub async fn list_entries(&self) -> Result<Vec<ListEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT list, kind, value_hash, reason, created_at_ms, hash_kind FROM list_entries ORDER BY created_at_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ListEntry {
                    list: parse_column(row, "list")?,
                    kind: parse_column(row, "kind")?,
                    value_hash: row.try_get("value_hash")?,
                    reason: row.try_get("reason")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    keyed: row.try_get::<String, _>("hash_kind")? == "hmac",
                })
            })
            .collect()
    }

    /// Adds an entry, with its audit entry in the same commit; adding it again changes nothing
    /// (and is audited: the person asked).
    pub async fn add_list_entry(&self, entry: &ListEntry, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO list_entries (list, kind, value_hash, reason, created_at_ms, hash_kind) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (list, kind, value_hash) DO NOTHING",
        )
        .bind(entry.list.as_str())
        .bind(entry.kind.as_str())
        .bind(entry.value_hash.clone())
        .bind(entry.reason.clone())
        .bind(entry.created_at_ms)
        .bind(if entry.keyed { "hmac" } else { "sha256" })
        .execute(&mut *transaction)
        .await?;
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Removes an entry, with its audit entry in the same commit; false (and no entry) when
    /// there is none.
    pub async fn remove_list_entry(
        &self,
        list: ListType,
        kind: ListKind,
        value_hash: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut transaction = self.begin_write().await?;
        let removed = sqlx::query("DELETE FROM list_entries WHERE list = $1 AND kind = $2 AND value_hash = $3")
            .bind(list.as_str())
            .bind(kind.as_str())
            .bind(value_hash.to_owned())
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        if removed != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// Records (or replaces) whether a payment was fraud, with its audit entry in the same commit.
    #[allow(clippy::too_many_arguments)]
    pub async fn label_payment(
        &self,
        payment: PaymentId,
        is_fraud: bool,
        source: &str,
        note: &str,
        by: &str,
        now_ms: i64,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO payment_labels (payment_id, is_fraud, source, note, created_at_ms, labelled_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (payment_id) DO UPDATE SET is_fraud = $2, source = $3, note = $4, created_at_ms = $5,
                 labelled_by = $6",
        )
        .bind(payment.to_string())
        .bind(i64::from(is_fraud))
        .bind(source.to_owned())
        .bind(note.to_owned())
        .bind(now_ms)
        .bind(by.to_owned())
        .execute(&mut *transaction)
        .await?;
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Labels, newest first, optionally of one source (`analyst`, `chargeback`, `med`):
    /// (payment, is fraud, source, note, at).
    pub async fn labels(
        &self,
        source: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(PaymentId, bool, String, String, i64, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT payment_id, is_fraud, source, note, created_at_ms, labelled_by FROM payment_labels
             WHERE ($1 = '' OR source = $1) ORDER BY created_at_ms DESC, payment_id LIMIT $2",
        )
        .bind(source.unwrap_or_default().to_owned())
        .bind(limit.clamp(1, 500))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let fraud: i64 = row.try_get("is_fraud")?;
                Ok((
                    crate::parties::parse_column(row, "payment_id")?,
                    fraud == 1,
                    row.try_get("source")?,
                    row.try_get("note")?,
                    row.try_get("created_at_ms")?,
                    row.try_get("labelled_by")?,
                ))
            })
            .collect()
    }

    /// The most recent scored payments (their latest decision), newest first.
    pub async fn scored_payments(&self, limit: i64) -> Result<Vec<ScoredPayment>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.payment_id, d.features, d.score, l.is_fraud FROM decisions d
             LEFT JOIN payment_labels l ON l.payment_id = d.payment_id
             WHERE d.created_at_ms = (SELECT MAX(created_at_ms) FROM decisions x WHERE x.payment_id = d.payment_id)
             ORDER BY d.created_at_ms DESC LIMIT $1",
        )
        .bind(limit.clamp(1, REBUILD_ROWS_MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let features: String = row.try_get("features")?;
                let is_fraud: Option<i64> = row.try_get("is_fraud")?;
                Ok(ScoredPayment {
                    payment_id: parse_column(row, "payment_id")?,
                    features: serde_json::from_str(&features).map_err(StoreError::corrupt)?,
                    score: row.try_get("score")?,
                    is_fraud: is_fraud.map(|value| value == 1),
                })
            })
            .collect()
    }

    /// What rebuilds a patient's history: payments since `since_ms`, the first payment ever, and
    /// the providers ever paid.
    pub async fn patient_history(&self, patient: PatientId, since_ms: i64) -> Result<PatientHistoryRows, StoreError> {
        let rows = sqlx::query(
            "SELECT id, provider_id, amount_centavos, status, device_id, ip, created_at_ms FROM payments
             WHERE patient_id = $1 AND created_at_ms >= $2 ORDER BY created_at_ms LIMIT $3",
        )
        .bind(patient.to_string())
        .bind(since_ms)
        .bind(REBUILD_ROWS_MAX)
        .fetch_all(&self.pool)
        .await?;
        let recent = rows
            .iter()
            .map(|row| {
                Ok(PatientPayment {
                    id: parse_column(row, "id")?,
                    provider_id: parse_column(row, "provider_id")?,
                    amount_centavos: row.try_get("amount_centavos")?,
                    status: parse_column(row, "status")?,
                    device_id: row.try_get("device_id")?,
                    ip: row.try_get("ip")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let first = sqlx::query("SELECT MIN(created_at_ms) AS first FROM payments WHERE patient_id = $1")
            .bind(patient.to_string())
            .fetch_one(&self.pool)
            .await?;
        let providers = sqlx::query("SELECT DISTINCT provider_id FROM payments WHERE patient_id = $1 LIMIT 1000")
            .bind(patient.to_string())
            .fetch_all(&self.pool)
            .await?;
        Ok(PatientHistoryRows {
            recent,
            first_payment_at_ms: first.try_get("first")?,
            providers: providers.iter().map(|row| parse_column(row, "provider_id")).collect::<Result<_, _>>()?,
        })
    }

    /// A provider's most recent payments, newest first, at most `limit`.
    pub async fn provider_history(&self, provider: ProviderId, limit: i64) -> Result<Vec<ProviderPayment>, StoreError> {
        let rows = sqlx::query(
            "SELECT tuss_code, amount_centavos, status, created_at_ms FROM payments
             WHERE provider_id = $1 ORDER BY created_at_ms DESC LIMIT $2",
        )
        .bind(provider.to_string())
        .bind(limit.clamp(1, REBUILD_ROWS_MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let status: PaymentStatus = parse_column(row, "status")?;
                Ok(ProviderPayment {
                    tuss_code: row.try_get("tuss_code")?,
                    amount_centavos: row.try_get("amount_centavos")?,
                    outcome: outcome_of(status),
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }

    /// Devices and IPs seen with patients since `since_ms`, oldest first.
    pub async fn sightings_since(&self, since_ms: i64) -> Result<Vec<Sighting>, StoreError> {
        let rows = sqlx::query(
            "SELECT patient_id, device_id, ip, created_at_ms FROM payments WHERE created_at_ms >= $1
             ORDER BY created_at_ms LIMIT $2",
        )
        .bind(since_ms)
        .bind(REBUILD_ROWS_MAX)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Sighting {
                    patient_id: parse_column(row, "patient_id")?,
                    device_id: row.try_get("device_id")?,
                    ip: row.try_get("ip")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// The list key kept in the database (made now, by whichever node asks first, when there is
    /// none): 64 hex digits. Used only when `MEDPAY_LIST_KEY` is not set.
    pub async fn stored_list_key(&self, candidate: &str) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO settings (name, value) VALUES ('list_key', $1) ON CONFLICT (name) DO NOTHING")
            .bind(candidate.to_owned())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE name = 'list_key'").fetch_one(&self.pool).await?;
        Ok(row.try_get("value")?)
    }
}
