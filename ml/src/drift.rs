//! Drift: the population stability index (PSI) of a value — a feature, or the score — between a
//! reference (what the model was trained on) and what serving sees now. The reference is cut at
//! its deciles; PSI = Σ (live − reference) · ln(live / reference) over the bins, each share
//! floored at `SHARE_FLOOR` so that an empty bin does not make it infinite. The usual reading:
//! under 0.1 stable, 0.1 to 0.25 worth watching, above 0.25 a shift.

use serde::{Deserialize, Serialize};

/// PSI at or above this is worth watching.
pub const PSI_WATCH: f64 = 0.1;
/// PSI at or above this is a shift: retrain or look.
pub const PSI_ALARM: f64 = 0.25;
/// Bins of a reference: its deciles.
const BINS: usize = 10;
/// The least share a bin counts for.
const SHARE_FLOOR: f64 = 1e-4;

/// A value's distribution in the reference: the inner cut points and each bin's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

impl Reference {
    /// Cuts `values` at its deciles (repeated cut points merged: a feature that is mostly 0 has
    /// fewer bins).
    pub fn of(values: &[f64]) -> Option<Reference> {
        if values.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..BINS).map(|i| sorted[(i * sorted.len() / BINS).min(sorted.len() - 1)]).collect();
        edges.dedup();
        let shares = shares(&edges, values);
        Some(Reference { edges, shares })
    }

    /// The PSI of `live` against this reference (None without live values).
    pub fn psi(&self, live: &[f64]) -> Option<f64> {
        if live.is_empty() {
            return None;
        }
        let now = shares(&self.edges, live);
        Some(
            self.shares
                .iter()
                .zip(&now)
                .map(|(expected, actual)| {
                    let (expected, actual) = (expected.max(SHARE_FLOOR), actual.max(SHARE_FLOOR));
                    (actual - expected) * (actual / expected).ln()
                })
                .sum(),
        )
    }
}

/// The share of `values` in each bin cut at `edges` (a value equal to a cut point goes right).
fn shares(edges: &[f64], values: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    for value in values {
        counts[edges.partition_point(|edge| edge <= value)] += 1;
    }
    let total = values.len().max(1) as f64;
    counts.into_iter().map(|count| count as f64 / total).collect()
}

/// How a PSI reads: `stable`, `watch` or `shift`.
pub fn level(psi: f64) -> &'static str {
    if psi >= PSI_ALARM {
        "shift"
    } else if psi >= PSI_WATCH {
        "watch"
    } else {
        "stable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_distribution_is_stable_and_a_shifted_one_is_not() {
        let reference: Vec<f64> = (0..10_000).map(|i| f64::from(i % 1_000)).collect();
        let cut = Reference::of(&reference).unwrap();
        assert_eq!(cut.edges.len(), 9);
        assert!(cut.shares.iter().all(|share| (share - 0.1).abs() < 1e-9), "{:?}", cut.shares);
        assert!(cut.psi(&reference).unwrap() < 1e-12);
        // Everything moved up by a fifth of the range: two bins empty, the top one five times fuller.
        let shifted: Vec<f64> = reference.iter().map(|v| (v + 200.0).min(999.0)).collect();
        let psi = cut.psi(&shifted).unwrap();
        assert!(psi > PSI_ALARM, "{psi}");
        assert_eq!(level(psi), "shift");
        assert_eq!(level(0.15), "watch");
        assert!(cut.psi(&[]).is_none());
        // Worked by hand: shares 0.5/0.5 against 0.9/0.1 → (0.9−0.5)·ln(1.8) + (0.1−0.5)·ln(0.2).
        let half = Reference { edges: vec![0.5], shares: vec![0.5, 0.5] };
        let expected = 0.4 * 1.8f64.ln() + (-0.4) * 0.2f64.ln();
        let live: Vec<f64> = (0..10).map(|i| if i < 9 { 0.0 } else { 1.0 }).collect();
        assert!((half.psi(&live).unwrap() - expected).abs() < 1e-12);
    }
}
