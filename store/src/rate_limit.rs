//! Fixed-window rate limits. In process on the embedded defaults; in Redis when several nodes must
//! share one limit.

use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most distinct buckets kept in process before old windows are swept.
pub const IN_PROCESS_BUCKETS_MAX: usize = 100_000;
/// How long a Redis call may take before the limiter answers without it.
pub const REDIS_TIMEOUT_MS: u64 = 200;

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {REDIS_TIMEOUT_MS} ms")]
    Timeout,
}

/// The result of counting one request against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Milliseconds until the current window ends.
    pub retry_after_ms: u64,
}

pub enum RateLimiter {
    InProcess(Mutex<HashMap<String, (i64, u64)>>),
    Redis(ConnectionManager),
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            RateLimiter::InProcess(_) => "RateLimiter::InProcess",
            RateLimiter::Redis(_) => "RateLimiter::Redis",
        })
    }
}

impl RateLimiter {
    pub fn in_process() -> RateLimiter {
        RateLimiter::InProcess(Mutex::new(HashMap::new()))
    }

    pub async fn redis(url: &str) -> Result<RateLimiter, RateLimitError> {
        let client = redis::Client::open(url)?;
        let manager = tokio::time::timeout(
            std::time::Duration::from_millis(REDIS_TIMEOUT_MS * 10),
            ConnectionManager::new(client),
        )
        .await
        .map_err(|_| RateLimitError::Timeout)??;
        Ok(RateLimiter::Redis(manager))
    }

    /// Counts one request in `bucket` and says whether it is within `limit` per `window_ms`.
    pub async fn hit(&self, bucket: &str, limit: u64, window_ms: i64, now_ms: i64) -> Result<RateDecision, RateLimitError> {
        let window = now_ms.div_euclid(window_ms);
        let retry_after_ms = u64::try_from((window + 1) * window_ms - now_ms).unwrap_or(0);
        let count = match self {
            RateLimiter::InProcess(buckets) => {
                // A poisoned lock only means another thread panicked mid-count; the counts are
                // still usable.
                let mut buckets = buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if buckets.len() >= IN_PROCESS_BUCKETS_MAX {
                    buckets.retain(|_, (bucket_window, _)| *bucket_window == window);
                }
                let entry = buckets.entry(bucket.to_owned()).or_insert((window, 0));
                if entry.0 != window {
                    *entry = (window, 0);
                }
                entry.1 += 1;
                entry.1
            }
            RateLimiter::Redis(manager) => {
                let key = format!("medpay:rl:{bucket}:{window}");
                let mut connection = manager.clone();
                let (count,): (u64,) = tokio::time::timeout(
                    std::time::Duration::from_millis(REDIS_TIMEOUT_MS),
                    redis::pipe()
                        .atomic()
                        .incr(&key, 1u64)
                        .pexpire(&key, window_ms)
                        .ignore()
                        .query_async(&mut connection),
                )
                .await
                .map_err(|_| RateLimitError::Timeout)??;
                count
            }
        };
        Ok(RateDecision { allowed: count <= limit, retry_after_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_window_counts_and_resets() {
        let limiter = RateLimiter::in_process();
        for _ in 0..3 {
            assert!(limiter.hit("key", 3, 1_000, 5_000).await.unwrap().allowed);
        }
        let refused = limiter.hit("key", 3, 1_000, 5_500).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 500);
        assert!(limiter.hit("other", 3, 1_000, 5_500).await.unwrap().allowed);
        assert!(limiter.hit("key", 3, 1_000, 6_000).await.unwrap().allowed, "a new window starts over");
    }
}
