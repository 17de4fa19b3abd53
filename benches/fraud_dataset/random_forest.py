"""The peer for `benches/fraud_dataset.sh`: scikit-learn's random forest on the same file, split
the same way as `medpay model train` splits it (rows sorted by the time column, stable; the oldest
1 - holdout for training, the newest for the hold-out), scored with the same metric definitions
(average precision for PR-AUC, Mann-Whitney for ROC-AUC).

python3 random_forest.py FILE LABEL TIME HOLDOUT [SEEDS]

A forest is random: it is fitted once per seed (5 by default) and each fit is printed.
"""

import json
import sys
import time

import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score, roc_auc_score


def main() -> None:
    path, label, time_column, holdout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    seeds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    frame = pd.read_csv(path).sort_values(time_column, kind="stable").reset_index(drop=True)
    cut = round(len(frame) * (1.0 - holdout))
    features = [c for c in frame.columns if c not in (label, time_column)]
    train, test = frame.iloc[:cut], frame.iloc[cut:]
    for seed in range(seeds):
        started = time.perf_counter()
        forest = RandomForestClassifier(n_estimators=500, n_jobs=-1, random_state=seed)
        forest.fit(train[features], train[label])
        fitted = time.perf_counter() - started
        scores = forest.predict_proba(test[features])[:, 1]
        print(json.dumps({
            "model": "scikit-learn RandomForestClassifier(n_estimators=500)",
            "seed": seed,
            "training_rows": len(train),
            "holdout_rows": len(test),
            "holdout_positives": int(test[label].sum()),
            "pr_auc": round(average_precision_score(test[label], scores), 4),
            "roc_auc": round(roc_auc_score(test[label], scores), 4),
            "fit_seconds": round(fitted, 2),
        }))


if __name__ == "__main__":
    main()
