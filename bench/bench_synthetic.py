"""Benchmark: synthetic world generation throughput (events/s, users/s) and peak memory.

Usage::

    python bench/bench_synthetic.py --users 100000 --users-per-chunk 20000
    python bench/bench_synthetic.py --users 1000000 --days 4 --out artifacts/synthetic-1m

Generates a world with :func:`transact.data.synthetic.generate_world` (default config apart
from the flags) and prints one JSON line: events, users, seconds, events/s, users/s, peak RSS
(``resource.getrusage``) and the on-disk size. With no ``--out`` it writes to a temporary
directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from transact.data.synthetic import WorldConfig, generate_world
from transact.runtime import quiet_telemetry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import add_json_out, write_results  # noqa: E402


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(users: int, out: Path, users_per_chunk: int, days: int, items: int, seed: int,
        progress: bool) -> dict[str, float | int | str]:
    cfg = WorldConfig(n_users=users, n_items=items, n_days=days, users_per_chunk=users_per_chunk,
                      seed=seed)
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    meta = generate_world(out, cfg, progress=progress)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "bench": "synthetic", "users": users, "users_per_chunk": users_per_chunk, "days": days,
        "items": items, "events": meta.n_events, "parts": meta.n_parts,
        "events_per_user": round(meta.n_events / users, 1),
        "seconds": round(elapsed, 2),
        "events_per_s": round(meta.n_events / elapsed),
        "users_per_s": round(users / elapsed),
        "peak_rss_mb": round(peak_mb), "rss_before_mb": round(rss_before_mb),
        "disk_mb": round(directory_bytes(out) / 2**20, 1),
    }


def main() -> None:
    quiet_telemetry()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None,
                        help="dataset directory to write (default: a temporary one, removed)")
    parser.add_argument("--users-per-chunk", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=WorldConfig.n_days)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    add_json_out(parser, "synthetic")
    args = parser.parse_args()
    if args.out is not None:
        result = run(args.users, args.out, args.users_per_chunk, args.days, args.items,
                     args.seed, args.progress)
        result["out"] = str(args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.users, Path(tmp) / "world", args.users_per_chunk, args.days,
                         args.items, args.seed, args.progress)
    print(json.dumps(result))
    print(f"raw results: {write_results('synthetic', args, result)}")


if __name__ == "__main__":
    main()
