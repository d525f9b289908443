"""Diagnostic (synthetic world only): how far do the rankers get when the item vectors reveal
the truth? Replaces the item table by ``[one-hot topic (n_topics), quality, 0...]`` (32-d) —
information no deployable model has — and trains the chosen variants on it. If TransAct closes
the gap to the oracle with these vectors, the item representation is the bottleneck; if not,
the model or its training is.

    python bench/diagnose_item_vectors.py artifacts/demo/examples_synthetic \
        artifacts/demo/synthetic --variants no_sequence transact --seeds 0 --out OUT.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import json as _json
from pathlib import Path

import numpy as np

from training.experiments import experiment_base_config, run_variant, select_variants
from training.train import load_training_data, oracle_metrics
from transact.data.synthetic_world import SyntheticWorld, WorldConfig


def truth_item_table(dataset_dir: Path, dim: int) -> np.ndarray:
    params = _json.loads((dataset_dir / "meta.json").read_text())["params"]
    world_cfg = WorldConfig(**params)
    world = SyntheticWorld(world_cfg)
    n = len(world.item_topic)
    table = np.zeros((n, dim), np.float32)
    table[np.arange(1, n), world.item_topic[1:]] = 1.0
    table[:, world.n_topics] = world.item_quality
    table[0] = 0.0
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("examples_dir", type=Path)
    parser.add_argument("dataset_dir", type=Path)
    parser.add_argument("--variants", nargs="+", default=["no_sequence", "transact"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--items", default="truth",
                        help="truth (diagnostic) or an item_representation (content, "
                             "pinnerformer, graph, ...)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", nargs="*", default=[], metavar="PATH=JSON",
                        help="TrainConfig overrides, e.g. max_epochs=4")
    args = parser.parse_args()
    from transact.config import with_overrides

    base = with_overrides(experiment_base_config(),
                          {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)})
    if args.items != "truth":
        base = with_overrides(base, {"model.ranker.item_representation": args.items})
    data = load_training_data(args.examples_dir, base.model.ranker.item_representation)
    if args.items == "truth":
        data = dataclasses.replace(data, item_table=truth_item_table(
            args.dataset_dir, base.model.ranker.item_emb_dim))
    rows = []
    oracle = oracle_metrics(data.test)
    if oracle is not None:
        rows.append({"variant": "oracle", "seed": None, "test": oracle[0]})
    for seed in args.seeds:
        for variant in select_variants(args.variants):
            res = run_variant(variant, base, data, seed)
            rows.append({"variant": variant.name, "seed": seed, "test": res.test,
                         "val": res.val, "steps": res.steps,
                         "train_seconds": round(res.train_seconds, 1)})
            shown = {k: round(v, 3) for k, v in res.test.items() if k.startswith(("auc", "hit"))}
            print(variant.name, seed, f"{res.train_seconds:.0f} s", shown, flush=True)
            args.out.write_text(json.dumps({"items": args.items, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
