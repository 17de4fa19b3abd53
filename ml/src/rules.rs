//! The rules-only scorer: provider amount limits, patient velocity limits and a block list. Each
//! rule that matches adds a reason; the outcome is the most severe among them.

use crate::{Assessment, RiskScorer, ScoringError, ScoringInput};
use async_trait::async_trait;
use medpay_models::{BlockKind, DecisionOutcome, Reason};
use std::collections::HashSet;
use std::sync::RwLock;

pub const RULES_MODEL_VERSION: &str = "rules-v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    /// More payment requests than this in one hour send the next to review.
    pub velocity_payments_1h_max: u32,
    /// More than this amount requested in 24 h (this payment included) sends it to review.
    pub velocity_amount_24h_max_centavos: i64,
    /// This many declines in 24 h decline the next request.
    pub declines_24h_max: u32,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig { velocity_payments_1h_max: 5, velocity_amount_24h_max_centavos: 5_000_000, declines_24h_max: 3 }
    }
}

/// Hashed values that decline any payment they appear in. Shared by every actor; a change is seen
/// by the next request.
#[derive(Debug, Default)]
pub struct Blocklist {
    entries: RwLock<HashSet<(BlockKind, String)>>,
}

impl Blocklist {
    pub fn new(entries: impl IntoIterator<Item = (BlockKind, String)>) -> Blocklist {
        Blocklist { entries: RwLock::new(entries.into_iter().collect()) }
    }

    pub fn insert(&self, kind: BlockKind, value_hash: String) {
        // A poisoned lock means a writer panicked after a complete insert or none: the set is whole.
        self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert((kind, value_hash));
    }

    pub fn contains(&self, kind: BlockKind, value_hash: &str) -> bool {
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(&(kind, value_hash.to_owned()))
    }
}

#[derive(Debug)]
pub struct RulesScorer {
    config: RulesConfig,
    blocklist: std::sync::Arc<Blocklist>,
}

struct Hit {
    rule: &'static str,
    outcome: DecisionOutcome,
    score: u16,
    message: String,
}

impl RulesScorer {
    pub fn new(config: RulesConfig, blocklist: std::sync::Arc<Blocklist>) -> RulesScorer {
        RulesScorer { config, blocklist }
    }

    fn hits(&self, input: &ScoringInput) -> Vec<Hit> {
        let mut hits = Vec::new();
        let listed = [
            (BlockKind::Cpf, &input.cpf_hash, "blocklisted_cpf", "the patient's CPF is on the block list"),
            (BlockKind::Device, &input.device_hash, "blocklisted_device", "the device is on the block list"),
            (BlockKind::Ip, &input.ip_hash, "blocklisted_ip", "the IP address is on the block list"),
        ];
        for (kind, hash, rule, message) in listed {
            if self.blocklist.contains(kind, hash) {
                hits.push(Hit { rule, outcome: DecisionOutcome::Decline, score: 1000, message: message.to_owned() });
            }
        }
        if input.amount_centavos > input.provider.max_amount_centavos {
            hits.push(Hit {
                rule: "amount_above_provider_limit",
                outcome: DecisionOutcome::Decline,
                score: 900,
                message: format!(
                    "the amount exceeds this provider's limit of {} centavos",
                    input.provider.max_amount_centavos
                ),
            });
        }
        if input.patient.declines_24h >= self.config.declines_24h_max {
            hits.push(Hit {
                rule: "declines_24h",
                outcome: DecisionOutcome::Decline,
                score: 800,
                message: format!(
                    "{} payments of this patient were declined in the last 24 hours",
                    input.patient.declines_24h
                ),
            });
        }
        if input.patient.payments_1h >= self.config.velocity_payments_1h_max {
            hits.push(Hit {
                rule: "velocity_payments_1h",
                outcome: DecisionOutcome::Review,
                score: 600,
                message: format!("{} payment requests from this patient in the last hour", input.patient.payments_1h),
            });
        }
        let amount_24h = input.patient.amount_24h_centavos.saturating_add(input.amount_centavos);
        if amount_24h > self.config.velocity_amount_24h_max_centavos {
            hits.push(Hit {
                rule: "velocity_amount_24h",
                outcome: DecisionOutcome::Review,
                score: 500,
                message: format!("{amount_24h} centavos requested by this patient in 24 hours"),
            });
        }
        hits
    }
}

#[async_trait]
impl RiskScorer for RulesScorer {
    async fn score(&self, input: &ScoringInput) -> Result<Assessment, ScoringError> {
        let hits = self.hits(input);
        let outcome = hits.iter().map(|hit| hit.outcome).max().unwrap_or(DecisionOutcome::Approve);
        let score = hits.iter().map(|hit| hit.score).max().unwrap_or(0);
        Ok(Assessment {
            outcome,
            score,
            reasons: hits
                .iter()
                .map(|hit| Reason { code: hit.rule.to_owned(), message: hit.message.clone() })
                .collect(),
            rules_hit: hits.iter().map(|hit| hit.rule.to_owned()).collect(),
            model_version: RULES_MODEL_VERSION.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PatientFeatures, ProviderFeatures, list_hash};
    use medpay_models::{PaymentId, PaymentMethod};
    use std::sync::Arc;

    fn input() -> ScoringInput {
        ScoringInput {
            payment_id: PaymentId::new(),
            amount_centavos: 50_000,
            installments: 1,
            method: PaymentMethod::Pix,
            tuss_code: "10101012".parse().unwrap(),
            cpf_hash: list_hash("52998224725"),
            device_hash: list_hash("device-1"),
            ip_hash: list_hash("10.0.0.1"),
            patient: PatientFeatures::default(),
            provider: ProviderFeatures { max_amount_centavos: 1_000_000, payments_24h: 0 },
        }
    }

    fn scorer() -> (RulesScorer, Arc<Blocklist>) {
        let blocklist = Arc::new(Blocklist::default());
        (RulesScorer::new(RulesConfig::default(), blocklist.clone()), blocklist)
    }

    #[tokio::test]
    async fn clean_payment_is_approved_with_no_reasons() {
        let (scorer, _) = scorer();
        let assessment = scorer.score(&input()).await.unwrap();
        assert_eq!(assessment.outcome, DecisionOutcome::Approve);
        assert_eq!(assessment.score, 0);
        assert!(assessment.reasons.is_empty());
        assert_eq!(assessment.model_version, RULES_MODEL_VERSION);
    }

    #[tokio::test]
    async fn over_provider_limit_declines() {
        let (scorer, _) = scorer();
        let mut request = input();
        request.amount_centavos = 1_000_001;
        let assessment = scorer.score(&request).await.unwrap();
        assert_eq!(assessment.outcome, DecisionOutcome::Decline);
        assert_eq!(assessment.rules_hit, vec!["amount_above_provider_limit"]);
    }

    #[tokio::test]
    async fn velocity_reviews_and_the_most_severe_rule_wins() {
        let (scorer, blocklist) = scorer();
        let mut request = input();
        request.patient.payments_1h = 5;
        let assessment = scorer.score(&request).await.unwrap();
        assert_eq!(assessment.outcome, DecisionOutcome::Review);
        assert_eq!(assessment.score, 600);

        blocklist.insert(BlockKind::Device, list_hash("device-1"));
        let assessment = scorer.score(&request).await.unwrap();
        assert_eq!(assessment.outcome, DecisionOutcome::Decline);
        assert_eq!(assessment.rules_hit, vec!["blocklisted_device", "velocity_payments_1h"]);
    }

    #[tokio::test]
    async fn amount_velocity_counts_this_payment() {
        let (scorer, _) = scorer();
        let mut request = input();
        request.patient.amount_24h_centavos = 4_960_000;
        assert_eq!(scorer.score(&request).await.unwrap().outcome, DecisionOutcome::Review);
        request.patient.amount_24h_centavos = 4_950_000;
        assert_eq!(scorer.score(&request).await.unwrap().outcome, DecisionOutcome::Approve);
    }
}
