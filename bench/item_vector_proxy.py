"""A cheap proxy for choosing item vectors: gradient-boosted trees on similarity statistics.

Training a TransAct seed costs 5-8 minutes on one core; this proxy costs about one. For each
item-vector mode it writes the examples' ``graph`` vectors (the item-embedding job on the
same training window, into a scratch copy of the examples directory) and fits, per head, a
``HistGradientBoostingClassifier`` on what the similarity pool computes from them — for each
action type (click, save, hide) the mean, the max and the soft count of ``cos(e_i, e_cand)``
over the candidate's sequence — plus the 8 engagement counters; it reports the validation
AUC per head. Vectors that let the trees rank better give the model more to work with; the
decision is then confirmed by training the model (docs/model.md, Findings session 6).

    .venv/bin/python bench/item_vector_proxy.py artifacts/demo/synthetic \\
        artifacts/demo/examples_synthetic --modes propagated,spectral,spectral_propagated
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.item_embeddings import run_item_embeddings  # noqa: E402
from training.train import load_training_data  # noqa: E402
from transact.model.features import ExampleArrays  # noqa: E402
from transact.model.item_graph import ItemGraphConfig  # noqa: E402
from transact.schema import ActionType  # noqa: E402


def similarity_features(rows: ExampleArrays, table: np.ndarray) -> np.ndarray:
    """``(N, 17)``: per action type mean / max / log1p(sum relu) of cos(e_i, e_cand) over the
    row's sequence, then log1p of the item's and the user's 4 counters."""

    def unit(vectors: np.ndarray) -> np.ndarray:
        return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)

    sims = np.einsum("bsd,bd->bs", unit(table[rows.seq_item_ids]), unit(table[rows.item_id]))
    columns = []
    for action in (ActionType.CLICK, ActionType.SAVE, ActionType.HIDE):
        mask = rows.seq_action_types == int(action)
        count = mask.sum(axis=1)
        columns += [np.where(mask, sims, 0.0).sum(axis=1) / np.maximum(count, 1),
                    np.where(mask, sims, -2.0).max(axis=1),
                    np.log1p(np.where(mask, np.maximum(sims, 0.0), 0.0).sum(axis=1))]
    counts = np.concatenate([rows.item_counts, rows.user_counts], axis=1)
    columns += list(np.log1p(np.maximum(counts, 0)).T)
    return np.stack(columns, axis=1)


def proxy_auc(examples_dir: Path, max_rows: int, seed: int) -> list[float]:
    """Validation AUC click / save / hide of the trees on ``examples_dir``'s graph vectors."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    data = load_training_data(examples_dir, "graph", with_test=False)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(data.train), min(len(data.train), max_rows), replace=False))
    train = data.train.take(rows)
    x_train = similarity_features(train, data.item_table)
    x_val = similarity_features(data.val, data.item_table)
    aucs = []
    for head in range(3):
        trees = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                               random_state=seed)
        trees.fit(x_train, train.labels[:, head])
        aucs.append(float(roc_auc_score(data.val.labels[:, head],
                                        trees.predict_proba(x_val)[:, 1])))
    return aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("examples_dir", type=Path)
    parser.add_argument("--modes", default="propagated,spectral,spectral_propagated")
    parser.add_argument("--max-rows", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/item_vector_proxy.json"))
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for mode in args.modes.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "examples"
            copy.mkdir()
            for entry in args.examples_dir.iterdir():  # everything but the item vectors
                if not entry.name.startswith("item_graph."):
                    os.symlink(entry.resolve(), copy / entry.name)
            run_item_embeddings(args.dataset_dir, copy, ItemGraphConfig(mode=mode))
            aucs = proxy_auc(copy, args.max_rows, args.seed)
        results[mode] = {"auc_click": round(aucs[0], 4), "auc_save": round(aucs[1], 4),
                         "auc_hide": round(aucs[2], 4),
                         "seconds": round(time.perf_counter() - started, 1)}
        print(mode, results[mode], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[str(args.examples_dir)] = results
    args.out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
