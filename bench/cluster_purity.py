"""How well do k-means clusters of the item vectors recover the synthetic world's topics?

The ``clustered`` item vectors give every item a one-hot cluster; the closer the clusters are to
the world's true topics (which no model reads), the more the one-hot tells the ranker. For each
clustering input this script clusters the training window's items into ``n_clusters`` (best of
``restarts`` seeded k-means++ runs by inertia, as the mode does) and reports the purity against
the true topics, plain and weighted by how often each item was shown (docs/model.md, Findings
session 8).

    .venv/bin/python bench/cluster_purity.py artifacts/demo/synthetic \\
        artifacts/demo/examples_synthetic

About 30 s; writes ``docs/bench/cluster_purity.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.item_embeddings import item_embedding_table, training_window_end  # noqa: E402
from transact.data.dataset import iter_event_parts, read_items  # noqa: E402
from transact.model.item_graph import (  # noqa: E402
    ItemGraphConfig,
    co_engagement_graph,
    impression_factors,
    kmeans_labels,
    propagate_content,
    spectral_item_vectors,
)


def purity(points: np.ndarray, topic: np.ndarray, shown: np.ndarray, n_clusters: int,
           restarts: int, iterations: int) -> tuple[float, float]:
    """``(purity, impression-weighted purity)`` of k-means clusters of ``points`` ``(N, C)``
    (unit-normed rows) against ``topic`` ``(N,)``; ``shown`` ``(N,)`` weights the second."""
    unit = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    labels = kmeans_labels(unit, n_clusters, restarts, iterations, seed=0)
    counts = np.zeros((n_clusters, topic.max() + 1))
    np.add.at(counts, (labels, topic), 1.0)
    weighted = np.zeros_like(counts)
    np.add.at(weighted, (labels, topic), shown)
    return (float(counts.max(axis=1).sum() / len(topic)),
            float(weighted.max(axis=1).sum() / max(shown.sum(), 1)))


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("examples_dir", type=Path, help="its val start ends the window")
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/cluster_purity.json"))
    args = parser.parse_args()

    end_ms = training_window_end(args.examples_dir)
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user_id", "item_id", "action_type", "timestamp_ms")}
    for part in iter_event_parts(args.dataset_dir):
        early = part.column("timestamp_ms").to_numpy() < end_ms
        for name, values in columns.items():
            values.append(part.column(name).to_numpy()[early])
    events = {k: np.concatenate(v) for k, v in columns.items()}
    items = read_items(args.dataset_dir)
    if "topic" not in items.column_names:
        raise SystemExit(f"{args.dataset_dir} has no true item topics (the synthetic world has)")
    content = item_embedding_table(items)
    n_items = len(content) - 1
    topic = np.zeros(n_items + 1, dtype=np.int64)
    topic[items.column("item_id").to_numpy()] = items.column("topic").to_numpy()
    shown = np.bincount(events["item_id"], minlength=n_items + 1).astype(np.float64)
    cfg = ItemGraphConfig(mode="spectral_propagated")
    graph = co_engagement_graph(events["user_id"], events["item_id"], events["action_type"],
                                events["timestamp_ms"], n_items, cfg.window, cfg.session_gap_ms)
    propagated = propagate_content(content, graph, cfg)

    def factors(dim: int) -> np.ndarray:
        return impression_factors(events["user_id"], events["item_id"], n_items, dim, cfg.seed)

    inputs: dict[str, np.ndarray] = {
        "spectral_propagated vectors (session 7)": spectral_item_vectors(
            content, events["user_id"], events["item_id"], graph, cfg),
        "propagated content": propagated,
        "raw content": content,
    }
    for dim in (16, 32, 48):
        inputs[f"{dim} impression factors"] = factors(dim)
    for dim in (16, 32, 40, 48, 64):
        inputs[f"{dim} impression factors + propagated content"] = np.concatenate(
            [unit_rows(factors(dim)), unit_rows(propagated)], axis=1)
    results: dict[str, dict[str, float]] = {}
    for name, points in inputs.items():
        row: dict[str, float] = {}
        for iterations in (10, 100):
            plain, weighted = purity(points[1:], topic[1:], shown[1:], args.clusters,
                                     args.restarts, iterations)
            row[f"purity_{iterations}_steps"] = round(plain, 3)
            row[f"weighted_{iterations}_steps"] = round(weighted, 3)
        results[name] = row
        print(f"{name:48s} {row}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n_clusters": args.clusters, "restarts": args.restarts,
                                    "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
