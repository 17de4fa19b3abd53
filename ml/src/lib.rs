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

/// The server's secret for list hashes, set once at start (`set_list_key`).
static LIST_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
/// Whether any list entry still holds a plain SHA-256 (made before the hashes were keyed): while
/// one does, scoring matches those too.
pub(crate) static LEGACY_LIST_ENTRIES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets the key of every list hash in this process; false when another key was set before (the
/// first stays: hashes already made must keep matching).
pub fn set_list_key(key: [u8; 32]) -> bool {
    LIST_KEY.set(key).is_ok() || LIST_KEY.get() == Some(&key)
}

/// Hash of a listed value (CPF, device id, IP, card fingerprint): lists never hold values in clear.
/// HMAC-SHA256 under the server's key, so that a leaked hash cannot be reversed by trying every
/// CPF; a plain SHA-256 only where no key was set (benches, unit tests).
pub fn list_hash(value: &str) -> String {
    use hmac::{Hmac, Mac};
    match LIST_KEY.get() {
        Some(key) => {
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(value.trim().as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        None => legacy_list_hash(value),
    }
}

/// The unkeyed SHA-256 that list entries held before the key: matched until they are re-entered.
pub fn legacy_list_hash(value: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(value.trim().as_bytes()))
}

pub(crate) fn legacy_list_entries() -> bool {
    LEGACY_LIST_ENTRIES.load(std::sync::atomic::Ordering::Relaxed)
}
