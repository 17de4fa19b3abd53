//! The scorer of the payment core: block and allow lists, the provider's amount limit, the
//! analysts' rules, and the model's calibrated score against the provider's thresholds.

use crate::dsl::{Rule, RuleAction, RuleError};
use crate::explain::top_factors;
use crate::features::{FEATURE_NAMES, Features};
use crate::model::{ModelArtefact, to_score};
use crate::{Assessment, RiskScorer, ScoringError, Shadow};
use async_trait::async_trait;
use medpay_models::{DecisionOutcome, ListKind, ListType, PaymentId, Reason};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The names a rule may use: every feature, then `score`.
pub fn rule_variables() -> Vec<&'static str> {
    FEATURE_NAMES.iter().copied().chain(std::iter::once("score")).collect()
}

/// A provider's limits and thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderPolicy {
    pub max_amount_centavos: i64,
    /// Scores at or above this go to review.
    pub review_score_min: u16,
    /// Scores at or above this are declined.
    pub decline_score_min: u16,
}

/// The hashed values of a payment that lists can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKeys {
    pub cpf_hash: String,
    pub device_hash: String,
    pub ip_hash: String,
    pub card_hash: Option<String>,
    /// The same values' unkeyed hashes, while list entries made before the key remain
    /// (`ListKeys::legacy`).
    pub legacy: Option<Box<ListKeys>>,
}

impl ListKeys {
    /// The unkeyed hashes of the same values, when some list entry still holds one; else none.
    pub fn legacy(cpf: &str, device: &str, ip: &str, card: Option<&str>) -> Option<Box<ListKeys>> {
        crate::legacy_list_entries().then(|| {
            Box::new(ListKeys {
                cpf_hash: crate::legacy_list_hash(cpf),
                device_hash: crate::legacy_list_hash(device),
                ip_hash: crate::legacy_list_hash(ip),
                card_hash: card.map(crate::legacy_list_hash),
                legacy: None,
            })
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoringInput {
    pub payment_id: PaymentId,
    pub amount_centavos: i64,
    pub features: Features,
    pub keys: ListKeys,
    pub policy: ProviderPolicy,
}

/// Allow and block lists, shared by every actor; a change is seen by the next request. Entries
/// hold keyed hashes, or (made before the key) plain ones, matched with `ListKeys::legacy`.
#[derive(Debug, Default)]
pub struct Lists {
    entries: RwLock<HashSet<(ListType, ListKind, String)>>,
}

impl Lists {
    pub fn new(entries: impl IntoIterator<Item = (ListType, ListKind, String)>) -> Lists {
        Lists { entries: RwLock::new(entries.into_iter().collect()) }
    }

    /// Says whether some entry holds an unkeyed hash (scoring then computes those too).
    pub fn set_legacy_entries(present: bool) {
        crate::LEGACY_LIST_ENTRIES.store(present, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn insert(&self, list: ListType, kind: ListKind, value_hash: String) {
        // A poisoned lock means a writer panicked around a whole insert or remove: the set is whole.
        self.entries.write().unwrap_or_else(|p| p.into_inner()).insert((list, kind, value_hash));
    }

    /// Replaces every entry at once (a reload from the store).
    pub fn replace(&self, entries: impl IntoIterator<Item = (ListType, ListKind, String)>) {
        let fresh: HashSet<_> = entries.into_iter().collect();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    pub fn remove(&self, list: ListType, kind: ListKind, value_hash: &str) {
        self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(&(list, kind, value_hash.to_owned()));
    }

    /// The first kind of `keys` (or of their unkeyed hashes) found on `list`.
    fn hit(&self, list: ListType, keys: &ListKeys) -> Option<ListKind> {
        self.hit_one(list, keys).or_else(|| keys.legacy.as_deref().and_then(|legacy| self.hit_one(list, legacy)))
    }

    fn hit_one(&self, list: ListType, keys: &ListKeys) -> Option<ListKind> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut candidates =
            vec![(ListKind::Cpf, &keys.cpf_hash), (ListKind::Device, &keys.device_hash), (ListKind::Ip, &keys.ip_hash)];
        if let Some(card) = &keys.card_hash {
            candidates.push((ListKind::Card, card));
        }
        candidates
            .into_iter()
            .find(|(kind, hash)| entries.contains(&(list, *kind, (*hash).clone())))
            .map(|(kind, _)| kind)
    }
}

/// An analyst's rule with its name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedRule {
    pub name: String,
    pub rule: Rule,
}

impl NamedRule {
    pub fn compile(name: &str, source: &str) -> Result<NamedRule, RuleError> {
        Ok(NamedRule { name: name.to_owned(), rule: Rule::compile(source, &rule_variables())? })
    }
}

/// The current rules, replaced whole on each change so that a decision sees one version.
#[derive(Debug, Default)]
pub struct RuleBook {
    rules: RwLock<Arc<Vec<NamedRule>>>,
}

impl RuleBook {
    pub fn new(rules: Vec<NamedRule>) -> RuleBook {
        RuleBook { rules: RwLock::new(Arc::new(rules)) }
    }

    pub fn replace(&self, rules: Vec<NamedRule>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }

    pub fn current(&self) -> Arc<Vec<NamedRule>> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the rules say about one payment: all the rules that matched, and the decisive one (allow
/// first, then decline, then review; within an action, in the book's order).
pub fn apply_rules<'a>(rules: &'a [NamedRule], variables: &[f64]) -> (Vec<&'a NamedRule>, Option<&'a NamedRule>) {
    let matched: Vec<&NamedRule> = rules.iter().filter(|named| named.rule.matches(variables)).collect();
    let decisive = [RuleAction::Allow, RuleAction::Decline, RuleAction::Review]
        .into_iter()
        .find_map(|action| matched.iter().copied().find(|named| named.rule.action == action));
    (matched, decisive)
}

pub struct ModelScorer {
    model: RwLock<Arc<ModelArtefact>>,
    /// Scores in shadow beside `model`, deciding nothing, except for the canary share.
    challenger: RwLock<Option<Arc<ModelArtefact>>>,
    /// The share of payments (in basis points, by their id) the challenger decides, the champion
    /// then scoring in shadow.
    canary_bps: std::sync::atomic::AtomicU32,
    rules: Arc<RuleBook>,
    lists: Arc<Lists>,
}

fn reason(code: &str, message: String, message_pt: &str) -> Reason {
    Reason { code: code.to_owned(), message, message_pt: message_pt.to_owned() }
}

impl ModelScorer {
    pub fn new(model: ModelArtefact, rules: Arc<RuleBook>, lists: Arc<Lists>) -> ModelScorer {
        ModelScorer {
            model: RwLock::new(Arc::new(model)),
            challenger: RwLock::new(None),
            canary_bps: std::sync::atomic::AtomicU32::new(0),
            rules,
            lists,
        }
    }

    pub fn model(&self) -> Arc<ModelArtefact> {
        self.model.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Hot-swaps the model; requests in flight finish with the one they started with.
    pub fn swap_model(&self, model: ModelArtefact) {
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(model);
    }

    /// Puts a challenger in shadow (or takes it out).
    pub fn set_challenger(&self, model: Option<ModelArtefact>) {
        *self.challenger.write().unwrap_or_else(|p| p.into_inner()) = model.map(Arc::new);
    }

    fn challenger(&self) -> Option<Arc<ModelArtefact>> {
        self.challenger.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The share of payments (0 to 10 000 basis points) the challenger decides.
    pub fn set_canary(&self, share_bps: u32) {
        self.canary_bps.store(share_bps.min(10_000), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `payment` falls in the canary share: by its id, so a payment asked again (a
    /// retry) always lands on the same side.
    fn in_canary(&self, payment: &medpay_models::PaymentId) -> bool {
        let share = u128::from(self.canary_bps.load(std::sync::atomic::Ordering::Relaxed));
        share > 0 && payment.as_uuid().as_u128() % 10_000 < share
    }

    /// The whole decision, synchronously: what `score` runs.
    pub fn assess(&self, input: &ScoringInput) -> Assessment {
        // The champion decides and the challenger scores in shadow, or the other way round for
        // the canary share.
        let (model, shadow) = match self.challenger() {
            Some(challenger) if self.in_canary(&input.payment_id) => (challenger, Some(self.model())),
            challenger => (self.model(), challenger),
        };
        let features = input.features.as_slice();
        let probability = model.predict(features);
        let score = to_score(probability);
        let mut variables = [0.0; FEATURE_NAMES.len() + 1];
        variables[..FEATURE_NAMES.len()].copy_from_slice(features);
        variables[FEATURE_NAMES.len()] = f64::from(score);
        let rules = self.rules.current();
        let (matched, decisive) = apply_rules(&rules, &variables);
        let rules_hit: Vec<String> = matched.iter().map(|named| named.name.clone()).collect();
        let mut reasons = Vec::new();
        let outcome = if let Some(kind) = self.lists.hit(ListType::Allow, &input.keys) {
            reasons.push(reason(
                "allowlisted",
                format!("the {} is on the allow list", kind.as_str()),
                "Pagamento aprovado.",
            ));
            DecisionOutcome::Approve
        } else if let Some(kind) = self.lists.hit(ListType::Block, &input.keys) {
            reasons.push(reason(
                &format!("blocklisted_{}", kind.as_str()),
                format!("the {} is on the block list", kind.as_str()),
                "Não foi possível aprovar este pagamento.",
            ));
            DecisionOutcome::Decline
        } else if input.amount_centavos > input.policy.max_amount_centavos {
            reasons.push(reason(
                "amount_above_provider_limit",
                format!("the amount exceeds this provider's limit of {} centavos", input.policy.max_amount_centavos),
                "O valor ultrapassa o limite deste prestador.",
            ));
            DecisionOutcome::Decline
        } else if let Some(named) = decisive {
            let (outcome, message_pt) = match named.rule.action {
                RuleAction::Allow => (DecisionOutcome::Approve, "Pagamento aprovado."),
                RuleAction::Decline => (DecisionOutcome::Decline, "Não foi possível aprovar este pagamento."),
                RuleAction::Review => (DecisionOutcome::Review, "O pagamento está em análise pela nossa equipe."),
            };
            reasons.push(reason(
                &named.name,
                format!("rule {} matched: {}", named.name, named.rule.source),
                message_pt,
            ));
            outcome
        } else if score >= input.policy.decline_score_min {
            reasons.push(reason(
                "model_score_high",
                format!("model score {score} is at or above the decline threshold {}", input.policy.decline_score_min),
                "Não foi possível aprovar este pagamento.",
            ));
            DecisionOutcome::Decline
        } else if score >= input.policy.review_score_min {
            reasons.push(reason(
                "model_score_elevated",
                format!("model score {score} is at or above the review threshold {}", input.policy.review_score_min),
                "O pagamento está em análise pela nossa equipe.",
            ));
            DecisionOutcome::Review
        } else {
            DecisionOutcome::Approve
        };
        if outcome != DecisionOutcome::Approve || score >= input.policy.review_score_min {
            reasons.extend(top_factors(features, &model.contributions(features), &model.means));
        }
        Assessment {
            outcome,
            score,
            reasons,
            rules_hit,
            model_version: model.version.clone(),
            features: Some(input.features),
            shadow: shadow
                .map(|other| Shadow { model_version: other.version.clone(), score: to_score(other.predict(features)) }),
        }
    }
}

#[async_trait]
impl RiskScorer for ModelScorer {
    async fn score(&self, input: &ScoringInput) -> Result<Assessment, ScoringError> {
        Ok(self.assess(input))
    }

    fn swap_model(&self, model: ModelArtefact) -> bool {
        ModelScorer::swap_model(self, model);
        true
    }

    fn model_version(&self) -> Option<String> {
        Some(self.model().version.clone())
    }

    fn set_challenger(&self, model: Option<ModelArtefact>) -> bool {
        ModelScorer::set_challenger(self, model);
        true
    }

    fn set_canary(&self, share_bps: u32) -> bool {
        ModelScorer::set_canary(self, share_bps);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_share_is_chosen_by_payment_id() {
        let model = ModelArtefact::from_json(crate::DEFAULT_MODEL_JSON).unwrap();
        let scorer = ModelScorer::new(model, Arc::new(RuleBook::default()), Arc::new(Lists::default()));
        let ids: Vec<medpay_models::PaymentId> = (0..4_000).map(|_| medpay_models::PaymentId::new()).collect();
        assert!(ids.iter().all(|id| !scorer.in_canary(id)), "no share, no canary");
        scorer.set_canary(2_500);
        let inside = ids.iter().filter(|id| scorer.in_canary(id)).count();
        assert!((800..1_200).contains(&inside), "about a quarter: {inside} of 4000");
        assert!(ids.iter().all(|id| scorer.in_canary(id) == scorer.in_canary(id)), "the same side every time");
        scorer.set_canary(20_000);
        assert!(ids.iter().all(|id| scorer.in_canary(id)), "capped at everything");
    }
}
