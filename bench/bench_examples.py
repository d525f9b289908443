"""Benchmark: training-example builder throughput (examples/s) and peak memory.

Usage::

    python bench/bench_examples.py --users 20000 --events-per-user 100     # random events
    python bench/bench_examples.py --dataset artifacts/synthetic            # an existing dataset

With no ``--dataset`` it writes a random dataset first (vectorised; ~15% engagements, users in
parts of ``--users-per-part``) so the figure measures the builder alone. Builds twice, without
and with the engagement counters (the default), and reports both and their time ratio. Prints
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transact.data.dataset import DatasetMeta, EventPartWriter
from transact.data.examples import ExampleConfig, build_examples
from transact.schema import DAY_MS, EVENT_SCHEMA, ITEM_EMB_DIM, ITEM_SCHEMA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import add_json_out, write_results  # noqa: E402


def write_random_dataset(out: Path, users: int, events_per_user: int, items: int,
                         users_per_part: int, days: int, seed: int = 0) -> DatasetMeta:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    emb = rng.standard_normal((items, ITEM_EMB_DIM)).astype(np.float32)
    pq.write_table(pa.table({
        "item_id": pa.array(np.arange(1, items + 1), pa.int64()),
        "content_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), ITEM_EMB_DIM),
        "topic": pa.array(np.zeros(items, np.int32)),
        "title": pa.array([None] * items, pa.string()),
    }, schema=ITEM_SCHEMA), out / "items.parquet")
    writer = EventPartWriter(out)
    t0 = 1_767_225_600_000
    next_id = 1
    for first in range(0, users, users_per_part):
        n_users = min(users_per_part, users - first)
        n = n_users * events_per_user
        user_ids = np.repeat(np.arange(first + 1, first + n_users + 1), events_per_user)
        ts = t0 + rng.integers(0, days * DAY_MS, n)
        actions = rng.choice(np.array([1, 2, 3, 4], np.int8), n, p=[0.85, 0.09, 0.045, 0.015])
        writer.write(pa.table({
            "event_id": pa.array(np.arange(next_id, next_id + n)),
            "user_id": pa.array(user_ids),
            "item_id": pa.array(rng.integers(1, items + 1, n)),
            "action_type": pa.array(actions),
            "timestamp_ms": pa.array(ts),
            "surface": pa.array(np.full(n, "homefeed", dtype=object), pa.string()),
            "request_id": pa.array(np.arange(next_id, next_id + n)),
        }, schema=EVENT_SCHEMA))
        next_id += n
    meta = DatasetMeta(source="bench-random", n_users=users, n_items=items,
                       n_events=writer.n_events, n_parts=writer.n_parts,
                       min_timestamp_ms=writer.min_ts or 0, max_timestamp_ms=writer.max_ts or 0,
                       seed=seed)
    meta.write(out)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events-per-user", type=int, default=100)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--users-per-part", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=14)
    add_json_out(parser, "examples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset
        if dataset is None:
            dataset = Path(tmp) / "dataset"
            write_random_dataset(dataset, args.users, args.events_per_user, args.items,
                                 args.users_per_part, args.days)
        rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # without the engagement counters first (peak RSS only grows), then the default
        runs = {}
        for counters in (False, True):
            started = time.perf_counter()
            stats = build_examples(dataset, Path(tmp) / "examples",
                                   ExampleConfig(engagement_counters=counters))
            runs[counters] = (time.perf_counter() - started,
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        elapsed, peak_mb = runs[True]
    result = {
        "bench": "examples", "dataset": str(args.dataset or "random"),
        "examples": stats.total, "seconds": round(elapsed, 2),
        "examples_per_s": round(stats.total / elapsed),
        "examples_per_min": round(60 * stats.total / elapsed),
        "peak_rss_mb": round(peak_mb), "rss_before_build_mb": round(rss_before_mb),
        "seq_len_mean": round(stats.seq_len_mean, 1),
        "seconds_without_counters": round(runs[False][0], 2),
        "peak_rss_mb_without_counters": round(runs[False][1]),
        "counters_time_ratio": round(elapsed / runs[False][0], 2),
    }
    print(json.dumps(result))
    print(f"raw results: {write_results('examples', args, result)}")


if __name__ == "__main__":
    main()
