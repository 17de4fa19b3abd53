//! Model artefacts: what training writes and scoring loads. A model is a plain data structure
//! evaluated by our own code (a dot product, or a walk down a flat tree), so inference takes well
//! under a microsecond and every prediction can be decomposed into per-feature contributions.

use serde::{Deserialize, Serialize};

/// The artefact format this code reads and writes.
pub const ARTEFACT_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Logistic,
    Tree,
    /// Gradient-boosted trees (`boost.rs`).
    Boosted,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::Logistic, ModelKind::Tree, ModelKind::Boosted];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Logistic => "logistic",
            ModelKind::Tree => "tree",
            ModelKind::Boosted => "boosted",
        }
    }

    pub fn parse(raw: &str) -> Option<ModelKind> {
        ModelKind::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

/// Platt scaling of a model's log-odds: P = σ(a·z + b). Applied after the model when it made
/// the probabilities truer on rows the model was not fitted on (`train::calibrate`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

/// A node of a flat binary tree: `feature < threshold` goes left. `value` is the share of fraud
/// among the training rows that reached the node (a calibrated probability at the leaves).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    /// `None` for a leaf.
    pub feature: Option<usize>,
    pub threshold: f64,
    pub left: usize,
    pub right: usize,
    pub value: f64,
    pub samples: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelBody {
    /// P(fraud) = σ(intercept + Σ weightᵢ · (xᵢ − meanᵢ) / scaleᵢ).
    Logistic {
        intercept: f64,
        weights: Vec<f64>,
    },
    Tree {
        nodes: Vec<TreeNode>,
    },
    /// P(fraud) = σ(base + Σ over trees of the leaf reached).
    Boosted {
        base: f64,
        trees: Vec<Vec<crate::boost::BoostNode>>,
        /// The trees packed for scoring (`from_json` and training fill it in; empty: the trees are
        /// walked as they are).
        #[serde(skip)]
        packed: crate::boost::Packed,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtefact {
    pub format: u32,
    /// Unique name of this trained model, e.g. `logistic-20261130T101500Z-3f2a`.
    pub version: String,
    /// The feature schema the model was trained on (see `features::FEATURE_SCHEMA`), or a
    /// `csv:` schema for a model trained on some other file.
    pub feature_schema: String,
    pub feature_names: Vec<String>,
    /// Training means: the standardisation of a linear model and the value a missing input takes.
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    pub body: ModelBody,
    pub trained_at: String,
    pub training_rows: usize,
    pub training_positives: usize,
    /// Absent in artefacts written before calibration existed, and when it did not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Platt>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("model artefact is not valid JSON of the expected shape: {0}")]
    Format(String),
    #[error("model artefact format {found} is not readable by this build (expects {ARTEFACT_FORMAT})")]
    Version { found: u32 },
    #[error("model was trained on feature schema {found:?}; this service computes {expected:?}")]
    Schema { found: String, expected: String },
    #[error("model is inconsistent: {0}")]
    Inconsistent(String),
}

impl ModelArtefact {
    pub fn kind(&self) -> ModelKind {
        match self.body {
            ModelBody::Logistic { .. } => ModelKind::Logistic,
            ModelBody::Tree { .. } => ModelKind::Tree,
            ModelBody::Boosted { .. } => ModelKind::Boosted,
        }
    }

    /// Parses an artefact and checks that it is whole.
    pub fn from_json(text: &str) -> Result<ModelArtefact, ModelError> {
        let mut artefact: ModelArtefact =
            serde_json::from_str(text).map_err(|error| ModelError::Format(error.to_string()))?;
        if artefact.format != ARTEFACT_FORMAT {
            return Err(ModelError::Version { found: artefact.format });
        }
        artefact.validate()?;
        if let ModelBody::Boosted { trees, packed, .. } = &mut artefact.body {
            *packed = crate::boost::Packed::of(trees);
        }
        Ok(artefact)
    }

    pub fn to_json(&self) -> String {
        // Plain structs of numbers and strings always serialise. Boosted trees are thousands of
        // nodes: indented, they took twice the bytes in every file and registry row.
        match self.body {
            ModelBody::Boosted { .. } => serde_json::to_string(self).unwrap_or_default(),
            _ => serde_json::to_string_pretty(self).unwrap_or_default(),
        }
    }

    /// Refuses a model trained on another schema than the one the service computes.
    pub fn require_schema(&self, schema: &str, names: &[&str]) -> Result<(), ModelError> {
        let same_names =
            self.feature_names.len() == names.len() && self.feature_names.iter().zip(names).all(|(a, b)| a == b);
        if self.feature_schema != schema || !same_names {
            return Err(ModelError::Schema { found: self.feature_schema.clone(), expected: schema.to_owned() });
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ModelError> {
        let width = self.feature_names.len();
        if self.means.len() != width || self.scales.len() != width {
            return Err(ModelError::Inconsistent("means and scales must have one value per feature".into()));
        }
        if self.scales.iter().any(|scale| !(scale.is_finite() && *scale > 0.0)) {
            return Err(ModelError::Inconsistent("every scale must be positive".into()));
        }
        match &self.body {
            ModelBody::Logistic { weights, intercept } => {
                if weights.len() != width || !intercept.is_finite() || weights.iter().any(|w| !w.is_finite()) {
                    return Err(ModelError::Inconsistent(
                        "a logistic model needs one finite weight per feature".into(),
                    ));
                }
            }
            ModelBody::Tree { nodes } => {
                if nodes.is_empty() {
                    return Err(ModelError::Inconsistent("a tree needs a root".into()));
                }
                for (index, node) in nodes.iter().enumerate() {
                    if let Some(feature) = node.feature {
                        // Children come after their parent, so every walk ends.
                        let children_ok = node.left > index
                            && node.right > index
                            && node.left < nodes.len()
                            && node.right < nodes.len();
                        if feature >= width || !children_ok {
                            return Err(ModelError::Inconsistent(format!("tree node {index} points outside the tree")));
                        }
                    }
                    if !(0.0..=1.0).contains(&node.value) {
                        return Err(ModelError::Inconsistent(format!("tree node {index} has no probability")));
                    }
                }
            }
            ModelBody::Boosted { base, trees, .. } => {
                if !base.is_finite() || trees.is_empty() {
                    return Err(ModelError::Inconsistent("boosted trees need a finite base and a tree".into()));
                }
                for (number, nodes) in trees.iter().enumerate() {
                    if nodes.is_empty() {
                        return Err(ModelError::Inconsistent(format!("boosted tree {number} has no root")));
                    }
                    for (index, node) in nodes.iter().enumerate() {
                        let children_ok = node.feature.is_none_or(|feature| {
                            feature < width
                                && node.left > index
                                && node.right > index
                                && node.left < nodes.len()
                                && node.right < nodes.len()
                        });
                        if !children_ok || !node.value.is_finite() || !node.threshold.is_finite() {
                            return Err(ModelError::Inconsistent(format!(
                                "boosted tree {number} node {index} points outside the tree or is not finite"
                            )));
                        }
                    }
                }
            }
        }
        if let Some(Platt { a, b }) = self.calibration
            && !(a.is_finite() && b.is_finite() && a > 0.0)
        {
            return Err(ModelError::Inconsistent("calibration needs a finite positive slope".into()));
        }
        Ok(())
    }

    fn input(&self, x: &[f64], index: usize) -> f64 {
        let value = x.get(index).copied().unwrap_or(f64::NAN);
        if value.is_finite() { value } else { self.means[index] }
    }

    /// P(fraud) for one feature vector, calibrated when the artefact carries a calibration.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let raw = self.predict_raw(x);
        match self.calibration {
            Some(Platt { a, b }) => sigmoid(a * logit(raw) + b),
            None => raw,
        }
    }

    /// The model's own P(fraud), before calibration.
    pub fn predict_raw(&self, x: &[f64]) -> f64 {
        match &self.body {
            ModelBody::Logistic { intercept, weights } => {
                let mut logit = *intercept;
                for (index, weight) in weights.iter().enumerate() {
                    logit += weight * (self.input(x, index) - self.means[index]) / self.scales[index];
                }
                sigmoid(logit)
            }
            ModelBody::Tree { nodes } => nodes[self.leaf(nodes, x)].value,
            ModelBody::Boosted { base, trees, packed } => {
                let width = self.feature_names.len();
                let whole = x.len() >= width && x[..width].iter().all(|value| value.is_finite());
                let margin = if !packed.is_empty() && whole {
                    base + packed.sum(x)
                } else if !packed.is_empty() {
                    let filled: Vec<f64> = (0..width).map(|index| self.input(x, index)).collect();
                    base + packed.sum(&filled)
                } else {
                    base + trees
                        .iter()
                        .map(|nodes| nodes[crate::boost::leaf(nodes, |feature| self.input(x, feature))].value)
                        .sum::<f64>()
                };
                sigmoid(margin)
            }
        }
    }

    fn leaf(&self, nodes: &[TreeNode], x: &[f64]) -> usize {
        let mut index = 0;
        while let Some(feature) = nodes[index].feature {
            index =
                if self.input(x, feature) < nodes[index].threshold { nodes[index].left } else { nodes[index].right };
        }
        index
    }

    /// Each feature's part in the prediction. For the logistic model: exact additive terms of the
    /// log-odds (weight × standardised input). For a tree: the change in fraud share at each split
    /// on the path, credited to the split's feature (Saabas); root share + the sum = the leaf's.
    pub fn contributions(&self, x: &[f64]) -> Vec<f64> {
        let mut parts = vec![0.0; self.feature_names.len()];
        match &self.body {
            ModelBody::Logistic { weights, .. } => {
                for (index, weight) in weights.iter().enumerate() {
                    parts[index] = weight * (self.input(x, index) - self.means[index]) / self.scales[index];
                }
            }
            ModelBody::Tree { nodes } => {
                let mut index = 0;
                while let Some(feature) = nodes[index].feature {
                    let next = if self.input(x, feature) < nodes[index].threshold {
                        nodes[index].left
                    } else {
                        nodes[index].right
                    };
                    parts[feature] += nodes[next].value - nodes[index].value;
                    index = next;
                }
            }
            ModelBody::Boosted { packed, .. }
                if !packed.is_empty() && x.len() >= parts.len() && x[..parts.len()].iter().all(|v| v.is_finite()) =>
            {
                packed.contributions(x, &mut parts);
            }
            ModelBody::Boosted { trees, .. } => {
                // Per tree as for one tree, on the log-odds scale: exact, since each path's steps
                // add up to its leaf minus its root.
                for nodes in trees {
                    let mut index = 0;
                    while let Some(feature) = nodes[index].feature {
                        let next = if self.input(x, feature) < nodes[index].threshold {
                            nodes[index].left
                        } else {
                            nodes[index].right
                        };
                        parts[feature] += nodes[next].value - nodes[index].value;
                        index = next;
                    }
                }
            }
        }
        parts
    }

    /// The baseline the contributions start from (log-odds at the means, or the root's share).
    pub fn baseline(&self) -> f64 {
        match &self.body {
            ModelBody::Logistic { intercept, .. } => *intercept,
            ModelBody::Tree { nodes } => nodes[0].value,
            ModelBody::Boosted { base, trees, .. } => base + trees.iter().map(|nodes| nodes[0].value).sum::<f64>(),
        }
    }
}

/// The log-odds of a probability, finite at 0 and 1.
pub fn logit(probability: f64) -> f64 {
    let p = probability.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// A probability as the 0–1000 score the API shows.
pub fn to_score(probability: f64) -> u16 {
    let clamped = if probability.is_finite() { probability.clamp(0.0, 1.0) } else { 1.0 };
    // In 0..=1000 by the clamp above.
    (clamped * 1000.0).round() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logistic() -> ModelArtefact {
        ModelArtefact {
            format: ARTEFACT_FORMAT,
            version: "test".into(),
            feature_schema: "test-schema".into(),
            feature_names: vec!["a".into(), "b".into()],
            means: vec![1.0, 0.0],
            scales: vec![2.0, 1.0],
            body: ModelBody::Logistic { intercept: -1.0, weights: vec![2.0, -0.5] },
            trained_at: "now".into(),
            training_rows: 10,
            training_positives: 2,
            calibration: None,
        }
    }

    fn boosted() -> ModelArtefact {
        use crate::boost::BoostNode;
        let split = |feature, threshold, value, cover| BoostNode {
            feature: Some(feature),
            threshold,
            left: 1,
            right: 2,
            value,
            cover,
        };
        let leaf = |value, cover| BoostNode { feature: None, threshold: 0.0, left: 0, right: 0, value, cover };
        let trees = vec![
            vec![split(0, 5.0, 0.1, 4.0), leaf(-0.5, 3.0), leaf(1.9, 1.0)],
            vec![split(1, 0.5, 0.0, 2.0), leaf(-0.25, 1.0), leaf(0.25, 1.0)],
        ];
        ModelArtefact {
            body: ModelBody::Boosted { base: -2.0, trees, packed: Default::default() },
            means: vec![0.0, 0.0],
            scales: vec![1.0, 1.0],
            ..logistic()
        }
    }

    fn tree() -> ModelArtefact {
        let nodes = vec![
            TreeNode { feature: Some(0), threshold: 5.0, left: 1, right: 2, value: 0.1, samples: 100 },
            TreeNode { feature: None, threshold: 0.0, left: 0, right: 0, value: 0.02, samples: 80 },
            TreeNode { feature: Some(1), threshold: 0.5, left: 3, right: 4, value: 0.42, samples: 20 },
            TreeNode { feature: None, threshold: 0.0, left: 0, right: 0, value: 0.1, samples: 10 },
            TreeNode { feature: None, threshold: 0.0, left: 0, right: 0, value: 0.74, samples: 10 },
        ];
        ModelArtefact { body: ModelBody::Tree { nodes }, means: vec![0.0, 0.0], scales: vec![1.0, 1.0], ..logistic() }
    }

    #[test]
    fn logistic_prediction_and_exact_contributions() {
        let model = logistic();
        let x = [3.0, 2.0];
        // z = -1 + 2·(3−1)/2 − 0.5·2 = 0
        assert!((model.predict(&x) - 0.5).abs() < 1e-12);
        let parts = model.contributions(&x);
        assert_eq!(parts, vec![2.0, -1.0]);
        assert!((sigmoid(model.baseline() + parts.iter().sum::<f64>()) - model.predict(&x)).abs() < 1e-12);
        // A missing input takes the training mean: no contribution.
        assert_eq!(model.contributions(&[f64::NAN, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn tree_prediction_and_path_contributions_add_up() {
        let model = tree();
        assert_eq!(model.predict(&[6.0, 1.0]), 0.74);
        assert_eq!(model.predict(&[4.9, 1.0]), 0.02);
        let parts = model.contributions(&[6.0, 1.0]);
        assert!((parts[0] - 0.32).abs() < 1e-12);
        assert!((parts[1] - 0.32).abs() < 1e-12);
        assert!((model.baseline() + parts.iter().sum::<f64>() - 0.74).abs() < 1e-12);
    }

    #[test]
    fn boosted_prediction_adds_up_trees_and_contributions_are_exact() {
        let model = boosted();
        // −2 + 1.9 + 0.25
        assert!((model.predict(&[6.0, 1.0]) - sigmoid(0.15)).abs() < 1e-12);
        // Packed (as read from JSON) it predicts the same, missing inputs at their means too.
        let packed = ModelArtefact::from_json(&model.to_json()).unwrap();
        for x in [[6.0, 1.0], [4.0, 0.0], [f64::NAN, 1.0], [5.0, f64::INFINITY]] {
            assert_eq!(packed.predict(&x), model.predict(&x), "{x:?}");
            assert_eq!(packed.contributions(&x), model.contributions(&x), "{x:?}");
        }
        let parts = model.contributions(&[6.0, 1.0]);
        // Tree 1: 1.9 − 0.1 on feature 0; tree 2: 0.25 − 0 on feature 1.
        assert!((parts[0] - 1.8).abs() < 1e-12 && (parts[1] - 0.25).abs() < 1e-12, "{parts:?}");
        assert!((model.baseline() + parts.iter().sum::<f64>() - 0.15).abs() < 1e-12);
        // A calibration moves the probability, never the order.
        let calibrated = ModelArtefact { calibration: Some(Platt { a: 0.5, b: -0.2 }), ..boosted() };
        assert!((calibrated.predict(&[6.0, 1.0]) - sigmoid(0.5 * 0.15 - 0.2)).abs() < 1e-9);
        assert!(calibrated.predict(&[6.0, 1.0]) > calibrated.predict(&[4.0, 1.0]));
        let bent = ModelArtefact { calibration: Some(Platt { a: -1.0, b: 0.0 }), ..boosted() };
        assert!(matches!(ModelArtefact::from_json(&bent.to_json()), Err(ModelError::Inconsistent(_))));
    }

    #[test]
    fn artefacts_round_trip_and_are_checked() {
        for model in [logistic(), tree(), boosted()] {
            assert_eq!(ModelArtefact::from_json(&model.to_json()).unwrap(), model);
        }
        let mut broken = tree();
        if let ModelBody::Tree { nodes } = &mut broken.body {
            nodes[0].left = 0;
        }
        assert!(matches!(ModelArtefact::from_json(&broken.to_json()), Err(ModelError::Inconsistent(_))));
        let mut future = logistic();
        future.format = 99;
        assert_eq!(ModelArtefact::from_json(&future.to_json()), Err(ModelError::Version { found: 99 }));
        assert!(matches!(ModelArtefact::from_json("{}"), Err(ModelError::Format(_))));
        assert!(matches!(logistic().require_schema("medpay-features-v1", &["a", "b"]), Err(ModelError::Schema { .. })));
        assert!(logistic().require_schema("test-schema", &["a", "b"]).is_ok());
    }

    #[test]
    fn scores_are_integers_0_to_1000() {
        assert_eq!(to_score(0.0), 0);
        assert_eq!(to_score(0.4567), 457);
        assert_eq!(to_score(1.5), 1000);
        assert_eq!(to_score(f64::NAN), 1000);
    }
}
