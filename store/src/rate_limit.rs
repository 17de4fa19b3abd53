//! Rate limits by the generic cell rate algorithm (GCRA): `limit` requests per `period`, as a
//! burst or spread out, with no window edges where twice the limit could pass. The state of a
//! bucket is one number, its theoretical arrival time (TAT). In process on the embedded defaults;
//! in Redis (one atomic script) when several nodes must share one limit.

use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most buckets kept in process before idle ones are swept.
pub const IN_PROCESS_BUCKETS_MAX: usize = 100_000;
/// How long a Redis call may take before the limiter answers without it.
pub const REDIS_TIMEOUT_MS: u64 = 200;

const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > period then
  return {0, next_tat - period - now}
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, 0}
";

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
    /// Milliseconds until one more request would be allowed (0 when allowed).
    pub retry_after_ms: u64,
}

pub enum RateLimiter {
    /// Bucket → theoretical arrival time in microseconds.
    InProcess(Mutex<HashMap<String, i64>>),
    Redis(ConnectionManager, redis::Script),
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            RateLimiter::InProcess(_) => "RateLimiter::InProcess",
            RateLimiter::Redis(..) => "RateLimiter::Redis",
        })
    }
}

/// One GCRA step: the new TAT when allowed, or how long to wait (µs) when not.
fn gcra(tat_us: Option<i64>, now_us: i64, interval_us: i64, period_us: i64) -> Result<i64, i64> {
    let next = tat_us.unwrap_or(now_us).max(now_us) + interval_us;
    if next - now_us > period_us { Err(next - period_us - now_us) } else { Ok(next) }
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
        Ok(RateLimiter::Redis(manager, redis::Script::new(GCRA_SCRIPT)))
    }

    /// The limiter's Redis connection, for what else the node keeps in Redis (one connection, not
    /// one per use).
    pub fn connection(&self) -> Option<ConnectionManager> {
        match self {
            RateLimiter::InProcess(_) => None,
            RateLimiter::Redis(manager, _) => Some(manager.clone()),
        }
    }

    /// Counts one request in `bucket` against `limit` per `period_ms`.
    pub async fn hit(
        &self,
        bucket: &str,
        limit: u64,
        period_ms: i64,
        now_ms: i64,
    ) -> Result<RateDecision, RateLimitError> {
        let period_us = period_ms.saturating_mul(1_000);
        let interval_us = period_us / i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let now_us = now_ms.saturating_mul(1_000);
        let wait_us = match self {
            RateLimiter::InProcess(buckets) => {
                // A poisoned lock only means another thread panicked mid-update of one number.
                let mut buckets = buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if buckets.len() >= IN_PROCESS_BUCKETS_MAX {
                    buckets.retain(|_, tat| *tat > now_us);
                }
                match gcra(buckets.get(bucket).copied(), now_us, interval_us, period_us) {
                    Ok(next) => {
                        buckets.insert(bucket.to_owned(), next);
                        0
                    }
                    Err(wait) => wait,
                }
            }
            RateLimiter::Redis(manager, script) => {
                let mut connection = manager.clone();
                let key = format!("medpay:rl:{bucket}");
                let (allowed, wait): (i64, i64) = tokio::time::timeout(
                    std::time::Duration::from_millis(REDIS_TIMEOUT_MS),
                    script.key(key).arg(now_us).arg(interval_us).arg(period_us).invoke_async(&mut connection),
                )
                .await
                .map_err(|_| RateLimitError::Timeout)??;
                if allowed == 1 { 0 } else { wait.max(1) }
            }
        };
        Ok(RateDecision {
            allowed: wait_us == 0,
            retry_after_ms: u64::try_from(wait_us.div_euclid(1_000)).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_up_to_the_limit_then_one_per_interval() {
        let limiter = RateLimiter::in_process();
        for _ in 0..3 {
            assert!(limiter.hit("key", 3, 60_000, 1_000_000).await.unwrap().allowed);
        }
        let refused = limiter.hit("key", 3, 60_000, 1_000_000).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 20_000, "one request is earned back every 60 s / 3");
        assert!(limiter.hit("other", 3, 60_000, 1_000_000).await.unwrap().allowed);
        assert!(!limiter.hit("key", 3, 60_000, 1_019_999).await.unwrap().allowed);
        assert!(limiter.hit("key", 3, 60_000, 1_020_000).await.unwrap().allowed);
        assert!(!limiter.hit("key", 3, 60_000, 1_020_000).await.unwrap().allowed);
    }

    #[test]
    fn no_window_edge_lets_twice_the_limit_through() {
        // With fixed windows, 3 at the end of one minute and 3 at the start of the next pass.
        let mut tat = None;
        let mut allowed = 0;
        for now in [59_000_000, 59_500_000, 59_900_000, 60_000_000, 60_100_000, 60_500_000] {
            if let Ok(next) = gcra(tat, now, 20_000_000, 60_000_000) {
                tat = Some(next);
                allowed += 1;
            }
        }
        assert_eq!(allowed, 3);
    }
}
