//! The TUSS catalogue (migration 0023): replaced whole, in one transaction, by an import.

use crate::database::{Store, StoreError};
use sqlx::Row;

const VERSION_SETTING: &str = "tuss_catalogue_version";
/// Rows per INSERT statement (5 parameters each: well under SQLite's and PostgreSQL's limits).
const INSERT_ROWS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueEntry {
    pub code: String,
    pub term: String,
    pub table_code: String,
    /// ISO dates; empty when open-ended.
    pub valid_from: String,
    pub valid_until: String,
}

impl Store {
    /// Replaces the catalogue with `entries` (all or nothing) and gives it a new version;
    /// `progress` is told how many rows are written so far.
    pub async fn replace_catalogue(
        &self,
        entries: &[CatalogueEntry],
        version: &str,
        mut progress: impl FnMut(usize),
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM tuss_catalogue").execute(&mut *transaction).await?;
        let mut written = 0;
        for chunk in entries.chunks(INSERT_ROWS) {
            let mut sql =
                String::from("INSERT INTO tuss_catalogue (code, term, table_code, valid_from, valid_until) VALUES ");
            for index in 0..chunk.len() {
                let base = index * 5;
                if index > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${}, ${})", base + 1, base + 2, base + 3, base + 4, base + 5));
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for entry in chunk {
                query = query
                    .bind(entry.code.clone())
                    .bind(entry.term.clone())
                    .bind(entry.table_code.clone())
                    .bind(entry.valid_from.clone())
                    .bind(entry.valid_until.clone());
            }
            query.execute(&mut *transaction).await?;
            written += chunk.len();
            progress(written);
        }
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2")
            .bind(VERSION_SETTING)
            .bind(version.to_owned())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The loaded catalogue's version; none before the first import.
    pub async fn catalogue_version(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(VERSION_SETTING)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("value")).transpose()?)
    }

    /// The whole catalogue (tens of thousands of rows; read when its version changes).
    pub async fn catalogue(&self) -> Result<Vec<CatalogueEntry>, StoreError> {
        let rows = sqlx::query("SELECT code, term, table_code, valid_from, valid_until FROM tuss_catalogue")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(CatalogueEntry {
                    code: row.try_get("code")?,
                    term: row.try_get("term")?,
                    table_code: row.try_get("table_code")?,
                    valid_from: row.try_get("valid_from")?,
                    valid_until: row.try_get("valid_until")?,
                })
            })
            .collect()
    }
}

impl Store {
    /// Replaces a provider's price list (all or nothing), with its audit entry in the same commit.
    pub async fn replace_provider_prices(
        &self,
        provider: medpay_models::ProviderId,
        prices: &[(String, i64)],
        now_ms: i64,
        audit: &crate::people::AuditEntry,
    ) -> Result<(), StoreError> {
        let mut transaction = self.begin_write().await?;
        sqlx::query("DELETE FROM provider_prices WHERE provider_id = $1")
            .bind(provider.to_string())
            .execute(&mut *transaction)
            .await?;
        for chunk in prices.chunks(INSERT_ROWS) {
            let mut sql = String::from(
                "INSERT INTO provider_prices (provider_id, tuss_code, price_centavos, updated_at_ms) VALUES ",
            );
            for index in 0..chunk.len() {
                let base = index * 4;
                if index > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${})", base + 1, base + 2, base + 3, base + 4));
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (code, price) in chunk {
                query = query.bind(provider.to_string()).bind(code.clone()).bind(*price).bind(now_ms);
            }
            query.execute(&mut *transaction).await?;
        }
        crate::people::insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// A provider's price list, by code.
    pub async fn provider_prices(&self, provider: medpay_models::ProviderId) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tuss_code, price_centavos FROM provider_prices WHERE provider_id = $1 ORDER BY tuss_code",
        )
        .bind(provider.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get("tuss_code")?, row.try_get("price_centavos")?))).collect()
    }
}

/// A file of evidence for a disputed payment (migration 0026).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRecord {
    pub id: String,
    pub payment_id: medpay_models::PaymentId,
    pub content_type: String,
    pub bytes: i64,
    pub sha256: String,
    pub uploaded_by: String,
    pub created_at_ms: i64,
}

impl Store {
    pub async fn insert_evidence(&self, evidence: &EvidenceRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dispute_evidence (id, payment_id, content_type, bytes, sha256, uploaded_by, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(evidence.id.clone())
        .bind(evidence.payment_id.to_string())
        .bind(evidence.content_type.clone())
        .bind(evidence.bytes)
        .bind(evidence.sha256.clone())
        .bind(evidence.uploaded_by.clone())
        .bind(evidence.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A payment's evidence, oldest first.
    pub async fn evidence(&self, payment: medpay_models::PaymentId) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, payment_id, content_type, bytes, sha256, uploaded_by, created_at_ms FROM dispute_evidence
             WHERE payment_id = $1 ORDER BY created_at_ms, id LIMIT 100",
        )
        .bind(payment.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(EvidenceRecord {
                    id: row.try_get("id")?,
                    payment_id: crate::parties::parse_column(row, "payment_id")?,
                    content_type: row.try_get("content_type")?,
                    bytes: row.try_get("bytes")?,
                    sha256: row.try_get("sha256")?,
                    uploaded_by: row.try_get("uploaded_by")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect()
    }
}
