"""Run the PinnerFormer daily job on a dataset and report recall@k against the baselines.

    .venv/bin/python bench/bench_pinnerformer.py synthetic --work artifacts/pf-synth --n-days 28
    .venv/bin/python bench/bench_pinnerformer.py movielens --work artifacts/pf-ml

``synthetic`` generates the demo world (``transact.data.synthetic``, 2,000 users) with the given
number of days into ``<work>/dataset`` unless it exists; ``movielens`` builds MovieLens-100K
there (fetched with pip at first use). ``--dataset DIR`` uses an existing dataset instead. The
job writes to ``<work>/pinnerformer``; the figures go to stdout, ``<work>/report.json`` and
``--json-out`` (default ``docs/bench/pinnerformer_<source>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_results import add_json_out, write_results  # noqa: E402

from transact.runtime import quiet_telemetry  # noqa: E402

quiet_telemetry()

from training.pinnerformer import (  # noqa: E402
    PinnerFormerConfig,
    PinnerFormerModelConfig,
    evaluate_pinnerformer,
    run_daily_embeddings,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=["synthetic", "movielens", "dataset"])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--n-users", type=int, default=2000)
    parser.add_argument("--n-days", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-len", type=int, default=256)
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--warmup-days", type=int, default=3)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--item-id-buckets", type=int, default=65_536)
    parser.add_argument("--no-logq", action="store_true")
    parser.add_argument("--eval-window-days", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-name", default="pinnerformer")
    parser.add_argument("--progress", action="store_true")
    add_json_out(parser, "pinnerformer_<source>")
    args = parser.parse_args(argv)

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    dataset = args.dataset or work / "dataset"
    started = time.perf_counter()
    if args.source == "synthetic" and not (dataset / "meta.json").exists():
        from transact.data.synthetic import generate_world
        from transact.data.synthetic_world import WorldConfig

        generate_world(dataset, WorldConfig(n_users=args.n_users, n_days=args.n_days,
                                            seed=args.seed), progress=args.progress)
    elif args.source == "movielens" and not (dataset / "meta.json").exists():
        from transact.data.movielens import build_movielens_dataset

        build_movielens_dataset(dataset, progress=args.progress)
    data_s = time.perf_counter() - started

    cfg = PinnerFormerConfig(
        history_len=args.history_len, window_days=args.window_days,
        warmup_days=args.warmup_days, train_fraction=args.train_fraction,
        train_steps=args.train_steps, batch_size=args.batch_size, seed=args.seed,
        num_threads=args.threads, logq_correction=not args.no_logq,
        model=PinnerFormerModelConfig(n_layers=args.n_layers, item_id_buckets=args.item_id_buckets),
    )
    out = work / args.out_name
    t0 = time.perf_counter()
    stats = run_daily_embeddings(dataset, out, cfg, progress=args.progress)
    job_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = evaluate_pinnerformer(dataset, out, ks=(10, 50),
                                   window_days=args.eval_window_days, progress=args.progress)
    eval_s = time.perf_counter() - t0

    summary = {
        "command": "bench/bench_pinnerformer.py " + " ".join(sys.argv[1:] if argv is None
                                                              else argv),
        "dataset": str(dataset),
        "config": asdict(cfg),
        "train": asdict(stats.train) if stats.train else None,
        "days_embedded": stats.days,
        "rows_per_day": stats.rows_per_day,
        "zero_history_per_day": stats.zero_history_per_day,
        "report": asdict(report),
        "seconds": {"data": round(data_s, 1), "job": round(job_s, 1), "eval": round(eval_s, 1)},
    }
    (work / "report.json").write_text(json.dumps(summary, indent=2))
    print(f"raw results: {write_results(f'pinnerformer_{args.source}', args, summary)}")
    print(report.to_markdown())
    print(f"\n(user, day) pairs: {report.n_user_days}; evaluated days: {report.days[0]} .. "
          f"{report.days[-1]}; window {report.window_days} d; mean positives per pair "
          f"{report.mean_targets}")
    if stats.train:
        print(f"training: {stats.train.n_examples} examples, {stats.train.steps} steps, loss "
              f"{stats.train.loss_first:.3f} -> {stats.train.loss_last:.3f}, "
              f"{stats.train.elapsed_s:.1f} s; trained until {stats.trained_until}")
    print(f"seconds: data {data_s:.1f}, job {job_s:.1f}, eval {eval_s:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
