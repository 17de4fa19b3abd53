#!/usr/bin/env bash
# Our model kinds against scikit-learn's random forest on a real public fraud data set, split in
# time order the same way for both (the oldest 70 % to train, the newest 30 % to judge).
#
#   benches/fraud_dataset.sh [FILE] [BIN]
#
# FILE: the ULB credit-card transactions (Time, V1..V28, Amount, Class) or a sample of them. The
# full set is on Kaggle and OpenML, which this machine cannot reach; the sample used for
# docs/MODELS.md is cloudera/CML_AMP_AutoML_with_TPOT's data/creditcardsample.csv (all 492
# frauds, 4 500 of the legitimate rows), which the `fetch` tool brings here:
#   git --git-dir=/work/.mirror/cloudera+CML_AMP_AutoML_with_TPOT/repo show HEAD:data/creditcardsample.csv > /tmp/creditcardsample.csv
# The file is not in this repository: it is someone else's data.
# Needs python3 with scikit-learn and pandas (pip install scikit-learn pandas).
set -euo pipefail
cd "$(dirname "$0")/.."
FILE="${1:-/tmp/creditcardsample.csv}"
BIN="${2:-target/release/medpay}"
HOLDOUT="${HOLDOUT:-0.3}"
[ -f "$FILE" ] || { echo "no data set at $FILE (see the top of this script)" >&2; exit 1; }
[ -x "$BIN" ] || cargo build --release
out=$(mktemp -d)
echo "== medpay model train (logistic, tree, boosted), hold-out $HOLDOUT by Time"
"$BIN" model train --csv "$FILE" --label Class --time-column Time --holdout "$HOLDOUT" \
  --kind logistic --kind tree --kind boosted --out "$out" |
  grep -E "^Model |^Training rows|^Hold-out rows|^ROC-AUC|^PR-AUC|^Recall at|^Trees kept|^Calibration step|^Brier"
echo "== scikit-learn RandomForestClassifier(n_estimators=500), same split, 5 seeds"
python3 benches/fraud_dataset/random_forest.py "$FILE" Class Time "$HOLDOUT" 5
rm -rf "$out"
