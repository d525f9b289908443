"""Training step time of the ranker by torch intra-op thread count, alone or beside busy
processes (the measurement behind ``num_threads=1`` being the default on a shared machine).

Usage::

    .venv/bin/python bench/bench_threads.py [--threads 1 2] [--busy 0 1] [--train-steps 20]

For each ``--busy`` level, that many pure-Python busy loops run on the side (standing in for the
other jobs of a shared machine) while ``bench/bench_model.py --skip-eval --threads N`` measures
the median Adam step for each ``--threads`` value, in its own process. Prints a markdown table
(seconds per step, slowdown against one thread at the same load) and writes the raw results to
``--json-out`` (default ``docs/bench/threads.json``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_results import add_json_out, write_results  # noqa: E402

BENCH_MODEL = Path(__file__).resolve().parent / "bench_model.py"


def _spin(stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def step_seconds(threads: int, train_steps: int, batch_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.json"
        cmd = [sys.executable, str(BENCH_MODEL), "--skip-eval", "--threads", str(threads),
               "--train-steps", str(train_steps), "--batch-size", str(batch_size),
               "--json-out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        return json.loads(out.read_text())["result"]["train_step_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1],
                        help="numbers of busy side processes to measure beside")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    add_json_out(parser, "threads")
    args = parser.parse_args(argv)

    rows = []
    for busy in args.busy:
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for proc in spinners:
            proc.start()
        try:
            for threads in args.threads:
                seconds = step_seconds(threads, args.train_steps, args.batch_size)
                rows.append({"busy_processes": busy, "threads": threads,
                             "step_s": seconds["full_100"],
                             "step_s_uniform_lengths": seconds["uniform_0_100"]})
        finally:
            stop.set()
            for proc in spinners:
                proc.join(timeout=10)
    for row in rows:
        base = next(r for r in rows if r["busy_processes"] == row["busy_processes"]
                    and r["threads"] == min(args.threads))
        row["slowdown_vs_fewest_threads"] = round(row["step_s"] / base["step_s"], 2)

    print(f"| busy side processes | threads | s/step (batch {args.batch_size}, full sequences) "
          f"| slowdown |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['busy_processes']} | {row['threads']} | {row['step_s']:.3f} | "
              f"{row['slowdown_vs_fewest_threads']:.2f}x |")
    path = write_results("threads", args, {"rows": rows})
    print(f"raw results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
