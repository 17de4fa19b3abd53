//! Risk scoring: the feature schema and the state that computes it, model artefacts and their
//! training and evaluation, the analysts' rule language, lists, explanations, the synthetic
//! payment generator, and the `RiskScorer` seam the payment's actor calls.

pub mod boost;
pub mod drift;
pub mod dsl;
pub mod explain;
pub mod features;
pub mod metrics;
pub mod model;
pub mod scorer;
pub mod simulate;
pub mod train;

pub use features::{FEATURE_NAMES, FEATURE_SCHEMA, Features};
pub use model::{ModelArtefact, ModelKind};
pub use scorer::{ListKeys, Lists, ModelScorer, NamedRule, ProviderPolicy, RuleBook, ScoringInput};

use async_trait::async_trait;
use medpay_models::{DecisionOutcome, Reason};

/// The model bundled with the service: trained on `medpay simulate --seed 7` (see
/// `ml/models/README.md`), its evaluation report beside it.
pub const DEFAULT_MODEL_JSON: &str = include_str!("../models/default.json");

/// What a scorer concludes about one payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub outcome: DecisionOutcome,
    /// 0 (no risk seen) to 1000: the calibrated probability of fraud × 1000.
    pub score: u16,
    pub reasons: Vec<Reason>,
    pub rules_hit: Vec<String>,
    pub model_version: String,
    /// The features scored, kept with the decision for backtests and training.
    pub features: Option<Features>,
    /// The challenger's score of the same features, when one scores in shadow.
    pub shadow: Option<Shadow>,
}

/// A challenger's score of a payment, kept beside the decision (it decides nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub model_version: String,
    pub score: u16,
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

    /// Puts `model` in force from the next call, while calls already running finish with the
    /// model they started with; false when this scorer has no model to swap.
    fn swap_model(&self, _model: ModelArtefact) -> bool {
        false
    }

    /// The version of the model in force, if the scorer has one.
    fn model_version(&self) -> Option<String> {
        None
    }

    /// Puts `model` (or none) in shadow: it scores every call beside the model in force.
    fn set_challenger(&self, _model: Option<ModelArtefact>) -> bool {
        false
    }

    /// Lets the challenger decide this share of payments (basis points, by payment id).
    fn set_canary(&self, _share_bps: u32) -> bool {
        false
    }
}

/// Hash of a listed value (CPF, device id, IP, card fingerprint): lists never hold values in clear.
pub fn list_hash(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.trim().as_bytes()))
}
