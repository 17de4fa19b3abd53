//! Idempotency keys with Stripe's semantics. A key is claimed ('started') in its own committed
//! transaction before the request runs, so a concurrent duplicate sees it; the response is written
//! ('completed') in the same transaction as the request's effects, so a crash leaves either both
//! or neither. A 'started' key whose lock is older than the request time-out therefore has no
//! effects anywhere and may be claimed again.

use crate::database::{Store, StoreError};
use sqlx::Row;

/// Keys are kept for the dispute window (chargebacks arrive for months), not a day.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 180 * 24 * 60 * 60 * 1_000;
/// A started key older than this is abandoned (its request died before committing anything).
/// Well above the HTTP request time-out, so a live request never loses its key.
pub const IDEMPOTENCY_LOCK_TIMEOUT_MS: i64 = 60_000;
/// Longest key accepted.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// Who sent the key (keys of different callers never collide).
    pub scope: String,
    pub key: String,
    /// SHA-256 of the canonical request.
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is ours: run the request. `locked_at_ms` identifies this claim: only it can
    /// complete the key, so a request that outlived its lock cannot write a second response.
    Started { locked_at_ms: i64 },
    /// The request already ran: send exactly this.
    Replay { status: u16, body: String },
    /// The key was used with another request.
    Mismatch,
    /// The same request is running right now.
    InProgress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyCompletion {
    pub scope: String,
    pub key: String,
    /// The claim that completes the key (see `IdempotencyBegin::Started`).
    pub locked_at_ms: i64,
    pub status: u16,
    pub body: String,
}

impl Store {
    pub async fn idempotency_begin(
        &self,
        claim: &IdempotencyClaim,
        now_ms: i64,
    ) -> Result<IdempotencyBegin, StoreError> {
        let mut transaction = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, state, locked_at_ms, created_at_ms, expires_at_ms)
             VALUES ($1, $2, $3, 'started', $4, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(claim.scope.clone())
        .bind(claim.key.clone())
        .bind(claim.request_hash.clone())
        .bind(now_ms)
        .bind(now_ms + IDEMPOTENCY_RETENTION_MS)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if inserted == 1 {
            transaction.commit().await?;
            return Ok(IdempotencyBegin::Started { locked_at_ms: now_ms });
        }
        let row = sqlx::query(
            "SELECT request_hash, state, response_status, response_body, locked_at_ms, expires_at_ms
             FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(claim.scope.clone())
        .bind(claim.key.clone())
        .fetch_one(&mut *transaction)
        .await?;
        let request_hash: String = row.try_get("request_hash")?;
        let state: String = row.try_get("state")?;
        let locked_at_ms: i64 = row.try_get("locked_at_ms")?;
        let expires_at_ms: i64 = row.try_get("expires_at_ms")?;
        let expired = expires_at_ms <= now_ms;
        let abandoned = state == "started" && locked_at_ms + IDEMPOTENCY_LOCK_TIMEOUT_MS <= now_ms;
        if expired || (abandoned && request_hash == claim.request_hash) {
            sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $3, state = 'started', response_status = NULL,
                     response_body = NULL, locked_at_ms = $4, created_at_ms = $4, expires_at_ms = $5
                 WHERE scope = $1 AND key = $2",
            )
            .bind(claim.scope.clone())
            .bind(claim.key.clone())
            .bind(claim.request_hash.clone())
            .bind(now_ms)
            .bind(now_ms + IDEMPOTENCY_RETENTION_MS)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            return Ok(IdempotencyBegin::Started { locked_at_ms: now_ms });
        }
        transaction.commit().await?;
        if request_hash != claim.request_hash {
            return Ok(IdempotencyBegin::Mismatch);
        }
        if state == "completed" {
            let status: i64 = row.try_get("response_status")?;
            let body: String = row.try_get("response_body")?;
            let status = u16::try_from(status).map_err(StoreError::corrupt)?;
            return Ok(IdempotencyBegin::Replay { status, body });
        }
        Ok(IdempotencyBegin::InProgress)
    }

    /// Gives a started key back when its request failed before any effect: a retry may run.
    pub async fn idempotency_release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'started'")
            .bind(scope.to_owned())
            .bind(key.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes keys past their retention. Returns how many.
    pub async fn purge_idempotency_keys(&self, now_ms: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }
}

/// Records the response of a started key, inside the transaction of the request's effects.
pub(crate) async fn complete(
    connection: &mut sqlx::AnyConnection,
    completion: &IdempotencyCompletion,
) -> Result<(), StoreError> {
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET state = 'completed', response_status = $3, response_body = $4
         WHERE scope = $1 AND key = $2 AND state = 'started' AND locked_at_ms = $5",
    )
    .bind(completion.scope.clone())
    .bind(completion.key.clone())
    .bind(i64::from(completion.status))
    .bind(completion.body.clone())
    .bind(completion.locked_at_ms)
    .execute(connection)
    .await?
    .rows_affected();
    if updated != 1 {
        // Someone else owns the key now: refusing rolls back the effects, so nothing is doubled.
        return Err(StoreError::Conflict("idempotency key"));
    }
    Ok(())
}
