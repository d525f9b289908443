"""Training throughput of the TransAct ranker: examples/s of Adam steps, three configurations.

The configurations train on the same data with the same seed for the same number of steps;
they differ in what a training step encodes:

* ``paper``: every usable action of the sequence (up to 100), the window mask dropping
  actions, no similarity channel;
* ``before``: the defaults until 2026-12-01: the newest 32 actions (``train_seq_len``), the
  mask hiding keys only, no similarity channel (evaluation and serving read all 100);
* ``default``: today's defaults: all 100 actions, keys-only mask, the cos(item, candidate)
  channel (one more token column).

Examples: ``EXAMPLES_DIR`` (``transact data examples``); without it a small synthetic world is
generated in a temporary directory. Runs the two configurations alternately (``--rounds``) so
machine noise hits both alike, and reports the ratio.

    .venv/bin/python bench/bench_train.py /work/demo0/examples_synthetic --steps 60
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_results import add_json_out, write_results  # noqa: E402
from training.train import (  # noqa: E402
    TrainConfig,
    collate,
    epoch_batches,
    load_training_data,
    sequence_lengths,  # noqa: E402
)
from transact.model.loss import multitask_loss  # noqa: E402
from transact.model.ranker import Pinnability  # noqa: E402


def configs() -> dict[str, TrainConfig]:
    default = TrainConfig()
    enc = default.model.ranker.encoder

    def with_encoder(**changes: object) -> TrainConfig:
        return dataclasses.replace(default, model=dataclasses.replace(
            default.model, ranker=dataclasses.replace(
                default.model.ranker, encoder=dataclasses.replace(enc, **changes))))

    return {"paper": with_encoder(train_seq_len=None, time_window_mode="drop",
                                  candidate_similarity=False),
            "before": with_encoder(train_seq_len=32, candidate_similarity=False),
            "default": default}


def steps_per_second(cfg: TrainConfig, data, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = Pinnability(cfg.model.ranker).train()
    model.encoder.set_mask_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    weights = torch.tensor(cfg.model.loss.matrix(), dtype=torch.float32)
    rng = np.random.default_rng(seed)
    batches = epoch_batches(sequence_lengths(data.train), cfg.batch_size, rng, True)
    seen, started = 0, time.perf_counter()
    for rows in batches[:steps]:
        batch = collate(data.train, rows, data.item_table, cfg.model.ranker.item_id_buckets)
        loss = multitask_loss(model(batch), batch.labels, weights, batch.user_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(rows)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("examples_dir", nargs="?", type=Path)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    add_json_out(parser, "train")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        examples_dir = args.examples_dir
        if examples_dir is None:
            from transact.data.examples import ExampleConfig, build_examples
            from transact.data.synthetic import WorldConfig, generate_world

            generate_world(Path(tmp) / "world", WorldConfig(n_users=400, n_days=8))
            examples_dir = Path(tmp) / "examples"
            build_examples(Path(tmp) / "world", examples_dir, ExampleConfig())
        data = load_training_data(examples_dir)
        results: dict[str, list[float]] = {name: [] for name in configs()}
        for round_ in range(args.rounds):
            for name, cfg in configs().items():
                cfg = dataclasses.replace(cfg, model=dataclasses.replace(
                    cfg.model, ranker=dataclasses.replace(cfg.model.ranker,
                                                          item_representation="content")))
                results[name].append(steps_per_second(cfg, data, args.steps, round_))
                print(f"round {round_} {name:8s} {results[name][-1]:8.0f} examples/s",
                      flush=True)
    summary = {name: float(np.median(v)) for name, v in results.items()}
    summary["default_vs_paper"] = summary["default"] / summary["paper"]
    summary["default_vs_before"] = summary["default"] / summary["before"]
    print(f"median examples/s: paper {summary['paper']:.0f}, before {summary['before']:.0f}, "
          f"default {summary['default']:.0f} (default / paper {summary['default_vs_paper']:.2f}x,"
          f" default / before {summary['default_vs_before']:.2f}x)")
    write_results("train", args, {"runs": results, **summary})


if __name__ == "__main__":
    main()
