"""How well do item vectors reveal an item's topic? (synthetic world only: the topic is the
world's truth, never shown to a model.) A 3-fold logistic-regression probe of the true topic
from each candidate item representation built from the training window's co-engagements.

    .venv/bin/python bench/probe_item_topics.py artifacts/demo/synthetic \
        artifacts/demo/examples_synthetic
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transact.data.dataset import item_embedding_table, iter_event_parts, read_items  # noqa: E402
from transact.data.synthetic_world import SyntheticWorld, WorldConfig  # noqa: E402
from transact.model.item_graph import co_engagement_graph, neighbour_matrix  # noqa: E402


def probe_accuracy(vectors: np.ndarray, topic: np.ndarray) -> float:
    """Mean 3-fold accuracy of a logistic regression of ``topic`` on standardised vectors
    (row 0, the padding id, left out)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = vectors[1:]
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return float(cross_val_score(LogisticRegression(max_iter=300), x, topic[1:], cv=3).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("examples_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/probe_item_topics.json"))
    args = parser.parse_args()
    stats = json.loads((args.examples_dir / "stats.json").read_text())
    end = stats["split_boundaries_ms"]["val_start"]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in
                                         ("user_id", "item_id", "action_type", "timestamp_ms")}
    for part in iter_event_parts(args.dataset_dir):
        early = part.column("timestamp_ms").to_numpy() < end
        for name, values in cols.items():
            values.append(part.column(name).to_numpy()[early])
    ev = {k: np.concatenate(v) for k, v in cols.items()}
    content = item_embedding_table(read_items(args.dataset_dir))
    params = json.loads((args.dataset_dir / "meta.json").read_text())["params"]
    topic = SyntheticWorld(WorldConfig(**params)).item_topic
    results = {"content": probe_accuracy(content, topic)}
    for label, gap_ms in (("30min", 30 * 60 * 1000), ("24h", 24 * 3600 * 1000)):
        window = 5 if label == "30min" else 20
        graph = co_engagement_graph(ev["user_id"], ev["item_id"], ev["action_type"],
                                    ev["timestamp_ms"], len(content) - 1, window, gap_ms)
        pool = neighbour_matrix(graph, 30)
        hops = [content]
        for _ in range(4):
            hops.append(pool @ hops[-1])
        results[f"propagated_2hops_{label}"] = probe_accuracy(sum(hops[:3]) / 3, topic)
        results[f"propagated_4hops_{label}"] = probe_accuracy(sum(hops) / 5, topic)
        degree = np.asarray(graph.sum(1)).ravel()
        scale = sp.diags(1 / np.sqrt(np.maximum(degree, 1)))
        from scipy.sparse.linalg import svds

        u, s, _ = svds((scale @ graph @ scale).astype(np.float64), k=32)
        results[f"spectral32_{label}"] = probe_accuracy(u * s, topic)
        results[f"spectral32+content_{label}"] = probe_accuracy(
            np.concatenate([u * s * 10, content], 1), topic)
    for name, acc in results.items():
        print(f"{name:32s} {acc:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "accuracy": results},
                                   indent=1))


if __name__ == "__main__":
    main()
