//! Idempotency keys with Stripe's semantics, in two parts.
//!
//! - While a request runs, its key is claimed in memory (in Redis when several nodes share the
//!   keys): a concurrent duplicate is refused at once, and nothing is written for the claim.
//! - The key's row is written in the commit of the payment it creates, naming that payment: with
//!   its response when the payment's answer is complete in that commit, else 'started', completed
//!   by the commit that records the effect the answer waits for (the first charge). A crash leaves
//!   no row (nothing was done: a retry starts afresh) or a row naming the payment (a retry resumes
//!   that payment and replays its answer), never a second payment for one key.

use crate::database::{Store, StoreError};
use crate::writer::Statement;
use medpay_models::PaymentId;
use redis::aio::ConnectionManager;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Mutex;

/// Keys are kept for the dispute window (chargebacks arrive for months), not a day.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 180 * 24 * 60 * 60 * 1_000;
/// How long an in-flight claim lives in Redis if its node dies before releasing it. Well above
/// the longest request, so a live request never loses its claim.
pub const IDEMPOTENCY_LOCK_TIMEOUT_MS: i64 = 60_000;
/// Longest key accepted.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;
/// Most requests in flight at once in one process (each holds a claim).
pub const IN_FLIGHT_CLAIMS_MAX: usize = 65_536;
/// How long a Redis claim may take before the request is refused as unavailable.
pub const IN_FLIGHT_REDIS_TIMEOUT_MS: u64 = 200;

/// The row of a key, written in its payment's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Who sent the key (keys of different callers never collide).
    pub scope: String,
    pub key: String,
    /// SHA-256 of the canonical request.
    pub request_hash: String,
    pub payment_id: PaymentId,
    /// (status, body) when the answer is complete in this commit; `None`: 'started'.
    pub response: Option<(u16, String)>,
    pub now_ms: i64,
}

/// The answer of the started key that created a payment (if it has one), written in the commit
/// that completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyCompletion {
    pub payment_id: PaymentId,
    pub status: u16,
    pub body: String,
}

/// What the store holds for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredKey {
    /// Never used (or past its retention): run the request.
    Free,
    /// The request ran: send exactly this.
    Replay { status: u16, body: String },
    /// The key was used with another request.
    Mismatch,
    /// The request made this payment and its answer was not completed (a crash): resume it.
    Unfinished { payment_id: PaymentId },
}

/// A key's row as stored.
struct KeyRow {
    request_hash: String,
    state: String,
    response_status: Option<i64>,
    response_body: Option<String>,
    payment_id: Option<String>,
    expires_at_ms: i64,
}

impl Store {
    /// The key's row, read (on SQLite by the reader thread: it is on every payment's path).
    pub async fn idempotency_lookup(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        now_ms: i64,
    ) -> Result<StoredKey, StoreError> {
        const LOOKUP: &str = "SELECT request_hash, state, response_status, response_body, payment_id, expires_at_ms
             FROM idempotency_keys WHERE scope = $1 AND key = $2";
        const LOOKUP_SQLITE: &str =
            "SELECT request_hash, state, response_status, response_body, payment_id, expires_at_ms
             FROM idempotency_keys WHERE scope = ?1 AND key = ?2";
        let row = match &self.reader {
            Some(reader) => {
                let (scope, key) = (scope.to_owned(), key.to_owned());
                reader
                    .read(move |connection| {
                        let mut statement = connection.prepare_cached(LOOKUP_SQLITE)?;
                        let mut rows = statement.query(rusqlite::params![scope, key])?;
                        let Some(row) = rows.next()? else { return Ok(None) };
                        Ok(Some(KeyRow {
                            request_hash: row.get(0)?,
                            state: row.get(1)?,
                            response_status: row.get(2)?,
                            response_body: row.get(3)?,
                            payment_id: row.get(4)?,
                            expires_at_ms: row.get(5)?,
                        }))
                    })
                    .await?
            }
            None => {
                let row =
                    sqlx::query(LOOKUP).bind(scope.to_owned()).bind(key.to_owned()).fetch_optional(&self.pool).await?;
                match row {
                    Some(row) => Some(KeyRow {
                        request_hash: row.try_get("request_hash")?,
                        state: row.try_get("state")?,
                        response_status: row.try_get("response_status")?,
                        response_body: row.try_get("response_body")?,
                        payment_id: row.try_get("payment_id")?,
                        expires_at_ms: row.try_get("expires_at_ms")?,
                    }),
                    None => None,
                }
            }
        };
        let Some(row) = row else { return Ok(StoredKey::Free) };
        if row.expires_at_ms <= now_ms {
            return Ok(StoredKey::Free);
        }
        if row.request_hash != request_hash {
            return Ok(StoredKey::Mismatch);
        }
        if row.state == "completed" {
            let (Some(status), Some(body)) = (row.response_status, row.response_body) else {
                return Err(StoreError::corrupt("a completed idempotency key without its response"));
            };
            return Ok(StoredKey::Replay { status: u16::try_from(status).map_err(StoreError::corrupt)?, body });
        }
        match row.payment_id.map(|id| id.parse::<PaymentId>()) {
            Some(Ok(payment_id)) => Ok(StoredKey::Unfinished { payment_id }),
            // A started key of the old two-commit path names no payment: nothing was done for it.
            None => Ok(StoredKey::Free),
            Some(Err(error)) => Err(StoreError::corrupt(error)),
        }
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

/// Writes a key's row; a live row of the same key (another payment) refuses the whole commit.
/// A row past its retention (or an abandoned one of the old path, naming no payment) is taken over.
pub(crate) fn record_statement(record: &IdempotencyRecord) -> Statement {
    let (state, status, body) = match &record.response {
        Some((status, body)) => ("completed", Some(i64::from(*status)), Some(body.clone())),
        None => ("started", None, None),
    };
    Statement::new(
        "INSERT INTO idempotency_keys (scope, key, request_hash, state, response_status, response_body, payment_id,
             locked_at_ms, created_at_ms, expires_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = $3, state = $4, response_status = $5,
             response_body = $6, payment_id = $7, locked_at_ms = $8, created_at_ms = $8, expires_at_ms = $9
         WHERE idempotency_keys.expires_at_ms <= $8
            OR (idempotency_keys.state = 'started' AND idempotency_keys.payment_id IS NULL)",
        vec![
            record.scope.as_str().into(),
            record.key.as_str().into(),
            record.request_hash.as_str().into(),
            state.into(),
            status.into(),
            body.into(),
            record.payment_id.to_string().into(),
            record.now_ms.into(),
            (record.now_ms + IDEMPOTENCY_RETENTION_MS).into(),
        ],
    )
    .one("idempotency key")
}

/// Completes the payment's started key, if it has one, inside the commit of the effect its answer
/// waited for. A key completed already keeps its answer (the first one sent is the one replayed).
pub(crate) fn completion_statement(completion: &IdempotencyCompletion) -> Statement {
    Statement::new(
        "UPDATE idempotency_keys SET state = 'completed', response_status = $2, response_body = $3
         WHERE payment_id = $1 AND state = 'started'",
        vec![
            completion.payment_id.to_string().into(),
            i64::from(completion.status).into(),
            completion.body.as_str().into(),
        ],
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("too many requests in flight")]
    Full,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {IN_FLIGHT_REDIS_TIMEOUT_MS} ms")]
    Timeout,
}

/// Keys of the requests running now. A claim is released by its `Claim` guard.
pub enum InFlight {
    InProcess(Mutex<HashMap<String, u64>>),
    Redis(ConnectionManager),
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            InFlight::InProcess(_) => "InFlight::InProcess",
            InFlight::Redis(_) => "InFlight::Redis",
        })
    }
}

/// A held claim; dropping it releases the key (for Redis, in a task of its own).
pub struct Claim {
    owner: std::sync::Arc<InFlight>,
    name: String,
    token: u64,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Claim").field("token", &self.token).finish_non_exhaustive()
    }
}

fn claim_name(scope: &str, key: &str) -> String {
    // Hashed: keys are the caller's text and never appear in Redis or logs as sent.
    format!("medpay:inflight:{}", crate::sha256_hex(format!("{scope}\n{key}").as_bytes()))
}

impl InFlight {
    pub fn in_process() -> InFlight {
        InFlight::InProcess(Mutex::new(HashMap::new()))
    }

    /// Claims in Redis, on a connection shared with the rate limiter (`RateLimiter::connection`).
    pub fn redis(manager: ConnectionManager) -> InFlight {
        InFlight::Redis(manager)
    }

    /// Claims the key; `None` when a request with it is running.
    pub async fn claim(self: &std::sync::Arc<Self>, scope: &str, key: &str) -> Result<Option<Claim>, ClaimError> {
        let name = claim_name(scope, key);
        let token = rand::random::<u64>();
        let taken = match self.as_ref() {
            InFlight::InProcess(claims) => {
                let mut claims = claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if claims.contains_key(&name) {
                    false
                } else if claims.len() >= IN_FLIGHT_CLAIMS_MAX {
                    return Err(ClaimError::Full);
                } else {
                    claims.insert(name.clone(), token);
                    true
                }
            }
            InFlight::Redis(manager) => {
                let mut manager = manager.clone();
                let mut command = redis::cmd("SET");
                command.arg(&name).arg(token).arg("NX").arg("PX").arg(IDEMPOTENCY_LOCK_TIMEOUT_MS);
                let set = command.query_async::<Option<String>>(&mut manager);
                let answer = tokio::time::timeout(std::time::Duration::from_millis(IN_FLIGHT_REDIS_TIMEOUT_MS), set)
                    .await
                    .map_err(|_| ClaimError::Timeout)??;
                answer.is_some()
            }
        };
        Ok(taken.then(|| Claim { owner: self.clone(), name, token }))
    }
}

/// Deletes the Redis claim only if it is still this one's (it may have expired and been retaken).
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl Drop for Claim {
    fn drop(&mut self) {
        match self.owner.as_ref() {
            InFlight::InProcess(claims) => {
                let mut claims = claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if claims.get(&self.name) == Some(&self.token) {
                    claims.remove(&self.name);
                }
            }
            InFlight::Redis(manager) => {
                let (mut manager, name, token) = (manager.clone(), std::mem::take(&mut self.name), self.token);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let script = redis::Script::new(RELEASE_SCRIPT);
                        let mut invocation = script.key(name);
                        invocation.arg(token);
                        if let Err(error) = invocation.invoke_async::<i64>(&mut manager).await {
                            // It expires by itself after IDEMPOTENCY_LOCK_TIMEOUT_MS.
                            tracing::warn!(%error, "in-flight claim not released in Redis");
                        }
                    });
                }
            }
        }
    }
}
