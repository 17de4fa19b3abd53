//! Training on any labelled CSV: every numeric column except the label and the time column is a
//! feature; rows are split by time (or by order) into training and hold-out; models are fitted
//! with linfa and evaluated on the hold-out.

use crate::boost::{self, BoostOptions};
use crate::features::{FEATURE_NAMES, FEATURE_SCHEMA};
use crate::metrics::{self, Confusion};
use crate::model::{ARTEFACT_FORMAT, ModelArtefact, ModelBody, ModelKind, Platt, TreeNode, sigmoid};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most rows read from a CSV.
pub const CSV_ROWS_MAX: usize = 5_000_000;
/// The false-positive rates the report gives recall at, and the one its threshold is chosen at.
pub const FPR_LOW: f64 = 0.001;
pub const FPR_CHOSEN: f64 = 0.01;
/// Bins of the reliability table in the report.
pub const CALIBRATION_BINS: usize = 10;
/// The newest share of the training rows that boosting holds back to choose its number of trees
/// and to fit (and test) its calibration on.
pub const VALIDATION_SHARE: f64 = 0.15;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot read the CSV: {0}")]
    Csv(String),
    #[error("column {0:?} is not in the CSV; its columns are: {1}")]
    MissingColumn(String, String),
    #[error("row {row}: label {value:?} is not 0/1, true/false or yes/no")]
    Label { row: usize, value: String },
    #[error("row {row}: time {value:?} is neither a number nor a date")]
    Time { row: usize, value: String },
    #[error("no numeric column is left to learn from")]
    NoFeatures,
    #[error("{0}")]
    Data(String),
    #[error("fitting failed: {0}")]
    Fit(String),
}

/// A table of numeric features with binary labels, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub names: Vec<String>,
    pub rows: Vec<Vec<f64>>,
    pub labels: Vec<bool>,
    /// Columns that were not numeric and were left out.
    pub ignored: Vec<String>,
}

fn parse_label(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" | "yes" | "sim" | "fraud" => Some(true),
        "0" | "0.0" | "false" | "no" | "não" | "nao" | "legit" => Some(false),
        _ => None,
    }
}

fn parse_number(raw: &str, decimal_comma: bool) -> Option<f64> {
    let trimmed = raw.trim();
    let number = if decimal_comma { trimmed.replace(',', ".") } else { trimmed.to_owned() };
    number.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// A time value as a number: itself when numeric, else seconds since the epoch of an ISO date or
/// date-time.
fn parse_time(raw: &str) -> Option<f64> {
    let trimmed = raw.trim();
    if let Ok(number) = trimmed.parse::<f64>() {
        return Some(number);
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(trimmed) {
        return Some(at.timestamp() as f64);
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d/%m/%Y %H:%M:%S"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(trimmed, format) {
            return Some(at.and_utc().timestamp() as f64);
        }
    }
    for format in ["%Y-%m-%d", "%d/%m/%Y"] {
        if let Ok(day) = chrono::NaiveDate::parse_from_str(trimmed, format) {
            return day.and_hms_opt(0, 0, 0).map(|at| at.and_utc().timestamp() as f64);
        }
    }
    None
}

impl Dataset {
    /// Reads a CSV with a header. The delimiter is guessed from the header (`,`, `;` or tab); with
    /// `;` a decimal comma is accepted, as Brazilian spreadsheets write it. Rows are sorted by
    /// `time_column` when given (stable, so ties keep file order).
    pub fn from_csv<R: std::io::Read>(
        mut reader: R,
        label: &str,
        time_column: Option<&str>,
    ) -> Result<Dataset, TrainError> {
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(|error| TrainError::Csv(error.to_string()))?;
        let header_line = text.lines().next().unwrap_or_default();
        let delimiter = [b';', b'\t', b',']
            .into_iter()
            .max_by_key(|d| header_line.bytes().filter(|b| b == d).count())
            .unwrap_or(b',');
        let decimal_comma = delimiter == b';';
        let mut csv = csv::ReaderBuilder::new().delimiter(delimiter).trim(csv::Trim::All).from_reader(text.as_bytes());
        let headers: Vec<String> =
            csv.headers().map_err(|error| TrainError::Csv(error.to_string()))?.iter().map(str::to_owned).collect();
        let position = |name: &str| {
            headers
                .iter()
                .position(|header| header == name)
                .ok_or_else(|| TrainError::MissingColumn(name.to_owned(), headers.join(", ")))
        };
        let label_index = position(label)?;
        let time_index = time_column.map(position).transpose()?;
        let mut records = Vec::new();
        for (row, record) in csv.records().enumerate() {
            if row >= CSV_ROWS_MAX {
                return Err(TrainError::Data(format!("more than {CSV_ROWS_MAX} rows")));
            }
            records.push(record.map_err(|error| TrainError::Csv(error.to_string()))?);
        }
        if records.is_empty() {
            return Err(TrainError::Data("the CSV has no rows".into()));
        }
        // A column is a feature when every non-empty value in it is a number.
        let candidates: Vec<usize> =
            (0..headers.len()).filter(|index| Some(*index) != time_index && *index != label_index).collect();
        let (features, ignored): (Vec<usize>, Vec<usize>) = candidates.into_iter().partition(|index| {
            let mut any = false;
            let numeric = records.iter().all(|record| {
                let value = record.get(*index).unwrap_or("");
                any |= !value.is_empty();
                value.is_empty() || parse_number(value, decimal_comma).is_some()
            });
            numeric && any
        });
        if features.is_empty() {
            return Err(TrainError::NoFeatures);
        }
        let mut table = Vec::with_capacity(records.len());
        for (row, record) in records.iter().enumerate() {
            let raw_label = record.get(label_index).unwrap_or("");
            let label = parse_label(raw_label)
                .ok_or_else(|| TrainError::Label { row: row + 2, value: raw_label.to_owned() })?;
            let time = match time_index {
                Some(index) => {
                    let raw = record.get(index).unwrap_or("");
                    parse_time(raw).ok_or_else(|| TrainError::Time { row: row + 2, value: raw.to_owned() })?
                }
                None => row as f64,
            };
            let values = features
                .iter()
                .map(|index| parse_number(record.get(*index).unwrap_or(""), decimal_comma).unwrap_or(f64::NAN))
                .collect::<Vec<f64>>();
            table.push((time, values, label));
        }
        table.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Dataset {
            names: features.iter().map(|index| headers[*index].clone()).collect(),
            labels: table.iter().map(|(_, _, label)| *label).collect(),
            rows: table.into_iter().map(|(_, values, _)| values).collect(),
            ignored: ignored.iter().map(|index| headers[*index].clone()).collect(),
        })
    }

    /// The first `1 − holdout` of the rows (the oldest) for training, the rest for evaluation.
    pub fn split(&self, holdout: f64) -> Result<(Dataset, Dataset), TrainError> {
        if !(holdout > 0.0 && holdout < 1.0) {
            return Err(TrainError::Data("holdout must be strictly between 0 and 1".into()));
        }
        let cut = ((self.rows.len() as f64) * (1.0 - holdout)).round() as usize;
        let part = |range: std::ops::Range<usize>| Dataset {
            names: self.names.clone(),
            rows: self.rows[range.clone()].to_vec(),
            labels: self.labels[range].to_vec(),
            ignored: self.ignored.clone(),
        };
        let (train, test) = (part(0..cut), part(cut..self.rows.len()));
        for (name, set) in [("training", &train), ("hold-out", &test)] {
            let positives = set.labels.iter().filter(|label| **label).count();
            if positives == 0 || positives == set.labels.len() {
                return Err(TrainError::Data(format!(
                    "the {name} part needs both classes; it has {positives} positives in {} rows",
                    set.labels.len()
                )));
            }
        }
        Ok((train, test))
    }

    pub fn positives(&self) -> usize {
        self.labels.iter().filter(|label| **label).count()
    }

    /// The schema: ours when the columns are exactly our features, else one named by the columns.
    pub fn schema(&self) -> String {
        if self.names.iter().map(String::as_str).eq(FEATURE_NAMES.iter().copied()) {
            FEATURE_SCHEMA.to_owned()
        } else {
            let digest = Sha256::digest(self.names.join("\u{1f}").as_bytes());
            format!("csv:{}", &hex::encode(digest)[..16])
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub logistic_iterations: u64,
    /// L2 penalty of the logistic regression.
    pub logistic_alpha: f64,
    pub tree_depth_max: usize,
    pub tree_leaf_rows_min: f32,
    pub boost: BoostOptions,
    /// A name part of the version, e.g. the training time.
    pub version_tag: String,
    pub trained_at: String,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            logistic_iterations: 200,
            logistic_alpha: 1e-3,
            tree_depth_max: 8,
            tree_leaf_rows_min: 20.0,
            boost: BoostOptions::default(),
            version_tag: "dev".into(),
            trained_at: String::new(),
        }
    }
}

fn standardisation(data: &Dataset) -> (Vec<f64>, Vec<f64>) {
    let width = data.names.len();
    let (mut sums, mut counts) = (vec![0.0; width], vec![0usize; width]);
    for row in &data.rows {
        for (index, value) in row.iter().enumerate().filter(|(_, value)| value.is_finite()) {
            sums[index] += value;
            counts[index] += 1;
        }
    }
    let means: Vec<f64> =
        sums.iter().zip(&counts).map(|(sum, count)| if *count > 0 { sum / *count as f64 } else { 0.0 }).collect();
    let mut squares = vec![0.0; width];
    for row in &data.rows {
        for (index, value) in row.iter().enumerate().filter(|(_, value)| value.is_finite()) {
            squares[index] += (value - means[index]).powi(2);
        }
    }
    let scales = squares
        .iter()
        .zip(&counts)
        .map(|(square, count)| {
            let deviation = if *count > 1 { (square / (*count - 1) as f64).sqrt() } else { 0.0 };
            if deviation > 1e-12 { deviation } else { 1.0 }
        })
        .collect();
    (means, scales)
}

fn matrix(data: &Dataset, means: &[f64], scales: Option<&[f64]>) -> Array2<f64> {
    let width = data.names.len();
    Array2::from_shape_fn((data.rows.len(), width), |(row, column)| {
        let value = data.rows[row][column];
        let value = if value.is_finite() { value } else { means[column] };
        match scales {
            Some(scales) => (value - means[column]) / scales[column],
            None => value,
        }
    })
}

/// Fits one model on `data`.
pub fn fit(data: &Dataset, kind: ModelKind, options: &TrainOptions) -> Result<ModelArtefact, TrainError> {
    let (means, scales) = standardisation(data);
    let (body, calibration) = match kind {
        ModelKind::Logistic => (fit_logistic(data, &means, &scales, options)?, None),
        ModelKind::Tree => (fit_tree(data, &means, options)?, None),
        ModelKind::Boosted => fit_boosted(data, &means, options)?,
    };
    let (means, scales) = match kind {
        ModelKind::Logistic => (means, scales),
        // Trees split on raw values; they keep the means only to stand in for missing inputs.
        ModelKind::Tree | ModelKind::Boosted => (means, vec![1.0; data.names.len()]),
    };
    Ok(ModelArtefact {
        format: ARTEFACT_FORMAT,
        version: format!("{}-{}", kind.as_str(), options.version_tag),
        feature_schema: data.schema(),
        feature_names: data.names.clone(),
        means,
        scales,
        body,
        trained_at: options.trained_at.clone(),
        training_rows: data.rows.len(),
        training_positives: data.positives(),
        calibration,
    })
}

/// Boosted trees, with the newest `VALIDATION_SHARE` of the rows choosing the number of trees (then
/// refitted on every row) and the calibration.
fn fit_boosted(
    data: &Dataset,
    means: &[f64],
    options: &TrainOptions,
) -> Result<(ModelBody, Option<Platt>), TrainError> {
    let rows: Vec<Vec<f64>> = data
        .rows
        .iter()
        .map(|row| row.iter().zip(means).map(|(value, mean)| if value.is_finite() { *value } else { *mean }).collect())
        .collect();
    let validation = ((rows.len() as f64) * VALIDATION_SHARE).round() as usize;
    let fitted = boost::fit(&rows, &data.labels, validation, &options.boost, &|_, _| {}).map_err(TrainError::Fit)?;
    // Fitted on the validation rows as the first fit scored them (unseen): the refit on every row
    // has about as many trees per row, so its log-odds are on the same scale.
    let start = rows.len() - fitted.validation_margins.len();
    let calibration = calibrate(&fitted.validation_margins, &data.labels[start..]);
    let packed = boost::Packed::of(&fitted.trees);
    Ok((ModelBody::Boosted { base: fitted.base, trees: fitted.trees, packed }, calibration))
}

/// Platt scaling, when it helps: fitted on the older half of the rows given (log-odds and labels
/// the model was not fitted on), kept only when it lowers the Brier score on the newer half, and
/// then fitted on them all.
pub fn calibrate(margins: &[f64], labels: &[bool]) -> Option<Platt> {
    let half = margins.len() / 2;
    let (a, b) = boost::platt(&margins[..half], &labels[..half])?;
    let brier = |transform: &dyn Fn(f64) -> f64| {
        let probabilities: Vec<f64> = margins[half..].iter().map(|z| transform(*z)).collect();
        metrics::brier_score(&probabilities, &labels[half..])
    };
    let (raw, scaled) = (brier(&|z| sigmoid(z))?, brier(&|z| sigmoid(a * z + b))?);
    if scaled >= raw {
        return None;
    }
    boost::platt(margins, labels).map(|(a, b)| Platt { a, b })
}

fn fit_logistic(
    data: &Dataset,
    means: &[f64],
    scales: &[f64],
    options: &TrainOptions,
) -> Result<ModelBody, TrainError> {
    let x = matrix(data, means, Some(scales));
    let y = Array1::from(data.labels.clone());
    let dataset = linfa::Dataset::new(x, y);
    // linfa's optimiser can panic on degenerate data (rust-ml/linfa#334): report it as an error.
    let fitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        LogisticRegression::default()
            .max_iterations(options.logistic_iterations)
            .alpha(options.logistic_alpha)
            .fit(&dataset)
    }))
    .map_err(|_| TrainError::Fit("the logistic regression optimiser panicked".into()))?
    .map_err(|error| TrainError::Fit(error.to_string()))?;
    // linfa's "positive" class is the one it learned as such, not necessarily fraud.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(ModelBody::Logistic {
        intercept: sign * fitted.intercept(),
        weights: fitted.params().iter().map(|w| sign * w).collect(),
    })
}

fn fit_tree(data: &Dataset, means: &[f64], options: &TrainOptions) -> Result<ModelBody, TrainError> {
    let x = matrix(data, means, None);
    let y: Array1<usize> = data.labels.iter().map(|label| usize::from(*label)).collect();
    let dataset = linfa::Dataset::new(x, y);
    // Small files still get splits: at most 1 % of the rows a leaf, within the configured minimum.
    let leaf_rows_min = (data.rows.len() as f32 / 100.0).clamp(1.0, options.tree_leaf_rows_min);
    let tree = DecisionTree::params()
        .max_depth(Some(options.tree_depth_max))
        .min_weight_leaf(leaf_rows_min)
        .fit(&dataset)
        .map_err(|error| TrainError::Fit(error.to_string()))?;
    let mut nodes = Vec::new();
    flatten(tree.root_node(), &mut nodes);
    // Each node's value is the fraud share of the training rows that reach it.
    let mut counts = vec![(0usize, 0usize); nodes.len()];
    for (row, label) in data.rows.iter().zip(&data.labels) {
        let mut index = 0;
        loop {
            counts[index].0 += 1;
            counts[index].1 += usize::from(*label);
            let Some(feature) = nodes[index].feature else { break };
            let value = if row[feature].is_finite() { row[feature] } else { means[feature] };
            index = if value < nodes[index].threshold { nodes[index].left } else { nodes[index].right };
        }
    }
    let root_share = data.positives() as f64 / data.rows.len().max(1) as f64;
    for (node, (samples, positives)) in nodes.iter_mut().zip(counts) {
        node.samples = samples;
        node.value = if samples > 0 { positives as f64 / samples as f64 } else { root_share };
    }
    Ok(ModelBody::Tree { nodes })
}

/// Copies linfa's tree into a flat vector, parents before children.
fn flatten(node: &linfa_trees::TreeNode<f64, usize>, nodes: &mut Vec<TreeNode>) -> usize {
    let index = nodes.len();
    nodes.push(TreeNode { feature: None, threshold: 0.0, left: 0, right: 0, value: 0.0, samples: 0 });
    let children = node.children();
    if let (false, Some(Some(left)), Some(Some(right))) =
        (node.is_leaf(), children.first().copied(), children.get(1).copied())
    {
        let (feature, threshold, _) = node.split();
        let left = flatten(left, nodes);
        let right = flatten(right, nodes);
        nodes[index] = TreeNode { feature: Some(feature), threshold, left, right, value: 0.0, samples: 0 };
    }
    index
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub rows: usize,
    pub positives: usize,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub recall_at_fpr_0_1_percent: Option<f64>,
    pub recall_at_fpr_1_percent: Option<f64>,
    /// The probability threshold at 1 % false-positive rate on the hold-out, and as a 0–1000 score.
    pub threshold: Option<f64>,
    pub threshold_score: Option<u16>,
    pub confusion_matrix: Option<Confusion>,
    /// How well the probabilities are calibrated: Brier score and a 10-bin reliability table.
    pub brier_score: Option<f64>,
    pub calibration: Vec<metrics::CalibrationBin>,
    /// What the plots are drawn from (absent in reports written before they were kept).
    #[serde(default)]
    pub curves: metrics::Curves,
}

pub fn evaluate(model: &ModelArtefact, data: &Dataset) -> Evaluation {
    let scores: Vec<f64> = data.rows.iter().map(|row| model.predict(row)).collect();
    let labels = &data.labels;
    let threshold = metrics::threshold_at_fpr(&scores, labels, FPR_CHOSEN);
    Evaluation {
        rows: data.rows.len(),
        positives: data.positives(),
        roc_auc: metrics::roc_auc(&scores, labels),
        pr_auc: metrics::pr_auc(&scores, labels),
        recall_at_fpr_0_1_percent: metrics::recall_at_fpr(&scores, labels, FPR_LOW),
        recall_at_fpr_1_percent: metrics::recall_at_fpr(&scores, labels, FPR_CHOSEN),
        threshold,
        threshold_score: threshold.map(crate::model::to_score),
        confusion_matrix: threshold.map(|threshold| metrics::confusion(&scores, labels, threshold)),
        brier_score: metrics::brier_score(&scores, labels),
        calibration: metrics::calibration(&scores, labels, CALIBRATION_BINS),
        curves: metrics::curves(&scores, labels),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureWeight {
    pub name: String,
    /// Logistic: the weight per standard deviation. Tree: the fraud-share change credited to the
    /// feature over the training rows (mean absolute Saabas contribution); boosted trees: the
    /// same on the log-odds scale.
    pub importance: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub model_version: String,
    pub kind: ModelKind,
    pub feature_schema: String,
    pub features: Vec<String>,
    pub ignored_columns: Vec<String>,
    pub training_rows: usize,
    pub training_positives: usize,
    pub holdout: Evaluation,
    pub top_features: Vec<FeatureWeight>,
    /// The Platt scaling applied after the model (none: it did not help, or the kind has none).
    #[serde(default)]
    pub calibration: Option<Platt>,
    /// Boosted trees: how many the validation rows kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trees: Option<usize>,
}

/// Features by importance, most important first (at most 10).
pub fn importance(model: &ModelArtefact, data: &Dataset) -> Vec<FeatureWeight> {
    let mut weights: Vec<f64> = match &model.body {
        ModelBody::Logistic { weights, .. } => weights.clone(),
        ModelBody::Tree { .. } | ModelBody::Boosted { .. } => {
            let mut totals = vec![0.0; model.feature_names.len()];
            for row in &data.rows {
                for (total, part) in totals.iter_mut().zip(model.contributions(row)) {
                    *total += part.abs();
                }
            }
            totals.iter().map(|total| total / data.rows.len().max(1) as f64).collect()
        }
    };
    let mut ranked: Vec<FeatureWeight> = model
        .feature_names
        .iter()
        .zip(weights.drain(..))
        .map(|(name, importance)| FeatureWeight { name: name.clone(), importance })
        .collect();
    ranked.sort_by(|a, b| b.importance.abs().total_cmp(&a.importance.abs()));
    ranked.truncate(10);
    ranked
}

pub fn report(model: &ModelArtefact, train: &Dataset, test: &Dataset) -> Report {
    Report {
        model_version: model.version.clone(),
        kind: model.kind(),
        feature_schema: model.feature_schema.clone(),
        features: model.feature_names.clone(),
        ignored_columns: train.ignored.clone(),
        training_rows: train.rows.len(),
        training_positives: train.positives(),
        holdout: evaluate(model, test),
        top_features: importance(model, train),
        calibration: model.calibration,
        trees: match &model.body {
            ModelBody::Boosted { trees, .. } => Some(trees.len()),
            _ => None,
        },
    }
}

fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |value| format!("{value:.digits$}"))
}

impl Report {
    /// The report in words, for a person.
    pub fn to_text(&self) -> String {
        let holdout = &self.holdout;
        let mut text = format!(
            "Model {version} ({kind})\nFeature schema: {schema}\nFeatures ({count}): {features}\n",
            version = self.model_version,
            kind = self.kind.as_str(),
            schema = self.feature_schema,
            count = self.features.len(),
            features = self.features.join(", "),
        );
        if !self.ignored_columns.is_empty() {
            text += &format!("Columns left out (not numeric): {}\n", self.ignored_columns.join(", "));
        }
        text += &format!(
            "Training rows: {} ({} fraud)\nHold-out rows: {} ({} fraud)\n\nROC-AUC: {}\nPR-AUC (average precision): {}\nRecall at 0.1% false positives: {}\nRecall at 1% false positives: {}\n",
            self.training_rows,
            self.training_positives,
            holdout.rows,
            holdout.positives,
            optional(holdout.roc_auc, 4),
            optional(holdout.pr_auc, 4),
            optional(holdout.recall_at_fpr_0_1_percent, 4),
            optional(holdout.recall_at_fpr_1_percent, 4),
        );
        if let (Some(threshold), Some(score), Some(matrix)) =
            (holdout.threshold, holdout.threshold_score, holdout.confusion_matrix)
        {
            text += &format!(
                "\nChosen threshold (1% false positives on the hold-out): probability {threshold:.4}, score {score}\n\
                 Confusion matrix at that threshold:\n                 flagged   passed\n  fraud        {tp:>10} {fnn:>8}\n  legitimate   {fp:>10} {tn:>8}\n",
                tp = matrix.true_positives,
                fnn = matrix.false_negatives,
                fp = matrix.false_positives,
                tn = matrix.true_negatives,
            );
        }
        if let Some(trees) = self.trees {
            text += &format!("\nTrees kept (by the validation rows): {trees}\n");
        }
        text += &match self.calibration {
            Some(Platt { a, b }) => format!("\nCalibration step: Platt scaling, P = σ({a:.4}·z {b:+.4})\n"),
            None => "\nCalibration step: none (Platt scaling did not lower the Brier score, or the kind has none)\n"
                .to_owned(),
        };
        text += &format!(
            "Brier score: {}\nCalibration (predicted → observed fraud share, rows):\n",
            optional(holdout.brier_score, 4)
        );
        for bin in &holdout.calibration {
            text += &format!(
                "  {:.1}–{:.1}: {:.3} → {:.3} ({})\n",
                bin.from, bin.to, bin.mean_predicted, bin.observed, bin.count
            );
        }
        text += "\nMost important features:\n";
        for weight in &self.top_features {
            text += &format!("  {:<32} {:+.4}\n", weight.name, weight.importance);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "id;when;amount;hour;note;is_fraud\n\
        1;2026-01-03;10,5;10;a;0\n\
        2;2026-01-01;900;3;b;1\n\
        3;2026-01-02;12;11;c;0\n\
        4;2026-01-05;850;2;d;1\n\
        5;2026-01-04;11;;e;no\n\
        6;2026-01-06;14;14;f;0\n\
        7;2026-01-08;950;4;g;yes\n\
        8;2026-01-07;9;9;h;0\n";

    #[test]
    fn a_csv_from_elsewhere_is_read_as_it_is() {
        let data = Dataset::from_csv(SMALL.as_bytes(), "is_fraud", Some("when")).unwrap();
        assert_eq!(data.names, vec!["id", "amount", "hour"]);
        assert_eq!(data.ignored, vec!["note"]);
        // Sorted by date: ids 2, 3, 1, 5, 4, 6, 8, 7.
        let ids: Vec<f64> = data.rows.iter().map(|row| row[0]).collect();
        assert_eq!(ids, vec![2.0, 3.0, 1.0, 5.0, 4.0, 6.0, 8.0, 7.0]);
        assert_eq!(data.rows[2][1], 10.5, "decimal comma with ; delimiter");
        assert!(data.rows[3][2].is_nan(), "an empty cell is missing");
        assert_eq!(data.labels, vec![true, false, false, false, true, false, false, true]);
        assert!(data.schema().starts_with("csv:"));
        let (train, test) = data.split(0.5).unwrap();
        assert_eq!((train.rows.len(), test.rows.len()), (4, 4));
    }

    #[test]
    fn bad_csvs_say_what_is_wrong() {
        let missing = Dataset::from_csv(SMALL.as_bytes(), "label", None).unwrap_err();
        assert!(missing.to_string().contains("id, when, amount, hour, note, is_fraud"), "{missing}");
        let bad_label = Dataset::from_csv("a,b\n1,maybe\n".as_bytes(), "b", None).unwrap_err();
        assert!(matches!(bad_label, TrainError::Label { row: 2, .. }));
        let no_features = Dataset::from_csv("a,b\nx,1\n".as_bytes(), "b", None).unwrap_err();
        assert!(matches!(no_features, TrainError::NoFeatures));
        let one_class = Dataset::from_csv("a,b\n1,0\n2,0\n3,0\n4,1\n".as_bytes(), "b", None).unwrap();
        assert!(one_class.split(0.25).is_err(), "the hold-out has only fraud");
    }

    fn separable(rows: usize) -> Dataset {
        // Fraud when x > 0.7, noise in the second column.
        let mut state = 42u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut data = Dataset {
            names: vec!["x".into(), "noise".into()],
            rows: Vec::new(),
            labels: Vec::new(),
            ignored: Vec::new(),
        };
        for _ in 0..rows {
            let (x, noise) = (next(), next());
            data.rows.push(vec![x, noise]);
            data.labels.push(x > 0.7);
        }
        data
    }

    #[test]
    fn every_kind_learns_a_separable_rule() {
        let data = separable(2_000);
        let (train, test) = data.split(0.25).unwrap();
        for kind in ModelKind::ALL {
            let model = fit(&train, kind, &TrainOptions::default()).unwrap();
            let evaluation = evaluate(&model, &test);
            assert!(evaluation.roc_auc.unwrap() > 0.97, "{kind:?}: {evaluation:?}");
            assert!(model.predict(&[0.95, 0.5]) > model.predict(&[0.1, 0.5]), "{kind:?} ranks fraud higher");
            let top = importance(&model, &train);
            assert_eq!(top[0].name, "x", "{kind:?}: {top:?}");
            let report = report(&model, &train, &test);
            assert!(report.to_text().contains("ROC-AUC"));
        }
    }

    #[test]
    fn calibration_is_kept_only_when_it_helps() {
        // Log-odds twice as confident as the truth: Platt halves them.
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let margins: Vec<f64> = (0..4_000).map(|i| (i % 400) as f64 / 40.0 - 5.0).collect();
        let labels: Vec<bool> = margins.iter().map(|z| next() < sigmoid(z / 2.0)).collect();
        let platt = calibrate(&margins, &labels).expect("over-confident scores are calibrated");
        assert!((platt.a - 0.5).abs() < 0.1, "{platt:?}");
        // Already calibrated: Platt finds (about) the identity; kept or not, it changes little.
        let honest: Vec<bool> = margins.iter().map(|z| next() < sigmoid(*z)).collect();
        if let Some(platt) = calibrate(&margins, &honest) {
            assert!((platt.a - 1.0).abs() < 0.15 && platt.b.abs() < 0.15, "{platt:?}");
        }
        assert_eq!(calibrate(&margins[..10], &[false; 10]), None, "one class: nothing to fit");
    }
}
