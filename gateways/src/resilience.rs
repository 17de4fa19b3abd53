//! What every gateway call goes through: a time-out, bounded retries with exponential backoff and
//! full jitter, and a circuit breaker that stops calling a system that keeps failing.

use rand::Rng;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Policy {
    pub timeout_ms: u64,
    /// Attempts in all, the first included.
    pub attempts_max: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before letting one through to test the system.
    pub breaker_open_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timeout_ms: 2_000,
            attempts_max: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
        }
    }
}

impl Policy {
    /// The wait before retry number `retry` (1-based): full jitter over an exponential ceiling.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_base_ms.saturating_mul(1u64 << retry.min(20)).min(self.backoff_max_ms);
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is in flight.
    HalfOpen,
}

/// A circuit breaker shared by every call to one system.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: Mutex::new(State::Closed { failures: 0 }) }
    }
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic between two plain assignments.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a call may go out now.
    pub fn allow(&self) -> bool {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub fn succeeded(&self) {
        *self.state() = State::Closed { failures: 0 };
    }

    pub fn failed(&self, policy: &Policy) {
        let mut state = self.state();
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen | State::Open { .. } => policy.breaker_failures,
        };
        *state = if failures >= policy.breaker_failures {
            tracing::warn!(failures, "circuit opened");
            State::Open { until: Instant::now() + Duration::from_millis(policy.breaker_open_ms) }
        } else {
            State::Closed { failures }
        };
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_tests_one_call_later() {
        let policy = Policy { breaker_failures: 3, breaker_open_ms: 0, ..Policy::default() };
        let breaker = Breaker::default();
        for _ in 0..2 {
            breaker.failed(&policy);
        }
        assert!(!breaker.is_open());
        breaker.succeeded();
        for _ in 0..3 {
            assert!(breaker.allow());
            breaker.failed(&policy);
        }
        assert!(breaker.is_open());
        // Open time of 0: the next call is the half-open trial, and only it.
        assert!(breaker.allow());
        assert!(!breaker.allow(), "one trial at a time");
        breaker.failed(&policy);
        assert!(breaker.is_open(), "a failed trial opens it again");
        assert!(breaker.allow());
        breaker.succeeded();
        assert!(breaker.allow() && breaker.allow(), "closed again");
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = Policy::default();
        for retry in 1..10 {
            assert!(policy.backoff(retry) <= Duration::from_millis(policy.backoff_max_ms));
        }
        assert!(policy.backoff(1) <= Duration::from_millis(200));
    }
}

/// An OAuth2 access token and when it expires, shared by a client's calls.
#[derive(Default)]
pub struct TokenCache(Mutex<Option<(String, Instant)>>);

impl TokenCache {
    /// The token, unless it expires within a minute (it is refreshed before it expires).
    pub fn fresh(&self) -> Option<String> {
        let token = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        token
            .as_ref()
            .filter(|(_, expires)| *expires > Instant::now() + Duration::from_secs(60))
            .map(|(v, _)| v.clone())
    }

    pub fn remember(&self, token: &str, expires_in_seconds: u64) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((token.to_owned(), Instant::now() + Duration::from_secs(expires_in_seconds)));
    }
}

/// An OAuth2 token endpoint's answer (client-credentials grant).
#[derive(serde::Deserialize)]
pub(crate) struct TokenAnswer {
    pub access_token: String,
    pub expires_in: u64,
}

/// The HTTP client of a gateway: rustls with the ring provider, the policy's time-out per call.
pub(crate) fn http_client(policy: &Policy) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_millis(policy.timeout_ms)).build().map_err(|e| e.to_string())
}
