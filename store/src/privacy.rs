//! LGPD: what is held about a patient, and erasing it. Financial records (payments, installments,
//! charges, refunds, ledger entries) and the CPF on them are kept for the retention period the law
//! sets; every other personal field is overwritten, and the chats are deleted.

use crate::database::{Store, StoreError};
use crate::people::{AuditEntry, insert_audit};
use medpay_models::PatientId;
use sqlx::Row;

/// What an erasure puts where a personal field was.
pub const ERASED_NAME: &str = "Titular removido";
pub const ERASED_DEVICE: &str = "removido";
pub const ERASED_IP: &str = "0.0.0.0";

impl Store {
    /// The ids of the patient's conversations, oldest first.
    pub async fn patient_conversations(&self, patient: PatientId) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM chat_conversations WHERE patient_id = $1 ORDER BY created_at_ms, id")
            .bind(patient.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get::<String, _>("id")?)).collect()
    }

    /// Erases the patient's personal data in one transaction with its audit entry: name, e-mail
    /// and phone overwritten, the token replaced by `token_hash` (of a secret nobody holds), the
    /// devices and addresses of their payments overwritten, their chat messages deleted and what
    /// the bot remembered cleared, the providers' own copies of their name, e-mail and phone
    /// cleared and the tokens shown to them deleted. Returns the hashes of the tokens that stopped
    /// working; none when there is no such patient or it was erased before.
    pub async fn erase_patient(
        &self,
        patient: PatientId,
        token_hash: &str,
        audit: &AuditEntry,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let id = patient.to_string();
        let mut transaction = self.begin_write().await?;
        let old = sqlx::query("SELECT token_hash FROM patients WHERE id = $1 AND erased_at_ms IS NULL")
            .bind(id.clone())
            .fetch_optional(&mut *transaction)
            .await?;
        let Some(old) = old else {
            transaction.rollback().await?;
            return Ok(None);
        };
        let mut old: Vec<String> = vec![old.try_get("token_hash")?];
        let scoped = sqlx::query("SELECT token_hash FROM patient_tokens WHERE patient_id = $1")
            .bind(id.clone())
            .fetch_all(&mut *transaction)
            .await?;
        for row in &scoped {
            old.push(row.try_get("token_hash")?);
        }
        let erased = sqlx::query(
            "UPDATE patients SET name = $1, email = '', phone = '', token_hash = $2, erased_at_ms = $3
             WHERE id = $4 AND erased_at_ms IS NULL",
        )
        .bind(ERASED_NAME)
        .bind(token_hash.to_owned())
        .bind(audit.at_ms)
        .bind(id.clone())
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if erased == 0 {
            transaction.rollback().await?;
            return Ok(None);
        }
        sqlx::query("UPDATE payments SET device_id = $1, ip = $2 WHERE patient_id = $3")
            .bind(ERASED_DEVICE)
            .bind(ERASED_IP)
            .bind(id.clone())
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "DELETE FROM chat_messages WHERE conversation_id IN (SELECT id FROM chat_conversations WHERE patient_id = $1)",
        )
        .bind(id.clone())
        .execute(&mut *transaction)
        .await?;
        // The app's sign-in codes, sessions, notifications and the tokens shown to providers go:
        // nobody signs in as an erased patient, and nothing is written to them again.
        for table in ["patient_sign_in_codes", "patient_sessions", "patient_notifications", "patient_tokens"] {
            let sql = sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE patient_id = $1"));
            sqlx::query(sql).bind(id.clone()).execute(&mut *transaction).await?;
        }
        sqlx::query("UPDATE provider_patients SET name = NULL, email = NULL, phone = NULL WHERE patient_id = $1")
            .bind(id.clone())
            .execute(&mut *transaction)
            .await?;
        // The conversations stay as ids (review cases name them); nothing said in them does.
        sqlx::query("UPDATE chat_conversations SET slots = '{}', handoff_reason = NULL WHERE patient_id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        insert_audit(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(Some(old))
    }
}
