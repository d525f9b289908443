"""Stream processor benchmark: throughput (events/s) and freshness (event -> online, p50/p99).

Usage::

    .venv/bin/python bench/bench_stream.py --events 200000 --users 50000
    .venv/bin/python bench/bench_stream.py --profile embedded --events 50000

Production profile (default): Redis 127.0.0.1:6379 db 6, key prefix ``transact_bench:``, all
its keys removed afterwards. Throughput = messages / wall time of ``StreamProcessor.run`` over a
pre-filled stream (decode, validate, dedupe, merge, atomic commit with the Feast-layout write,
offline Parquet log). Freshness: a processor runs in ``--follow`` mode in a subprocess while
this script publishes background load plus one probe engagement at a time and polls the probe
user's Feast online hash until the probe item is at the head of the sequence.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.processor import ProcessorConfig, open_processor, open_stream  # noqa: E402
from features.replay import stream_scenario  # noqa: E402
from features.store import FeatureProfile, teardown  # noqa: E402
from transact.runtime import quiet_telemetry  # noqa: E402
from transact.schema import DAY_MS, EVENT_SCHEMA, HOUR_MS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import add_json_out, write_results  # noqa: E402


def _shifted(sc_table: pa.Table, id_offset: int) -> pa.Table:
    ids = pc.add(sc_table.column("event_id"), id_offset)
    return sc_table.set_column(0, "event_id", ids)


def throughput(profile: FeatureProfile, n_events: int, n_users: int, batch: int,
               warm_events: int) -> dict:
    """Events/s over a pre-filled stream; ``warm_events`` are processed first (not timed) so
    users already have sequences, as in steady state."""
    span = 6 * HOUR_MS
    start = (int(time.time() * 1000) - 3 * DAY_MS) // 1000 * 1000
    stream = open_stream(profile)
    proc = open_processor(profile, ProcessorConfig(batch_size=batch, block_ms=0),
                          feast_online=profile.kind == "production")
    if warm_events:
        warm = stream_scenario(warm_events, n_users=n_users, n_items=100_000, span_ms=span,
                               jitter_ms=30_000, start_ms=start, seed=1)
        stream.publish(_shifted(warm.published, 10**12))
        proc.run()
        start += span
    sc = stream_scenario(n_events, n_users=n_users, n_items=100_000, duplicate_rate=0.01,
                         jitter_ms=30_000, span_ms=span, start_ms=start, seed=0)
    t0 = time.perf_counter()
    stream.publish(sc.published)
    publish_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    total = proc.run(progress=False)
    run_s = time.perf_counter() - t0
    assert total.accepted == sc.accepted.num_rows, (total, sc.accepted.num_rows)
    return {
        "events": total.messages, "engagements": total.engagements,
        "users_updated_total": total.users_updated, "batch_size": batch,
        "warm_events": warm_events,
        "publish_events_per_s": round(total.messages / publish_s),
        "process_events_per_s": round(total.messages / run_s),
        "process_s": round(run_s, 2),
    }


def freshness(profile: FeatureProfile, probes: int, load_per_probe: int) -> dict:
    from features.feast_layout import FeastRedisLayout, decode_int_list
    from features.names import SEQUENCE_VIEW

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "features.cli", "process", "--profile", "production", "--root",
         str(profile.root), "--redis-db", str(profile.redis_db), "--key-prefix",
         profile.key_prefix, "--project", profile.project, "--follow", "--batch-size", "5000",
         "--ready-file", str(profile.root / "ready")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (profile.root / "ready").exists():
            time.sleep(0.05)
        stream = open_stream(profile)
        client = profile.redis_client()
        layout = FeastRedisLayout(profile.project)
        probe_user = 10_000_000
        key = layout.entity_key("user_id", probe_user)
        field = FeastRedisLayout.field(SEQUENCE_VIEW, "seq_item_ids")
        rng = np.random.default_rng(1)
        latencies = []
        next_id = 50_000_000
        for i in range(probes):
            now = int(time.time() * 1000)
            n = load_per_probe + 1
            ids = np.arange(next_id, next_id + n)
            next_id += n
            users = rng.integers(1, 50_000, n)
            users[-1] = probe_user
            items = rng.integers(1, 100_000, n)
            items[-1] = 1_000_000 + i
            actions = rng.integers(1, 5, n).astype(np.int8)
            actions[-1] = 3
            events = pa.table({
                "event_id": ids, "user_id": users, "item_id": items, "action_type": actions,
                "timestamp_ms": np.full(n, now), "surface": ["homefeed"] * n,
                "request_id": ids}, schema=EVENT_SCHEMA)
            t0 = time.perf_counter()
            stream.publish(events)
            while True:
                blob = client.hget(key, field)
                if blob is not None and decode_int_list(blob)[0] == 1_000_000 + i:
                    break
                time.sleep(0.0002)
            latencies.append((time.perf_counter() - t0) * 1000)
        lat = np.array(latencies)
        return {"probes": probes, "background_events_per_probe": load_per_probe,
                "freshness_ms_p50": round(float(np.percentile(lat, 50)), 2),
                "freshness_ms_p99": round(float(np.percentile(lat, 99)), 2),
                "freshness_ms_max": round(float(lat.max()), 2)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    quiet_telemetry()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=["production", "embedded"], default="production")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--warm-events", type=int, default=0,
                        help="process this many events first (users get sequences)")
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--load-per-probe", type=int, default=200)
    parser.add_argument("--redis-db", type=int, default=6)
    add_json_out(parser, "stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profile = FeatureProfile(kind=args.profile, root=Path(tmp) / "features",
                                 project="bench", key_prefix="transact_bench:",
                                 redis_db=args.redis_db, pg_schema="transact_bench")
        teardown(profile)
        try:
            result = {"profile": args.profile,
                      **throughput(profile, args.events, args.users, args.batch_size,
                                    args.warm_events)}
            if profile.kind == "production" and args.probes > 0:
                profile.root.mkdir(parents=True, exist_ok=True)
                result.update(freshness(profile, args.probes, args.load_per_probe))
        finally:
            teardown(profile)
    print(json.dumps(result, indent=2))
    print(f"raw results: {write_results('stream', args, result)}")


if __name__ == "__main__":
    main()
