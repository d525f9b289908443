"""Which user-level signal the hide head leaves unused: a logistic stack on validation.

Reads the validation probabilities a ``bench/seed_ensemble.py`` run kept (its ``.npz``), the
examples directory they were scored on and the event dataset, and asks whether a logistic
regression of the hide label on ``[hide logit, feature]`` ranks validation hides better than
the logit alone. Features, all point-in-time (events strictly before the row's request):

* ``user_hide_rate``: the user's smoothed hide log-odds — the engagement counter the model
  already reads (:func:`transact.data.counters.counter_features`);
* ``user_bias``: the user's mean engagement level (hide -1, skip 0, click 1, save 2) *relative
  to each item's mean level* over the training window, shrunk (``sum / (n + 5)``) — a
  matrix-factorisation user bias, which the model reads nowhere;
* ``item_bias``: the candidate item's shrunk mean level over the training window.

Two protocols, both on the validation split only (the test split is not read): five folds
by user (the mean AUC within each held-out fold), and forward in time (fit on the earlier
half of the validation rows, score the later half). A stack that helps says the model
under-weights the signal in the validation period; that a feature helps the stack does not
say the model would learn it.

    .venv/bin/python bench/hide_stacking.py /tmp/seed_ensemble.npz \\
        artifacts/demo_movielens/examples_movielens artifacts/demo_movielens/movielens \\
        --out docs/bench/hide_stacking.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import write_results  # noqa: E402
from seed_ensemble import logit  # noqa: E402

#: engagement level of each action code (PAD, SKIP, CLICK, SAVE, HIDE)
LEVEL = np.array([0.0, 0.0, 1.0, 2.0, -1.0])
USER_SHRINK, ITEM_SHRINK = 5.0, 10.0


def user_bias_asof(users: np.ndarray, times: np.ndarray, ev_user: np.ndarray,
                   ev_time: np.ndarray, ev_dev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query ``(N,)``: the shrunk sum of ``ev_dev`` of the user's events strictly before the
    query time, and how many there were (vectorised: events sorted once by (user, time), each
    query two ``searchsorted`` calls on that order)."""
    order = np.lexsort((ev_time, ev_user))
    ev_user, ev_time, ev_dev = ev_user[order], ev_time[order], ev_dev[order]
    cum = np.concatenate([[0.0], np.cumsum(ev_dev)])
    # (user, time) as one sortable key: the user's rank among the event users, then the time
    t0 = min(int(ev_time.min()), int(times.min())) if len(ev_time) else int(times.min())
    span = max(int(ev_time.max()), int(times.max())) - t0 + 1 if len(ev_time) else 1
    known, rank = np.unique(ev_user, return_inverse=True)
    ev_key = rank.astype(np.int64) * span + (ev_time - t0)
    query_rank = np.searchsorted(known, users)
    query_rank = np.where((query_rank < len(known))
                          & (known[np.minimum(query_rank, len(known) - 1)] == users),
                          query_rank, -1)
    start = np.searchsorted(ev_key, np.maximum(query_rank, 0) * span, side="left")
    before = np.searchsorted(ev_key, np.maximum(query_rank, 0) * span + (times - t0),
                             side="left")
    before = np.where(query_rank >= 0, before, start)  # a user with no events: nothing before
    n = before - start
    return (cum[before] - cum[start]) / (n + USER_SHRINK), n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("predictions", type=Path, help="a seed_ensemble.py .npz")
    parser.add_argument("examples_dir", type=Path)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/hide_stacking.json"))
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from transact.data.counters import COUNTER_NAMES, counter_features
    from transact.model.features import read_examples
    from transact.schema import HEADS

    stored = np.load(args.predictions)
    val = read_examples(args.examples_dir / "val")
    if not np.array_equal(stored["labels"], val.labels):
        raise SystemExit(f"{args.predictions} was not scored on {args.examples_dir}/val")
    hide = HEADS.index("hide")
    y = val.labels[:, hide]
    events = pq.read_table(sorted((args.dataset_dir / "events").glob("*.parquet")),
                           columns=["user_id", "item_id", "action_type", "timestamp_ms"])
    ev_user = events.column("user_id").to_numpy()
    ev_item = events.column("item_id").to_numpy()
    ev_time = events.column("timestamp_ms").to_numpy()
    level = LEVEL[events.column("action_type").to_numpy()]
    stats = json.loads((args.examples_dir / "stats.json").read_text())
    val_start = int(stats["split_boundaries_ms"]["val_start"])
    window = ev_time < val_start
    mean_level = level[window].mean()
    sums = np.bincount(ev_item[window], level[window] - mean_level,
                       minlength=int(ev_item.max()) + 1)
    counts = np.bincount(ev_item[window], minlength=len(sums))
    item_bias = sums / (counts + ITEM_SHRINK)
    user_bias, _ = user_bias_asof(val.user_id, val.request_time_ms, ev_user, ev_time,
                                  level - mean_level - item_bias[ev_item])
    features = {
        # the user side's hide log-odds: after the item side's 4 columns and the user's count
        "user_hide_rate": counter_features(val.item_counts, val.user_counts)[
            :, len(COUNTER_NAMES) + COUNTER_NAMES.index("hides")],
        "user_bias": user_bias,
        "item_bias": item_bias[val.item_id],
    }

    rng = np.random.default_rng(0)
    users = rng.permutation(np.unique(val.user_id))
    fold = np.empty(len(y), np.int64)
    for k, chunk in enumerate(np.array_split(users, 5)):
        fold[np.isin(val.user_id, chunk)] = k
    late = val.request_time_ms >= np.median(val.request_time_ms)

    def stacked(columns: np.ndarray) -> dict[str, float]:
        """Mean AUC within the held-out user folds (each fold scored by a stack fitted on the
        other four), and the AUC of the later half scored by a stack fitted on the earlier."""
        per_fold = []
        for k in range(5):
            model = LogisticRegression(max_iter=1000).fit(columns[fold != k], y[fold != k])
            per_fold.append(roc_auc_score(y[fold == k],
                                          model.decision_function(columns[fold == k])))
        forward = LogisticRegression(max_iter=1000).fit(columns[~late], y[~late])
        return {"user_folds": round(float(np.mean(per_fold)), 4),
                "forward": round(float(roc_auc_score(y[late],
                                                     forward.decision_function(columns[late]))),
                                 4)}

    report: dict[str, object] = {"predictions": str(args.predictions), "split": "val",
                                 "rows": len(y), "hides": int(y.sum()), "seeds": {}}
    for key in stored.files:
        if not key.startswith("seed"):
            continue
        hide_logit = logit(stored[key])[:, hide:hide + 1]
        rows = {"logit alone": stacked(hide_logit)}
        for name, column in features.items():
            rows[f"+ {name}"] = stacked(np.c_[hide_logit, column])
        rows["+ all three"] = stacked(np.c_[hide_logit, *features.values()])
        report["seeds"][key] = rows
        print(key, rows, flush=True)
    write_results("hide_stacking", args, report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
