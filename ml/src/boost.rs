//! Gradient-boosted trees for log-loss, grown on feature histograms (the method LightGBM and
//! XGBoost's `hist` use): each feature's values are cut into at most `bins` quantile bins once,
//! and every split is found by summing gradients and hessians per bin instead of sorting rows.
//!
//! Written here rather than taken from a crate: the pure-Rust boosters on crates.io either need a
//! nightly compiler (`perpetual` 2.3 uses `#![feature]`) or have not been released since 2021
//! (`gbdt`), and scoring one payment must stay a walk down flat arrays with no allocation, which
//! no crate's matrix-in, vector-out prediction API gives.
//!
//! The model is a base log-odds plus the sum of every tree's leaf; each node also keeps the
//! hessian-weighted mean of the leaves under it, so that a prediction splits exactly into
//! per-feature terms (the change at each split on the path, credited to its feature).

use serde::{Deserialize, Serialize};

/// A node of one boosted tree: `x[feature] < threshold` goes left. `value` is the leaf's
/// log-odds step, or for a split the cover-weighted mean of the leaves below it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoostNode {
    /// `None` for a leaf.
    pub feature: Option<usize>,
    pub threshold: f64,
    pub left: usize,
    pub right: usize,
    pub value: f64,
    /// The sum of the hessians of the training rows that reached the node.
    pub cover: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoostOptions {
    /// Most trees; fewer when the validation loss stops improving.
    pub rounds_max: usize,
    pub learning_rate: f64,
    pub depth_max: usize,
    /// Quantile bins per feature (at most 255).
    pub bins: usize,
    /// L2 penalty on leaf values.
    pub lambda: f64,
    /// A child needs at least this much hessian (about this many rows at p = 0.5, more at the tails).
    pub child_hessian_min: f64,
    /// Rounds without a better validation loss before stopping.
    pub patience: usize,
}

impl Default for BoostOptions {
    fn default() -> Self {
        BoostOptions {
            rounds_max: 1_000,
            learning_rate: 0.1,
            depth_max: 4,
            bins: 64,
            lambda: 1.0,
            child_hessian_min: 1.0,
            patience: 40,
        }
    }
}

/// What fitting produced: the base log-odds and the trees, with how training went.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub base: f64,
    pub trees: Vec<Vec<BoostNode>>,
    /// The validation log-loss after each round of the first fit (empty without validation rows).
    pub validation_loss: Vec<f64>,
    /// The log-odds the first fit gave the validation rows, which it had not seen: what a
    /// calibration is fitted on.
    pub validation_margins: Vec<f64>,
}

/// Cut points of one feature: `bin(x)` is how many cuts are ≤ x, so `bin(x) ≤ k` ⇔ `x < cuts[k]`.
fn cuts_of(values: &mut [f64], bins: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let mut cuts: Vec<f64> = Vec::with_capacity(bins);
    for q in 1..bins {
        let value = values[q * values.len() / bins];
        // A cut at the minimum would leave its left side empty.
        if value > values[0] && cuts.last().is_none_or(|last| value > *last) {
            cuts.push(value);
        }
    }
    cuts
}

fn bin_of(cuts: &[f64], value: f64) -> u8 {
    // At most 254 cuts, so the bin fits in a byte.
    cuts.partition_point(|cut| *cut <= value) as u8
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn log_loss(margins: &[f64], labels: &[bool]) -> f64 {
    let total: f64 = margins
        .iter()
        .zip(labels)
        .map(|(margin, label)| {
            // log(1 + e^-z) for a fraud, log(1 + e^z) for a legitimate row, computed stably.
            let z = if *label { -*margin } else { *margin };
            z.max(0.0) + (-z.abs()).exp().ln_1p()
        })
        .sum();
    total / margins.len().max(1) as f64
}

struct Split {
    feature: usize,
    bin: usize,
    gain: f64,
}

/// Grows one tree on the rows `rows` (indices into the binned columns) with gradients `g` and
/// hessians `h`, depth first; returns its nodes (parents before children).
fn grow(
    columns: &[Vec<u8>],
    cuts: &[Vec<f64>],
    g: &[f64],
    h: &[f64],
    rows: Vec<usize>,
    options: &BoostOptions,
) -> Vec<BoostNode> {
    let mut nodes = Vec::new();
    let mut histogram = vec![(0.0f64, 0.0f64); 256];
    // (node index, its rows, its depth)
    let mut open = vec![(0usize, rows, 0usize)];
    nodes.push(BoostNode { feature: None, threshold: 0.0, left: 0, right: 0, value: 0.0, cover: 0.0 });
    while let Some((index, rows, depth)) = open.pop() {
        let (g_sum, h_sum) = rows.iter().fold((0.0, 0.0), |(gs, hs), row| (gs + g[*row], hs + h[*row]));
        nodes[index].cover = h_sum;
        nodes[index].value = -g_sum / (h_sum + options.lambda) * options.learning_rate;
        if depth >= options.depth_max || h_sum < 2.0 * options.child_hessian_min {
            continue;
        }
        let parent_score = g_sum * g_sum / (h_sum + options.lambda);
        let mut best: Option<Split> = None;
        for (feature, column) in columns.iter().enumerate() {
            let bins = cuts[feature].len() + 1;
            if bins < 2 {
                continue;
            }
            histogram[..bins].fill((0.0, 0.0));
            for row in &rows {
                let cell = &mut histogram[column[*row] as usize];
                cell.0 += g[*row];
                cell.1 += h[*row];
            }
            let (mut g_left, mut h_left) = (0.0, 0.0);
            for (bin, (g_bin, h_bin)) in histogram[..bins - 1].iter().enumerate() {
                g_left += g_bin;
                h_left += h_bin;
                let (g_right, h_right) = (g_sum - g_left, h_sum - h_left);
                if h_left < options.child_hessian_min || h_right < options.child_hessian_min {
                    continue;
                }
                let gain = g_left * g_left / (h_left + options.lambda) + g_right * g_right / (h_right + options.lambda)
                    - parent_score;
                if gain > 1e-12 && best.as_ref().is_none_or(|best| gain > best.gain) {
                    best = Some(Split { feature, bin, gain });
                }
            }
        }
        let Some(split) = best else { continue };
        let (left_rows, right_rows): (Vec<usize>, Vec<usize>) =
            rows.into_iter().partition(|row| (columns[split.feature][*row] as usize) <= split.bin);
        let (left, right) = (nodes.len(), nodes.len() + 1);
        for _ in 0..2 {
            nodes.push(BoostNode { feature: None, threshold: 0.0, left: 0, right: 0, value: 0.0, cover: 0.0 });
        }
        nodes[index].feature = Some(split.feature);
        nodes[index].threshold = cuts[split.feature][split.bin];
        nodes[index].left = left;
        nodes[index].right = right;
        open.push((right, right_rows, depth + 1));
        open.push((left, left_rows, depth + 1));
    }
    // A split's value: the cover-weighted mean of its children (children come after parents).
    for index in (0..nodes.len()).rev() {
        if nodes[index].feature.is_some() {
            let (left, right) = (&nodes[nodes[index].left], &nodes[nodes[index].right]);
            let cover = left.cover + right.cover;
            if cover > 0.0 {
                nodes[index].value = (left.value * left.cover + right.value * right.cover) / cover;
            }
        }
    }
    nodes
}

/// The trees packed for scoring: every node of every tree in one array (32 bytes a node instead
/// of 56, no pointer per tree), walked with no bounds on `x` but its width. Derived from the
/// trees when an artefact is read or fitted; equal to any other packing of the same trees.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    nodes: Vec<PackedNode>,
    roots: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct PackedNode {
    threshold: f64,
    value: f64,
    /// `LEAF` for a leaf.
    feature: u32,
    left: u32,
    right: u32,
}

const LEAF: u32 = u32::MAX;

impl PartialEq for Packed {
    fn eq(&self, _other: &Packed) -> bool {
        // Derived data: artefacts are equal when their trees are.
        true
    }
}

impl Packed {
    pub fn of(trees: &[Vec<BoostNode>]) -> Packed {
        let mut packed = Packed { nodes: Vec::new(), roots: Vec::with_capacity(trees.len()) };
        for tree in trees {
            let offset = packed.nodes.len() as u32;
            packed.roots.push(offset);
            packed.nodes.extend(tree.iter().map(|node| PackedNode {
                threshold: node.threshold,
                value: node.value,
                feature: node.feature.map_or(LEAF, |feature| feature as u32),
                left: offset + node.left as u32,
                right: offset + node.right as u32,
            }));
        }
        packed
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Walks every tree down `x`'s path, eight trees side by side, a level at a time: their loads
    /// do not wait on each other, so the core overlaps them (one tree at a time waited on every
    /// node's load; 2.5 µs for 186 trees, measured). `step(node, next)` is told each split taken;
    /// `leaves` each group's leaves once reached. Every value of `x` must be finite and present
    /// (the caller fills in missing ones).
    fn walk(&self, x: &[f64], mut step: impl FnMut(&PackedNode, &PackedNode), mut leaves: impl FnMut(&[u32])) {
        const LANES: usize = 8;
        for roots in self.roots.chunks(LANES) {
            let mut at = [0u32; LANES];
            at[..roots.len()].copy_from_slice(roots);
            loop {
                let mut moved = false;
                for cursor in at.iter_mut().take(roots.len()) {
                    let node = &self.nodes[*cursor as usize];
                    if node.feature != LEAF {
                        let next = if x[node.feature as usize] < node.threshold { node.left } else { node.right };
                        step(node, &self.nodes[next as usize]);
                        *cursor = next;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
            leaves(&at[..roots.len()]);
        }
    }

    /// The sum of the leaves `x` reaches.
    pub fn sum(&self, x: &[f64]) -> f64 {
        let mut total = 0.0;
        self.walk(
            x,
            |_, _| {},
            |leaves| {
                total += leaves.iter().map(|cursor| self.nodes[*cursor as usize].value).sum::<f64>();
            },
        );
        total
    }

    /// Adds to `parts` each split's change on `x`'s path, credited to the split's feature.
    pub fn contributions(&self, x: &[f64], parts: &mut [f64]) {
        self.walk(x, |node, next| parts[node.feature as usize] += next.value - node.value, |_| {});
    }
}

/// The leaf `x` reaches in one tree.
pub fn leaf(nodes: &[BoostNode], x: impl Fn(usize) -> f64) -> usize {
    let mut index = 0;
    while let Some(feature) = nodes[index].feature {
        index = if x(feature) < nodes[index].threshold { nodes[index].left } else { nodes[index].right };
    }
    index
}

/// Fits boosted trees on `rows` (missing values already filled in) with `labels`. With
/// `validation` rows, the last ones (the newest, when rows are in time order) are first held back
/// to find how many trees help; then the trees are grown again on every row, that many scaled by
/// the rows added. On a time-ordered split the refit matters: the newest rows are the ones most
/// like what comes next (PR-AUC 0.913 → 0.935 on the ULB hold-out, docs/MODELS.md).
/// `progress` is told each round.
pub fn fit(
    rows: &[Vec<f64>],
    labels: &[bool],
    validation: usize,
    options: &BoostOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<Fitted, String> {
    let first = rounds(rows, labels, validation, options, progress)?;
    if first.validation_margins.is_empty() {
        return Ok(first);
    }
    let train = rows.len() - first.validation_margins.len();
    let scaled = (first.trees.len() as f64 * rows.len() as f64 / train as f64).round() as usize;
    let again = BoostOptions { rounds_max: scaled.max(1), ..options.clone() };
    let all = rounds(rows, labels, 0, &again, progress)?;
    Ok(Fitted { validation_loss: first.validation_loss, validation_margins: first.validation_margins, ..all })
}

/// One boosting run: trees grown on all but the last `validation` rows, stopped when those stop
/// improving.
fn rounds(
    rows: &[Vec<f64>],
    labels: &[bool],
    validation: usize,
    options: &BoostOptions,
    progress: &dyn Fn(usize, usize),
) -> Result<Fitted, String> {
    if rows.is_empty() || rows.len() != labels.len() {
        return Err("boosting needs rows, each with a label".into());
    }
    let width = rows[0].len();
    let validation = validation.min(rows.len() / 2);
    let train = rows.len() - validation;
    let positives = labels[..train].iter().filter(|label| **label).count();
    if positives == 0 || positives == train {
        return Err("the training rows need both classes".into());
    }
    let bins = options.bins.clamp(2, 255);
    let cuts: Vec<Vec<f64>> = (0..width)
        .map(|feature| {
            let mut values: Vec<f64> = rows[..train].iter().map(|row| row[feature]).collect();
            cuts_of(&mut values, bins)
        })
        .collect();
    let columns: Vec<Vec<u8>> =
        (0..width).map(|feature| rows.iter().map(|row| bin_of(&cuts[feature], row[feature])).collect()).collect();
    let share = positives as f64 / train as f64;
    let base = (share / (1.0 - share)).ln();
    let mut margins = vec![base; rows.len()];
    let (mut g, mut h) = (vec![0.0; train], vec![0.0; train]);
    let mut trees: Vec<Vec<BoostNode>> = Vec::new();
    let mut validation_loss = Vec::new();
    let (mut best_loss, mut best_rounds) = (f64::INFINITY, 0);
    for round in 0..options.rounds_max {
        for row in 0..train {
            let p = sigmoid(margins[row]);
            g[row] = p - if labels[row] { 1.0 } else { 0.0 };
            h[row] = (p * (1.0 - p)).max(1e-12);
        }
        let tree = grow(&columns, &cuts, &g, &h, (0..train).collect(), options);
        for (row, margin) in margins.iter_mut().enumerate() {
            *margin += tree[leaf(&tree, |feature| rows[row][feature])].value;
        }
        trees.push(tree);
        progress(round + 1, options.rounds_max);
        if validation == 0 {
            continue;
        }
        let loss = log_loss(&margins[train..], &labels[train..]);
        validation_loss.push(loss);
        if loss < best_loss - 1e-9 {
            (best_loss, best_rounds) = (loss, round + 1);
        } else if round + 1 - best_rounds >= options.patience {
            break;
        }
    }
    let mut validation_margins = Vec::new();
    if validation > 0 {
        trees.truncate(best_rounds.max(1));
        validation_margins = rows[train..]
            .iter()
            .map(|row| base + trees.iter().map(|tree| tree[leaf(tree, |feature| row[feature])].value).sum::<f64>())
            .collect();
    }
    Ok(Fitted { base, trees, validation_loss, validation_margins })
}

/// Platt scaling: P = σ(a·z + b) over a model's log-odds z, fitted by Newton's method on
/// (z, label) pairs. `None` when the pairs cannot support it (one class only, or no slope).
pub fn platt(margins: &[f64], labels: &[bool]) -> Option<(f64, f64)> {
    let positives = labels.iter().filter(|label| **label).count();
    if positives == 0 || positives == labels.len() {
        return None;
    }
    // Platt's smoothed targets keep the fit finite on separable data.
    let (high, low) =
        ((positives as f64 + 1.0) / (positives as f64 + 2.0), 1.0 / ((labels.len() - positives) as f64 + 2.0));
    let (mut a, mut b) = (1.0, 0.0);
    for _ in 0..100 {
        let (mut gradient_a, mut gradient_b, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (z, label) in margins.iter().zip(labels) {
            let p = sigmoid(a * z + b);
            let target = if *label { high } else { low };
            let (d, w) = (p - target, p * (1.0 - p));
            gradient_a += d * z;
            gradient_b += d;
            haa += w * z * z;
            hab += w * z;
            hbb += w;
        }
        let determinant = haa * hbb - hab * hab;
        if determinant.abs() < 1e-18 {
            break;
        }
        let step_a = (hbb * gradient_a - hab * gradient_b) / determinant;
        let step_b = (haa * gradient_b - hab * gradient_a) / determinant;
        a -= step_a;
        b -= step_b;
        if step_a.abs() < 1e-10 && step_b.abs() < 1e-10 {
            break;
        }
    }
    (a.is_finite() && b.is_finite() && a > 0.0).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fraud when both x0 > 0.5 and x1 > 0.5 (an interaction no single split finds), x2 is noise.
    fn interaction(rows: usize) -> (Vec<Vec<f64>>, Vec<bool>) {
        let mut state = 12_345u64;
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let data: Vec<Vec<f64>> = (0..rows).map(|_| vec![next(), next(), next()]).collect();
        let labels = data.iter().map(|row| row[0] > 0.5 && row[1] > 0.5).collect();
        (data, labels)
    }

    #[test]
    fn cuts_split_values_into_ordered_bins() {
        let mut values = vec![5.0, 1.0, 1.0, 3.0, 2.0, 4.0, 1.0, 6.0];
        let cuts = cuts_of(&mut values, 4);
        // Sorted 1 1 1 2 3 4 5 6: the quartiles at positions 2, 4, 6 are 1 (the minimum: no cut), 3, 5.
        assert_eq!(cuts, vec![3.0, 5.0]);
        assert_eq!(bin_of(&cuts, 1.0), 0);
        assert_eq!(bin_of(&cuts, 2.999), 0);
        assert_eq!(bin_of(&cuts, 3.0), 1, "a value equal to a cut goes right, as x < threshold goes left");
        assert_eq!(bin_of(&cuts, 9.0), 2);
        assert!(cuts_of(&mut [7.0, 7.0, 7.0], 4).is_empty(), "a constant feature has no cut");
    }

    #[test]
    fn boosting_learns_an_interaction_and_stops_on_validation() {
        let (rows, labels) = interaction(3_000);
        let fitted = fit(&rows, &labels, 600, &BoostOptions::default(), &|_, _| {}).unwrap();
        assert!(!fitted.trees.is_empty() && fitted.trees.len() <= BoostOptions::default().rounds_max * 2);
        assert_eq!(fitted.validation_margins.len(), 600);
        // Refitted on every row: as many trees as validated, scaled by 3 000 / 2 400.
        let validated = fitted.validation_loss.len().saturating_sub(BoostOptions::default().patience);
        let expected = (validated as f64 * 1.25).round() as usize;
        assert!(fitted.trees.len().abs_diff(expected) <= 2, "{} trees, {validated} validated", fitted.trees.len());
        let predict = |x: &[f64]| {
            sigmoid(fitted.base + fitted.trees.iter().map(|tree| tree[leaf(tree, |f| x[f])].value).sum::<f64>())
        };
        assert!(predict(&[0.9, 0.9, 0.5]) > 0.9, "{}", predict(&[0.9, 0.9, 0.5]));
        assert!(predict(&[0.9, 0.1, 0.5]) < 0.1);
        assert!(predict(&[0.1, 0.9, 0.5]) < 0.1);
        let first = fitted.validation_loss[0];
        let best = fitted.validation_loss.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(best < first / 4.0, "validation loss fell from {first} to {best}");
        // The first tree starts on a signal feature, and the noise feature is split on less.
        assert!(matches!(fitted.trees[0][0].feature, Some(0 | 1)), "{:?}", fitted.trees[0][0]);
        let splits =
            |feature: usize| fitted.trees.iter().flatten().filter(|node| node.feature == Some(feature)).count();
        assert!(splits(2) * 2 < splits(0) + splits(1), "noise {} vs signal {}", splits(2), splits(0) + splits(1));
    }

    #[test]
    fn split_values_are_the_mean_of_their_leaves() {
        let (rows, labels) = interaction(500);
        let fitted = fit(&rows, &labels, 0, &BoostOptions { rounds_max: 3, ..Default::default() }, &|_, _| {}).unwrap();
        assert_eq!(fitted.trees.len(), 3, "no validation rows: every round is kept");
        for tree in &fitted.trees {
            for node in tree.iter().filter(|node| node.feature.is_some()) {
                let (left, right) = (&tree[node.left], &tree[node.right]);
                let mean = (left.value * left.cover + right.value * right.cover) / (left.cover + right.cover);
                assert!((node.value - mean).abs() < 1e-12);
                assert!((node.cover - left.cover - right.cover).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn platt_recovers_a_known_scaling() {
        // Labels drawn from σ(2z − 1): the fit finds a ≈ 2, b ≈ −1.
        let mut state = 99u64;
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let margins: Vec<f64> = (0..20_000).map(|i| (i as f64 / 20_000.0) * 6.0 - 3.0).collect();
        let labels: Vec<bool> = margins.iter().map(|z| next() < sigmoid(2.0 * z - 1.0)).collect();
        let (a, b) = platt(&margins, &labels).unwrap();
        assert!((a - 2.0).abs() < 0.15 && (b + 1.0).abs() < 0.15, "a {a}, b {b}");
        assert_eq!(platt(&[1.0, 2.0], &[true, true]), None);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(fit(&[], &[], 0, &BoostOptions::default(), &|_, _| {}).is_err());
        assert!(fit(&[vec![1.0], vec![2.0]], &[true, true], 0, &BoostOptions::default(), &|_, _| {}).is_err());
    }
}
