//! The patient app's sign-in: single-use codes that expire within minutes, exchanged for sessions
//! that expire within hours (migration 0021). Only hashes are stored.

use crate::database::{Store, StoreError};
use crate::parties::PatientCredential;
use medpay_models::ProviderId;

impl Store {
    /// A sign-in code for `patient`, valid until `expires_at_ms`; the session it opens is scoped
    /// to `provider` when a provider made the link.
    pub async fn insert_sign_in_code(
        &self,
        code_hash: &str,
        patient: PatientCredential,
        created_by: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO patient_sign_in_codes (code_hash, patient_id, provider_id, created_by, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(code_hash.to_owned())
        .bind(patient.patient.to_string())
        .bind(patient.provider.map(|provider: ProviderId| provider.to_string()))
        .bind(created_by.to_owned())
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends a sign-in code and opens a session with `session_hash` in the same commit: a code
    /// works once, before it expires, for a patient who was not erased (for a provider's code: not
    /// erased as that provider sees them, i.e. not since it registered them). None when it does
    /// not (nothing changes).
    pub async fn exchange_sign_in_code(
        &self,
        code_hash: &str,
        session_hash: &str,
        now_ms: i64,
        session_expires_at_ms: i64,
    ) -> Result<Option<PatientCredential>, StoreError> {
        let mut transaction = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE patient_sign_in_codes SET used_at_ms = $1
             WHERE code_hash = $2 AND used_at_ms IS NULL AND expires_at_ms > $1
               AND (patient_id IN (SELECT id FROM patients WHERE erased_at_ms IS NULL)
                    OR EXISTS (SELECT 1 FROM provider_patients l
                               WHERE l.provider_id = patient_sign_in_codes.provider_id
                                 AND l.patient_id = patient_sign_in_codes.patient_id AND l.name IS NOT NULL))
             RETURNING patient_id, provider_id",
        )
        .bind(now_ms)
        .bind(code_hash.to_owned())
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            transaction.rollback().await?;
            return Ok(None);
        };
        let credential = PatientCredential::from_row(&row)?;
        sqlx::query(
            "INSERT INTO patient_sessions (token_hash, patient_id, provider_id, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(session_hash.to_owned())
        .bind(credential.patient.to_string())
        .bind(credential.provider.map(|provider| provider.to_string()))
        .bind(now_ms)
        .bind(session_expires_at_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(credential))
    }

    /// The patient of a live session (not expired, not revoked), and its scope.
    pub async fn patient_by_session_hash(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<PatientCredential>, StoreError> {
        let row = sqlx::query(
            "SELECT patient_id, provider_id FROM patient_sessions
             WHERE token_hash = $1 AND expires_at_ms > $2 AND revoked_at_ms IS NULL",
        )
        .bind(token_hash.to_owned())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(PatientCredential::from_row).transpose()
    }

    /// Ends a session (signing out). False when it was not live.
    pub async fn revoke_session(&self, token_hash: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE patient_sessions SET revoked_at_ms = $1 WHERE token_hash = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(token_hash.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
