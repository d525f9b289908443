"""Retraining benchmarks: Ray Train's overhead, and the wall time of one retraining DAG run.

``train``: the same training budget (``--steps`` Adam steps of ``--batch-size``, evaluation
once at the end) on the same examples, three ways in one run so machine noise hits all alike:

* ``plain``: :func:`training.train.train_model` in this process (the whole train split in
  memory);
* ``ray_1``: Ray Train, 1 worker, streaming its shard;
* ``ray_2``: Ray Train, 2 DDP workers (each takes ``steps / 2`` steps over its half, so the
  same number of examples is seen).

Reported: wall seconds (Ray's includes starting the worker group, not the cluster), the loop's
own examples/s, and ratios against ``plain``.

``dag``: one ``retrain_twice_weekly`` run with ``dag.test()`` on a synthetic world of
``--users`` x ``--days`` (generated, then the ``daily_embeddings`` DAG first), per-task times.

    .venv/bin/python bench/bench_retrain.py train artifacts/demo/examples_synthetic --steps 120
    .venv/bin/python bench/bench_retrain.py dag --users 1500 --days 14
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_results import add_json_out, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bench_train(args: argparse.Namespace) -> dict:
    from training.ray_train import fit_on_ray
    from training.retrain import RayTrainSettings, RetrainConfig
    from training.train import TrainConfig, load_training_data, train_model
    from transact.runtime import start_local_ray

    base = TrainConfig(max_steps=args.steps, batch_size=args.batch_size,
                       eval_every_steps=args.steps, max_eval_requests=500, max_epochs=50)
    data = load_training_data(args.examples_dir, base.model.ranker.item_representation)
    runs = {}
    tick = time.perf_counter()
    plain = train_model(base, dataclasses.replace(data, test=None))
    runs["plain"] = {"wall_s": time.perf_counter() - tick, "steps": plain.steps,
                     "examples_per_s": plain.examples_per_s,
                     "val_auc_save": plain.val_metrics.get("auc_save")}
    start_local_ray(num_cpus=os.cpu_count())
    no_train = dataclasses.replace(data, test=None)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            cfg = RetrainConfig(examples_dir=str(args.examples_dir), work_dir=tmp,
                                backend="ray",
                                train=dataclasses.replace(base, max_steps=args.steps // workers,
                                                          eval_every_steps=args.steps // workers),
                                ray=RayTrainSettings(num_workers=workers))
            tick = time.perf_counter()
            result = fit_on_ray(cfg, no_train, Path(tmp) / f"ray{workers}")
            runs[f"ray_{workers}"] = {"wall_s": time.perf_counter() - tick,
                                      "steps": result.steps,
                                      "examples_per_s": result.examples_per_s * workers,
                                      "val_auc_save": result.val_metrics.get("auc_save")}
    for name, run in runs.items():
        run["wall_vs_plain"] = run["wall_s"] / runs["plain"]["wall_s"]
        print(f"{name:8s} wall {run['wall_s']:7.1f} s ({run['wall_vs_plain']:.2f}x plain)  "
              f"{run['examples_per_s']:8.0f} ex/s in the loop  steps {run['steps']}  "
              f"val AUC save {run['val_auc_save']:.3f}", flush=True)
    return {"runs": runs, "steps": args.steps, "batch_size": args.batch_size}


def bench_dag(args: argparse.Namespace) -> dict:
    from transact.data.synthetic import WorldConfig, generate_world

    work = Path(tempfile.mkdtemp(prefix="bench_dag_"))
    world = work / "world"
    generate_world(world, WorldConfig(n_users=args.users, n_days=args.days, seed=0))
    env = {**os.environ, "AIRFLOW_HOME": str(work / "airflow"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'airflow' / 'db.sqlite'}",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "PYTHONPATH": str(ROOT)}
    (work / "airflow").mkdir()
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env,
                   check=True, capture_output=True)
    overrides = {"dataset_dir": str(world), "work_dir": str(work / "pipe"),
                 "embeddings_dir": str(work / "pipe" / "pinnerformer"),
                 "feature_root": str(work / "pipe" / "features"),
                 "retrain.registry.root": str(work / "registry"),
                 "pinnerformer": {"train_steps": 150, "history_len": 128, "window_days": 2,
                                  "warmup_days": 2}}
    out = {}
    for dag in ("daily_embeddings", "retrain_twice_weekly"):
        tick = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "dags" / "run_dag.py"),
                               str(ROOT / "dags" / f"{dag}.py"),
                               json.dumps({"overrides": overrides})],
                              env=env, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - tick
        line = [x for x in proc.stdout.splitlines() if x.startswith("DAG_RESULT ")]
        result = json.loads(line[-1].removeprefix("DAG_RESULT ")) if line else {
            "state": "no result", "stderr": proc.stderr[-2000:]}
        out[dag] = {"wall_s": wall, "state": result["state"],
                    "tasks": {k: v["state"] for k, v in result.get("tasks", {}).items()}}
        print(f"{dag}: {result['state']} in {wall:.1f} s", flush=True)
    return {"users": args.users, "days": args.days, "dags": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    train = sub.add_parser("train")
    train.add_argument("examples_dir", type=Path)
    train.add_argument("--steps", type=int, default=120)
    train.add_argument("--batch-size", type=int, default=256)
    add_json_out(train, "retrain_train")
    dag = sub.add_parser("dag")
    dag.add_argument("--users", type=int, default=1500)
    dag.add_argument("--days", type=int, default=14)
    add_json_out(dag, "retrain_dag")
    args = parser.parse_args()
    if args.what == "train":
        write_results("retrain_train", args, bench_train(args))
    else:
        write_results("retrain_dag", args, bench_dag(args))


if __name__ == "__main__":
    main()
