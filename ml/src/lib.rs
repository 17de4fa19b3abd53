//! Risk scoring: what a scorer is given (features gathered from the actors' in-memory state), the
//! `RiskScorer` seam, and the rules-only scorer of the payment core.

mod features;
mod rules;

pub use features::{PatientFeatures, ProviderFeatures, ScoringInput};
pub use rules::{Blocklist, RulesConfig, RulesScorer};

use async_trait::async_trait;
use medpay_models::{DecisionOutcome, Reason};

/// What a scorer concludes about one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub outcome: DecisionOutcome,
    /// 0 (no risk seen) to 1000.
    pub score: u16,
    pub reasons: Vec<Reason>,
    pub rules_hit: Vec<String>,
    pub model_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error("scorer unavailable: {0}")]
    Unavailable(String),
}

/// The seam between the payment's actor and whatever scores it. Implementations must not block
/// the thread: the caller bounds each call with a time budget.
#[async_trait]
pub trait RiskScorer: Send + Sync + 'static {
    async fn score(&self, input: &ScoringInput) -> Result<Assessment, ScoringError>;
}

/// Hash of a listed value (CPF, device id, IP): lists never hold values in clear.
pub fn list_hash(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.trim().as_bytes()))
}
