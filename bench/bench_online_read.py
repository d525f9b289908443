"""Online read latency for one ranking request: Feast ``get_online_features`` vs the direct
Redis read path, over the same Redis data (production profile).

Usage::

    .venv/bin/python bench/bench_online_read.py --candidates 500 --iterations 300

Sets up a throw-away production profile (Redis db 6, PostgreSQL schema ``transact_bench_read``),
applies the Feast definitions, stages and materialises ``--items`` item embeddings and daily
user embeddings, streams events so users have full 100-action sequences, then times
``get_ranking_features(user, candidates)`` for random users (1 user x C candidates) and the
user-only part (sequence + batch embedding, no candidates). Prints p50/p99 in ms.

The direct reader is timed twice: as the process is after setup (``feast`` imported: a large
heap that every full garbage collection walks), and again after
``features.online.freeze_startup_heap()`` (``gc.freeze()``: what a serving replica should do
once it has loaded its code and model; the start-up heap leaves the collector's view, so no
pause scales with it). ``--no-gc-freeze`` skips the second
pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transact.runtime import quiet_telemetry  # noqa: E402

quiet_telemetry()

from features.online import (  # noqa: E402
    FeastReader,
    RedisDirectReader,
    freeze_startup_heap,
)
from features.processor import ProcessorConfig, open_processor, open_stream  # noqa: E402
from features.replay import stream_scenario  # noqa: E402
from features.store import (  # noqa: E402
    FeatureProfile,
    apply,
    materialize,
    stage_items,
    stage_user_embeddings,
    teardown,
)
from transact.schema import HOUR_MS, ITEM_SCHEMA  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import add_json_out, write_results  # noqa: E402


def _setup(profile: FeatureProfile, tmp: Path, n_items: int, n_users: int) -> None:
    rng = np.random.default_rng(0)
    items = pa.table({
        "item_id": pa.array(np.arange(1, n_items + 1), pa.int64()),
        "content_emb": pa.FixedSizeListArray.from_arrays(
            pa.array(rng.standard_normal(n_items * 32).astype(np.float32)), 32),
        "topic": pa.array(np.zeros(n_items, np.int32)),
        "title": pa.array([""] * n_items),
    }, schema=ITEM_SCHEMA)
    pq.write_table(items, tmp / "items.parquet")
    now = int(time.time() * 1000)
    emb = pa.table({
        "user_id": pa.array(np.arange(1, n_users + 1), pa.int64()),
        "event_timestamp": pa.array(np.full(n_users, now - HOUR_MS),
                                    pa.timestamp("ms", tz="UTC")),
        "user_emb": pa.FixedSizeListArray.from_arrays(
            pa.array(rng.standard_normal(n_users * 32).astype(np.float32)), 32),
    })
    pq.write_table(emb, tmp / "user_emb.parquet")
    apply(profile)
    stage_items(profile, tmp / "items.parquet")
    stage_user_embeddings(profile, tmp / "user_emb.parquet")
    materialize(profile)
    sc = stream_scenario(n_users * 150, n_users=n_users, n_items=n_items, engagement_rate=1.0,
                         jitter_ms=0, span_ms=HOUR_MS, seed=1)
    open_stream(profile).publish(sc.published)
    open_processor(profile, ProcessorConfig(batch_size=5000, block_ms=0)).run()


def _time(fn, iterations: int) -> dict:
    for _ in range(min(20, iterations)):  # warm-up
        fn()
    lat = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t0) * 1000)
    arr = np.array(lat)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3),
            "p99_ms": round(float(np.percentile(arr, 99)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--redis-db", type=int, default=6)
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="do not repeat the direct timings after gc.freeze()")
    add_json_out(parser, "online_read")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        profile = FeatureProfile.production(
            tmp / "features", project="bench_read", key_prefix="transact_bench_read:",
            redis_db=args.redis_db, pg_schema="transact_bench_read")
        teardown(profile)
        try:
            _setup(profile, tmp, args.items, args.users)
            rng = np.random.default_rng(2)
            readers = {"feast": FeastReader(profile), "direct": RedisDirectReader(profile)}
            a = readers["feast"].get_ranking_features(3, np.arange(1, args.candidates + 1))
            b = readers["direct"].get_ranking_features(3, np.arange(1, args.candidates + 1))
            assert np.array_equal(a.item_emb, b.item_emb)
            assert np.array_equal(a.seq_item_ids, b.seq_item_ids) and b.seq_len == 100
            result: dict = {"candidates": args.candidates, "iterations": args.iterations}
            for name, reader in readers.items():
                def full(reader=reader):
                    user = int(rng.integers(1, args.users + 1))
                    cands = rng.integers(1, args.items + 1, args.candidates)
                    reader.get_ranking_features(user, cands)

                def user_only(reader=reader):
                    reader.get_ranking_features(int(rng.integers(1, args.users + 1)), [])

                result[f"{name}_1user_x_{args.candidates}cand"] = _time(full, args.iterations)
                result[f"{name}_user_only"] = _time(user_only, args.iterations)
            if not args.no_gc_freeze:
                direct = readers["direct"]
                result["gc_frozen_objects"] = freeze_startup_heap()
                result[f"direct_1user_x_{args.candidates}cand_gc_frozen"] = _time(
                    lambda: direct.get_ranking_features(
                        int(rng.integers(1, args.users + 1)),
                        rng.integers(1, args.items + 1, args.candidates)), args.iterations)
                result["direct_user_only_gc_frozen"] = _time(
                    lambda: direct.get_ranking_features(int(rng.integers(1, args.users + 1)),
                                                        []), args.iterations)
                gc.unfreeze()
        finally:
            teardown(profile)
    print(json.dumps(result, indent=2))
    print(f"raw results: {write_results('online_read', args, result)}")


if __name__ == "__main__":
    main()
