"""Benchmark the ranker: training examples/s and eval latency for one request.

Usage::

    .venv/bin/python bench/bench_model.py [--candidates 500] [--threads 1] [--repeats 7]

Eval latency: one user, a full sequence of 100 actions, ``--candidates`` candidates, the default
TransAct ranker (d = 96, 2 layers, 1 head, FFN 32), in three formulations of the same weights:

* ``ours``   - this project's encoder (own post-norm layers on ``scaled_dot_product_attention``);
* ``plain``  - the same model with the encoder layers run by a plain eval-mode
  ``nn.TransformerEncoder`` (weights copied);
* ``shared`` - ours with the exact shared first-layer rewrite (sequence-side Q/K/V projections
  computed once per request, candidates in chunks of 100).

Parity: the three formulations must give the same logits (max abs difference <=
``--parity-tol``); otherwise the benchmark reports the differences and exits with code 1 (the
latencies of formulations that compute something else are not comparable).

Training: Adam steps on random batches (all sequences full, and lengths uniform in 0..100);
``--skip-eval`` measures only these (``bench/bench_threads.py`` uses it).
Prints a markdown table and writes the raw results to ``--json-out``
(default ``docs/bench/model.json``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transact.model.config import EncoderConfig, RankerConfig
from transact.model.encoder import SequenceEncoder, compress
from transact.model.features import RankingBatch, make_batch
from transact.model.loss import multitask_loss
from transact.model.ranker import Pinnability
from transact.schema import HOUR_MS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import add_json_out, write_results  # noqa: E402

REQUEST_MS = 1_767_225_600_000
N_ITEMS = 10_000


class PlainTransformerEncoder(nn.Module):
    """The same TransAct encoder with its layers run by ``nn.TransformerEncoder``."""

    def __init__(self, ours: SequenceEncoder) -> None:
        super().__init__()
        self.ours = ours
        cfg = ours.cfg
        self.output_dim = ours.output_dim
        self.torch_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(cfg.d_model, cfg.num_heads, cfg.ffn_dim, cfg.dropout,
                                       batch_first=True), cfg.num_layers,
            enable_nested_tensor=False)
        for mine, ref in zip(ours.layers, self.torch_encoder.layers, strict=True):
            ref.self_attn.in_proj_weight.data.copy_(mine.in_proj.weight)
            ref.self_attn.in_proj_bias.data.copy_(mine.in_proj.bias)
            ref.self_attn.out_proj.load_state_dict(mine.out_proj.state_dict())
            for name in ("linear1", "linear2", "norm1", "norm2"):
                getattr(ref, name).load_state_dict(getattr(mine, name).state_dict())

    def forward(self, seq_action_types, seq_item_emb, seq_timestamps_ms, request_time_ms,
                cand_item_emb):  # noqa: ANN001, ANN201 - same signature as SequenceEncoder
        visible = self.ours.visibility(seq_action_types, seq_timestamps_ms, request_time_ms)
        tokens, attend = self.ours.tokens(seq_action_types, seq_item_emb, cand_item_emb, visible)
        hidden = self.torch_encoder(tokens, src_key_padding_mask=~attend)
        return compress(hidden, attend, self.ours.cfg.first_k, self.ours.cfg.max_pool)


def request_batch(n_candidates: int, item_table: np.ndarray, rng: np.random.Generator,
                  lengths: np.ndarray | None = None, same_user: bool = True) -> RankingBatch:
    rows = 1 if same_user else n_candidates
    lengths = np.full(rows, 100) if lengths is None else lengths
    slots = np.arange(100)[None, :]
    actions = np.where(slots < lengths[:, None], rng.integers(2, 5, (rows, 100)), 0)
    seq_items = np.where(actions > 0, rng.integers(1, N_ITEMS, (rows, 100)), 0)
    ts = np.where(actions > 0, REQUEST_MS - (slots + 1) * HOUR_MS // 2, 0)
    user_emb = rng.normal(size=(rows, 32)).astype(np.float32)
    if same_user:
        actions, seq_items, ts, user_emb = (np.repeat(a, n_candidates, axis=0)
                                            for a in (actions, seq_items, ts, user_emb))
    return make_batch(
        item_table=item_table, item_id=rng.integers(1, N_ITEMS, n_candidates),
        request_time_ms=np.full(n_candidates, REQUEST_MS),
        surface_id=np.ones(n_candidates, np.int64), seq_item_ids=seq_items,
        seq_action_types=actions, seq_timestamps_ms=ts, user_batch_emb=user_emb,
        item_id_buckets=4096,
        labels=(rng.random((n_candidates, 3)) < 0.1).astype(np.float32),
        user_weight=np.ones(n_candidates, np.float32),
        item_counts=rng.integers(0, 500, (n_candidates, 4)),
        user_counts=np.repeat(rng.integers(0, 500, (1, 4)), n_candidates, axis=0))


def median_seconds(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parity_failures(max_abs_diff: dict[str, float], tol: float) -> list[str]:
    """The formulations whose logits differ from ``ours`` by more than ``tol``."""
    return [f"{name}: max |ours - {name}| = {diff:.2e} > {tol:.0e}"
            for name, diff in max_abs_diff.items() if not diff <= tol]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--parity-tol", type=float, default=1e-4,
                        help="largest accepted |logit difference| between formulations")
    parser.add_argument("--skip-eval", action="store_true",
                        help="only the training steps (no latency, no parity check)")
    add_json_out(parser, "model")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    item_table = rng.normal(size=(N_ITEMS, 32)).astype(np.float32)
    item_table[0] = 0

    latency: dict[str, float] = {}
    max_diff: dict[str, float] = {}
    failures: list[str] = []
    if not args.skip_eval:
        model = Pinnability(RankerConfig(encoder=EncoderConfig(similarity_pool=False))).eval()
        plain = copy.deepcopy(model)
        plain.encoder = PlainTransformerEncoder(plain.encoder).eval()
        batch = request_batch(args.candidates, item_table, rng)
        with torch.no_grad():
            ours_out, plain_out = model(batch), plain(batch)
            shared_out = model(batch, shared_sequence=True)
        max_diff = {"plain": float((ours_out - plain_out).abs().max()),
                    "shared": float((ours_out - shared_out).abs().max())}
        failures = parity_failures(max_diff, args.parity_tol)
        if not failures:
            with torch.no_grad():
                latency = {
                    "ours": median_seconds(lambda: model(batch), args.repeats),
                    "plain": median_seconds(lambda: plain(batch), args.repeats),
                    "shared": median_seconds(lambda: model(batch, shared_sequence=True),
                                             args.repeats),
                }

    train_rates: dict[str, float] = {}
    step_seconds: dict[str, float] = {}
    if not failures:
        for name, lengths in (("full_100", np.full(args.batch_size, 100)),
                              ("uniform_0_100", rng.integers(0, 101, args.batch_size))):
            trainee = Pinnability(
                RankerConfig(encoder=EncoderConfig(similarity_pool=False))).train()
            optimizer = torch.optim.Adam(trainee.parameters(), lr=1e-3)
            train_batch = request_batch(args.batch_size, item_table, rng, lengths,
                                        same_user=False)
            eye = torch.eye(3)

            def step() -> None:
                loss = multitask_loss(trainee(train_batch), train_batch.labels,  # noqa: B023
                                      eye, train_batch.user_weight)  # noqa: B023
                optimizer.zero_grad()  # noqa: B023
                loss.backward()
                optimizer.step()  # noqa: B023

            step_seconds[name] = median_seconds(step, args.train_steps)
            train_rates[name] = args.batch_size / step_seconds[name]

    print(f"threads={args.threads} candidates={args.candidates} torch={torch.__version__}")
    if latency:
        print("| formulation | eval latency (ms) | candidates/s | vs plain |")
        print("|---|---|---|---|")
        for name, seconds in latency.items():
            print(f"| {name} | {seconds * 1000:.1f} | {args.candidates / seconds:,.0f} | "
                  f"{latency['plain'] / seconds:.2f}x |")
    if max_diff:
        print(f"max |ours - plain| = {max_diff['plain']:.2e}, max |ours - shared| = "
              f"{max_diff['shared']:.2e} (logits; tolerance {args.parity_tol:.0e})")
    if train_rates:
        print("| training batch | examples/s | s/step |")
        print("|---|---|---|")
        for name, rate in train_rates.items():
            print(f"| {name} (batch {args.batch_size}) | {rate:,.0f} | "
                  f"{step_seconds[name]:.3f} |")
    result = {"threads": args.threads, "candidates": args.candidates,
              "parity_ok": not failures, "parity_failures": failures,
              "max_abs_diff": max_diff,
              "latency_ms": {k: round(v * 1000, 2) for k, v in latency.items()},
              "train_examples_per_s": {k: round(v, 1) for k, v in train_rates.items()},
              "train_step_s": {k: round(v, 4) for k, v in step_seconds.items()}}
    path = write_results("model", args, result)
    print(f"raw results: {path}")
    if failures:
        print("PARITY FAILED: the formulations compute different logits:\n  "
              + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
