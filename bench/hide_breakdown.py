"""Where a ranker's hide head wins and loses: AUC by the user's history, a leave-one-out
ceiling of per-user and per-item hide rates, and the test split's own sampling error.

Trains one TransAct run (``--config``, e.g. ``training/configs/movielens.yaml``; seed
``--seed``) on an examples directory, scores the test split and reports for the hide head:

* AUC over the whole split, and within buckets of the user's earlier impressions
  (``user_counts[:, 0]``: 0, 1-19, 20-99, 100+) with each bucket's share of rows;
* the AUC of a score that knows each test user's and each test item's hide rate in the test
  split itself (leave-one-out, shrunk): what user and item bias alone can rank;
* the standard deviation and 95 % interval of the AUC when the test users are resampled
  (``--bootstrap`` draws): how far apart two equally good models can read on this split.

    .venv/bin/python bench/hide_breakdown.py artifacts/demo_movielens/examples_movielens \\
        --config training/configs/movielens.yaml --out docs/bench/hide_breakdown.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HISTORY_BUCKETS: tuple[tuple[int, int], ...] = ((0, 1), (1, 20), (20, 100), (100, 1 << 62))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (NaN when ``labels`` hold one class)."""
    from sklearn.metrics import roc_auc_score

    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def auc_by_history(labels: np.ndarray, scores: np.ndarray, earlier: np.ndarray
                   ) -> list[dict[str, float]]:
    """Per bucket of ``earlier`` (the user's impressions before the row): rows share and AUC."""
    out = []
    for low, high in HISTORY_BUCKETS:
        rows = (earlier >= low) & (earlier < high)
        out.append({"from": low, "to": None if high == HISTORY_BUCKETS[-1][1] else high - 1,
                    "share": round(float(rows.mean()), 4),
                    "auc": round(auc(labels[rows], scores[rows]), 4) if rows.any() else None})
    return out


def leave_one_out_rate(keys: np.ndarray, labels: np.ndarray, prior: float,
                       strength: float = 5.0) -> np.ndarray:
    """Each row's group hide rate without the row itself, shrunk towards ``prior``."""
    _, group, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.bincount(group, weights=labels)
    return (sums[group] - labels + prior * strength) / (counts[group] - 1 + strength)


def bias_ceiling(labels: np.ndarray, users: np.ndarray, items: np.ndarray) -> float:
    """AUC of logit(user rate) + logit(item rate), both leave-one-out within the split."""
    prior = float(labels.mean())
    logit = [np.log(r / (1 - r)) for r in (leave_one_out_rate(users, labels, prior),
                                           leave_one_out_rate(items, labels, prior))]
    return auc(labels, logit[0] + logit[1])


def user_bootstrap(labels: np.ndarray, scores: np.ndarray, users: np.ndarray, draws: int,
                   seed: int) -> dict[str, float]:
    """AUC over ``draws`` resamples of the users (with replacement): std and 95 % interval."""
    rng = np.random.default_rng(seed)
    unique, group = np.unique(users, return_inverse=True)
    rows_of = [np.flatnonzero(group == g) for g in range(len(unique))]
    values = [auc(labels[rows], scores[rows]) for rows in (
        np.concatenate([rows_of[g] for g in rng.integers(0, len(unique), len(unique))])
        for _ in range(draws))]
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return {"std": round(float(np.nanstd(values)), 4), "low": round(float(low), 4),
            "high": round(float(high), 4), "draws": draws}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("examples_dir", type=Path)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/hide_breakdown.json"))
    args = parser.parse_args(argv)

    from training.train import TrainConfig, load_training_data, predict_probs, train_model
    from transact.config import resolve_config
    from transact.schema import HEADS

    started = time.perf_counter()
    cfg = dataclasses.replace(resolve_config(TrainConfig, args.config), seed=args.seed)
    data = load_training_data(args.examples_dir, cfg.model.ranker.item_representation)
    if data.test is None:
        raise SystemExit(f"{args.examples_dir} has no test split")
    result = train_model(cfg, data)
    hide = HEADS.index("hide")
    items = data.item_table if result.item_table is None else result.item_table
    scores = predict_probs(result.model, data.test, items)[:, hide]
    labels = data.test.labels[:, hide].astype(np.float64)
    users = data.test.user_id
    report = {
        "examples_dir": str(args.examples_dir),
        "config": None if args.config is None else str(args.config), "seed": args.seed,
        "test_rows": len(labels), "test_users": int(len(np.unique(users))),
        "hides": int(labels.sum()),
        "auc_hide": round(auc(labels, scores), 4),
        "by_user_history": auc_by_history(labels, scores, data.test.user_counts[:, 0]),
        "leave_one_out_user_item_rates_auc": round(
            bias_ceiling(labels, users, data.test.item_id), 4),
        "user_bootstrap": user_bootstrap(labels, scores, users, args.bootstrap, args.seed),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
