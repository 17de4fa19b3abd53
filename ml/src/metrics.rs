//! Evaluation of scores against labels: ROC-AUC, PR-AUC (average precision), recall at a fixed
//! false-positive rate, and the confusion matrix at a threshold.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
}

/// Area under the ROC curve: the probability that a random fraud scores above a random legitimate
/// payment, ties counting one half (Mann–Whitney U over average ranks).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|label| **label).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum_positive = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start+1..=end+1 share their average.
        let average_rank = (start + end + 2) as f64 / 2.0;
        rank_sum_positive += average_rank * order[start..=end].iter().filter(|index| labels[**index]).count() as f64;
        start = end + 1;
    }
    let positives = positives as f64;
    Some((rank_sum_positive - positives * (positives + 1.0) / 2.0) / (positives * negatives as f64))
}

/// Area under the precision–recall curve as average precision: Σ (Rₖ − Rₖ₋₁) · Pₖ over the
/// distinct thresholds, highest first.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|label| **label).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut true_positives, mut seen, mut previous_recall, mut area) = (0usize, 0usize, 0.0, 0.0);
    let mut index = 0;
    while index < order.len() {
        let threshold = scores[order[index]];
        while index < order.len() && scores[order[index]] == threshold {
            seen += 1;
            true_positives += usize::from(labels[order[index]]);
            index += 1;
        }
        let recall = true_positives as f64 / positives as f64;
        let precision = true_positives as f64 / seen as f64;
        area += (recall - previous_recall) * precision;
        previous_recall = recall;
    }
    Some(area)
}

/// The lowest threshold whose false-positive rate (scores ≥ threshold) stays within `rate`.
pub fn threshold_at_fpr(scores: &[f64], labels: &[bool], rate: f64) -> Option<f64> {
    let mut negatives: Vec<f64> = scores.iter().zip(labels).filter(|(_, label)| !**label).map(|(s, _)| *s).collect();
    if negatives.is_empty() {
        return None;
    }
    negatives.sort_by(|a, b| b.total_cmp(a));
    let allowed = (rate * negatives.len() as f64).floor() as usize;
    // Flagging scores ≥ t lets through every negative at or above t: t must sit above the
    // (allowed+1)-th highest negative.
    let boundary = negatives.get(allowed).copied()?;
    // The lowest score above the boundary, so that the threshold is a score that occurred.
    let lowest_above = scores.iter().copied().filter(|score| *score > boundary).fold(f64::INFINITY, f64::min);
    Some(if lowest_above.is_finite() { lowest_above } else { next_up(boundary) })
}

fn next_up(value: f64) -> f64 {
    if value.is_infinite() { value } else { f64::from_bits(value.to_bits() + if value >= 0.0 { 1 } else { u64::MAX }) }
}

pub fn confusion(scores: &[f64], labels: &[bool], threshold: f64) -> Confusion {
    let mut matrix = Confusion { true_positives: 0, false_positives: 0, true_negatives: 0, false_negatives: 0 };
    for (score, label) in scores.iter().zip(labels) {
        match (*score >= threshold, *label) {
            (true, true) => matrix.true_positives += 1,
            (true, false) => matrix.false_positives += 1,
            (false, false) => matrix.true_negatives += 1,
            (false, true) => matrix.false_negatives += 1,
        }
    }
    matrix
}

/// Recall among frauds when no more than `rate` of legitimate payments are flagged.
pub fn recall_at_fpr(scores: &[f64], labels: &[bool], rate: f64) -> Option<f64> {
    let threshold = threshold_at_fpr(scores, labels, rate)?;
    let matrix = confusion(scores, labels, threshold);
    let positives = matrix.true_positives + matrix.false_negatives;
    (positives > 0).then(|| matrix.true_positives as f64 / positives as f64)
}

/// One bin of a reliability table: predictions in [from, to), their mean, and the observed fraud
/// share among them. A calibrated model has `mean_predicted` close to `observed` in every bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub from: f64,
    pub to: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed: f64,
}

/// Mean squared error of the probabilities against the 0/1 labels (lower is better).
pub fn brier_score(probabilities: &[f64], labels: &[bool]) -> Option<f64> {
    if probabilities.is_empty() {
        return None;
    }
    let total: f64 =
        probabilities.iter().zip(labels).map(|(p, label)| (p - if *label { 1.0 } else { 0.0 }).powi(2)).sum();
    Some(total / probabilities.len() as f64)
}

/// A reliability table over `bins` equal-width bins of [0, 1]; empty bins are left out.
pub fn calibration(probabilities: &[f64], labels: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut sums = vec![(0usize, 0.0, 0usize); bins];
    for (probability, label) in probabilities.iter().zip(labels) {
        let index = ((probability.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[index].0 += 1;
        sums[index].1 += probability;
        sums[index].2 += usize::from(*label);
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (count, _, _))| *count > 0)
        .map(|(index, (count, total, positives))| CalibrationBin {
            from: index as f64 / bins as f64,
            to: (index + 1) as f64 / bins as f64,
            count: *count,
            mean_predicted: total / *count as f64,
            observed: *positives as f64 / *count as f64,
        })
        .collect()
}

/// Points of a curve, each `[x, y]`, in the order they are drawn.
pub type Curve = Vec<[f64; 2]>;

/// The curves a report is drawn from: ROC (false-positive rate, recall), precision–recall
/// (recall, precision), and the score distribution of each class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    pub roc: Curve,
    pub precision_recall: Curve,
    /// Rows per score bin of `SCORE_BINS` equal bins of [0, 1], by label.
    pub scores_fraud: Vec<usize>,
    pub scores_legitimate: Vec<usize>,
}

/// Bins of the score distribution.
pub const SCORE_BINS: usize = 20;
/// Most points kept of a curve: enough to draw, small enough to store with every model.
pub const CURVE_POINTS_MAX: usize = 200;

/// Keeps at most `max` points, evenly by index, always the first and the last.
fn thin(points: Curve, max: usize) -> Curve {
    if points.len() <= max || max < 2 {
        return points;
    }
    let last = points.len() - 1;
    (0..max).map(|k| points[k * last / (max - 1)]).collect()
}

/// The ROC and precision–recall curves over the distinct thresholds (highest first), and the
/// score histogram by label. Empty curves when a class is missing.
pub fn curves(scores: &[f64], labels: &[bool]) -> Curves {
    let positives = labels.iter().filter(|label| **label).count();
    let negatives = labels.len() - positives;
    let mut histogram = (vec![0usize; SCORE_BINS], vec![0usize; SCORE_BINS]);
    for (score, label) in scores.iter().zip(labels) {
        let bin = ((score.clamp(0.0, 1.0) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
        if *label { histogram.0[bin] += 1 } else { histogram.1[bin] += 1 }
    }
    let (mut roc, mut precision_recall) = (vec![[0.0, 0.0]], Vec::new());
    if positives > 0 && negatives > 0 {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        let (mut true_positives, mut false_positives, mut index) = (0usize, 0usize, 0);
        while index < order.len() {
            let threshold = scores[order[index]];
            while index < order.len() && scores[order[index]] == threshold {
                if labels[order[index]] {
                    true_positives += 1
                } else {
                    false_positives += 1
                }
                index += 1;
            }
            let recall = true_positives as f64 / positives as f64;
            roc.push([false_positives as f64 / negatives as f64, recall]);
            precision_recall.push([recall, true_positives as f64 / (true_positives + false_positives) as f64]);
        }
    } else {
        roc.clear();
    }
    Curves {
        roc: thin(roc, CURVE_POINTS_MAX),
        precision_recall: thin(precision_recall, CURVE_POINTS_MAX),
        scores_fraud: histogram.0,
        scores_legitimate: histogram.1,
    }
}

/// Precision and recall when payments at or above a per-payment threshold are flagged (each
/// payment judged by its own provider's threshold).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AtThresholds {
    pub flagged: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

pub fn at_thresholds(scores: &[u16], thresholds: &[u16], labels: &[bool]) -> AtThresholds {
    let (mut flagged, mut caught, mut positives) = (0usize, 0usize, 0usize);
    for ((score, threshold), label) in scores.iter().zip(thresholds).zip(labels) {
        let hit = score >= threshold;
        flagged += usize::from(hit);
        caught += usize::from(hit && *label);
        positives += usize::from(*label);
    }
    AtThresholds {
        flagged,
        precision: (flagged > 0).then(|| caught as f64 / flagged as f64),
        recall: (positives > 0).then(|| caught as f64 / positives as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Small cases worked out by hand.
    const SCORES: [f64; 6] = [0.9, 0.8, 0.7, 0.6, 0.55, 0.1];
    const LABELS: [bool; 6] = [true, false, true, false, false, false];

    #[test]
    fn roc_auc_by_hand() {
        // Positives 0.9 and 0.7 against negatives 0.8, 0.6, 0.55, 0.1: 0.9 beats 4, 0.7 beats 3.
        assert_eq!(roc_auc(&SCORES, &LABELS), Some(7.0 / 8.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5), "a tie counts one half");
        assert_eq!(roc_auc(&[0.5], &[true]), None);
    }

    #[test]
    fn average_precision_by_hand() {
        // At 0.9: R 1/2, P 1. At 0.7: R 1, P 2/3. AP = 1/2·1 + 1/2·2/3 = 5/6.
        assert!((pr_auc(&SCORES, &LABELS).unwrap() - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn brier_and_calibration_by_hand() {
        // (0.9−1)² + (0.8−0)² + (0.7−1)² + 0.6² + 0.55² + 0.1² = 0.01+0.64+0.09+0.36+0.3025+0.01
        assert!((brier_score(&SCORES, &LABELS).unwrap() - 1.4125 / 6.0).abs() < 1e-12);
        let table = calibration(&SCORES, &LABELS, 2);
        assert_eq!(table.len(), 2);
        assert_eq!((table[0].count, table[0].observed), (1, 0.0));
        assert_eq!(table[1].count, 5);
        assert!((table[1].mean_predicted - 3.55 / 5.0).abs() < 1e-12);
        assert!((table[1].observed - 0.4).abs() < 1e-12);
    }

    #[test]
    fn recall_at_fixed_fpr_by_hand() {
        // Four negatives: at most 0 may be flagged at 10 %: threshold above 0.8 → recall 1/2.
        assert_eq!(recall_at_fpr(&SCORES, &LABELS, 0.10), Some(0.5));
        // At 25 % one negative may be flagged (0.8): threshold 0.7 catches both frauds.
        assert_eq!(threshold_at_fpr(&SCORES, &LABELS, 0.25), Some(0.7));
        assert_eq!(recall_at_fpr(&SCORES, &LABELS, 0.25), Some(1.0));
        let matrix = confusion(&SCORES, &LABELS, 0.7);
        assert_eq!(matrix, Confusion { true_positives: 2, false_positives: 1, true_negatives: 3, false_negatives: 0 });
    }

    #[test]
    fn curves_by_hand() {
        let curves = curves(&SCORES, &LABELS);
        // Thresholds 0.9 (TP), 0.8 (FP), 0.7 (TP), 0.6, 0.55, 0.1 (FPs).
        assert_eq!(
            curves.roc,
            vec![[0.0, 0.0], [0.0, 0.5], [0.25, 0.5], [0.25, 1.0], [0.5, 1.0], [0.75, 1.0], [1.0, 1.0]]
        );
        assert_eq!(curves.precision_recall[0], [0.5, 1.0]);
        assert_eq!(curves.precision_recall[2], [1.0, 2.0 / 3.0]);
        assert_eq!(curves.scores_fraud.iter().sum::<usize>(), 2);
        assert_eq!(curves.scores_legitimate[2], 1, "0.1 falls in the third of 20 bins");
        assert!(super::curves(&[0.5], &[true]).roc.is_empty(), "one class: no curve");
        let long: Vec<f64> = (0..10_000).map(|i| i as f64 / 10_000.0).collect();
        let labels: Vec<bool> = (0..10_000).map(|i| i % 7 == 0).collect();
        let thinned = super::curves(&long, &labels);
        assert_eq!(thinned.roc.len(), CURVE_POINTS_MAX);
        assert_eq!(thinned.roc.last(), Some(&[1.0, 1.0]));
    }

    #[test]
    fn precision_and_recall_at_each_payments_own_threshold() {
        // Scores 900 (fraud), 300 (fraud), 300 (legitimate) against thresholds 800, 200, 400.
        let at = at_thresholds(&[900, 300, 300], &[800, 200, 400], &[true, true, false]);
        assert_eq!(at, AtThresholds { flagged: 2, precision: Some(1.0), recall: Some(1.0) });
        let none = at_thresholds(&[100], &[200], &[false]);
        assert_eq!((none.flagged, none.precision, none.recall), (0, None, None));
    }
}
