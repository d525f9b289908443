"""Online-simulator experiments of docs/monitoring.md: engagement decay without retraining vs
twice-weekly retraining, diversity with and without the time-window mask, realtime + batch vs
batch only. Every arm runs the same simulated users, days, candidates and seeds.

    .venv/bin/python bench/bench_monitoring.py --dataset artifacts/demo/synthetic \
        --examples artifacts/demo/examples_synthetic --out artifacts/monitoring_sim

(the demo's world and examples: `make demo` first). Models are trained here with one budget
(`--train-rows`): TransAct with the mask, without it, and the no-sequence (batch only) model.
Writes the metrics database (the dashboard reads it), `results.json` and the plots; with
`--docs DIR` the plots and JSON are also copied there.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.config import MonitoringConfig  # noqa: E402
from monitoring.pipeline import ItemCatalogue, run_monitoring  # noqa: E402
from monitoring.simulator import (  # noqa: E402
    EngineRanker,
    SimulatorConfig,
    read_world_examples,
    retrainer_for,
    simulate,
)
from monitoring.store import MetricStore  # noqa: E402
from transact.schema import DAY_MS  # noqa: E402

ARMS = ("mask", "mask_retrain", "no_mask", "batch_only")


def train_models(examples_dir: Path, rows: int, seed: int, log) -> dict[str, object]:
    """TransAct (mask), TransAct (no mask), no-sequence: same data and budget."""
    from training.experiments import experiment_base_config, select_variants
    from training.train import load_training_data, train_model

    base = experiment_base_config()
    base.max_train_examples, base.seed, base.max_eval_requests = rows, seed, 1_000
    data = load_training_data(examples_dir, base.model.ranker.item_representation)
    variants = {v.name: v for v in select_variants(["transact"])}
    out: dict[str, object] = {}
    for name, variant, mask in (("mask", variants["transact"], True),
                                ("no_mask", variants["transact"], False),
                                ("batch_only", variants["no_sequence"], None)):
        cfg = copy.deepcopy(base)
        cfg.model = variant.apply(cfg.model)
        if mask is not None:
            cfg.model.ranker.encoder.time_window_mask = mask
        t = time.perf_counter()
        result = train_model(cfg, data)
        log(f"trained {name} in {time.perf_counter() - t:.0f} s: test "
            f"{ {k: round(v, 4) for k, v in result.test_metrics.items() if 'hit3' in k} }")
        out[name] = (result.model, cfg)
    out["item_table"] = data.item_table
    out["representation"] = data.item_representation
    return out


def daily(windows: pd.DataFrame, arm: str) -> pd.DataFrame:
    """Per day of one arm (all its versions pooled, impression-weighted)."""
    frame = windows[windows["model_version"].str.startswith(arm + ":")].copy()
    metrics = [c for c in frame.columns if c not in ("window_start_ms", "model_version",
                                                     "impressions", "requests")]
    rows = []
    for start, group in frame.groupby("window_start_ms"):
        w = group["impressions"].astype(float)
        rows.append({"day": int(start // DAY_MS), "impressions": int(w.sum()),
                     **{m: float(np.average(group[m].astype(float), weights=w))
                        for m in metrics if group[m].notna().all()}})
    return pd.DataFrame(rows)


def plot(results: dict[str, pd.DataFrame], decay: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm in ("mask", "mask_retrain"):
        d = results[arm]
        axes[0].plot(d["day"] - d["day"].min(), d["engagement_rate"], marker="o", label=arm)
    axes[0].set(xlabel="simulated day", ylabel="engagement per impression (click+save)",
                title="no retraining vs twice-weekly retraining")
    axes[0].legend()
    for version, group in decay.groupby("model_version"):
        if version.startswith(("mask:", "mask_retrain:")):
            axes[1].plot(group["age_days"], group["engagement_rate_rel"], marker=".",
                         label=version)
    axes[1].axhline(1.0, color="#999", lw=0.8)
    axes[1].set(xlabel="model age (days since promotion)", ylabel="engagement / first day",
                title="decay curves per version")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "sim_decay.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    names = ["intra_list_diversity", "topic_entropy", "catalogue_coverage",
             "rabbit_hole_similarity"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, name in zip(axes, names, strict=True):
        for arm in ("mask", "no_mask", "batch_only"):
            d = results[arm]
            if name in d:
                ax.plot(d["day"] - d["day"].min(), d[name], marker="o", label=arm)
        ax.set(title=name, xlabel="simulated day")
    axes[0].legend()
    fig.tight_layout()
    paths.append(out / "sim_diversity.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, name in zip(axes, ["click_rate", "save_rate", "hide_rate"], strict=True):
        for arm in ("mask", "batch_only"):
            d = results[arm]
            ax.plot(d["day"] - d["day"].min(), d[name], marker="o",
                    label="realtime + batch" if arm == "mask" else "batch only")
        ax.set(title=f"{name} (per impression)", xlabel="simulated day")
    axes[0].legend()
    fig.tight_layout()
    paths.append(out / "sim_realtime_vs_batch.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("artifacts/demo/synthetic"))
    parser.add_argument("--examples", type=Path,
                        default=Path("artifacts/demo/examples_synthetic"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/monitoring_sim"))
    parser.add_argument("--docs", type=Path, default=None)
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--requests-per-day", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=60)
    parser.add_argument("--train-rows", type=int, default=60_000)
    parser.add_argument("--retrain-rows", type=int, default=30_000)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from serving.engine import EngineConfig, RankingEngine
    from transact.data.synthetic_world import SyntheticWorld, WorldConfig

    torch.set_num_threads(1)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((args.dataset / "meta.json").read_text())
    world_cfg = WorldConfig.from_dict(meta["params"])
    world = SyntheticWorld(world_cfg)
    examples = read_world_examples(args.examples)
    models = train_models(args.examples, args.train_rows, args.seed, print)
    table = models["item_table"]
    known = np.abs(table).sum(axis=1) > 0
    engine_cfg = EngineConfig(threads=1)
    db = args.out / "metrics.db"
    if db.exists():
        db.unlink()
    mon_cfg = MonitoringConfig(metrics_url=f"sqlite:///{db}")
    mon_cfg.alerts.min_impressions = 500
    store = MetricStore(mon_cfg.metrics_url)
    catalogue = ItemCatalogue(world.content_emb, world.item_topic)
    summary: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()},
                                  "arms": {}}
    per_day: dict[str, pd.DataFrame] = {}
    for arm in args.arms.split(","):
        model_name = {"mask_retrain": "mask"}.get(arm, arm)
        model, train_cfg = models[model_name]
        sim_cfg = SimulatorConfig(n_users=args.users, n_days=args.days,
                                  requests_per_day=args.requests_per_day,
                                  n_candidates=args.candidates, realtime=arm != "batch_only",
                                  retrain_weekdays=[0, 3] if arm == "mask_retrain" else [],
                                  retrain_max_rows=args.retrain_rows, seed=args.seed)
        ranker = EngineRanker(RankingEngine(model, table, engine_cfg), "initial")
        retrainer = (retrainer_for(train_cfg.model, table, models["representation"], examples,
                                   sim_cfg, engine_cfg, args.seed)
                     if arm == "mask_retrain" else None)
        print(f"arm {arm}: simulating {args.users} users x {args.days} days")
        result = simulate(sim_cfg, world, ranker, examples, known, world_cfg.start_ms,
                          retrainer, progress=print)
        shown = result.shown.to_pandas()
        shown["model_version"] = arm + ":" + shown["model_version"]
        promoted = {f"{arm}:{v}": t for v, t in result.promoted_at_ms.items()}
        report = run_monitoring(mon_cfg, shown, result.events, catalogue, promoted, store,
                                origin_ms=world_cfg.start_ms)
        per_day[arm] = daily(report.windows, arm)
        d = per_day[arm]
        summary["arms"][arm] = {
            "seconds": round(result.seconds, 1), "retrains": result.retrains,
            "impressions": int(d["impressions"].sum()),
            "mean": {c: round(float((d[c] * d["impressions"]).sum() / d["impressions"].sum()), 5)
                     for c in d.columns if c not in ("day", "impressions")},
            "first_days": {c: round(float(d[c].iloc[:2].mean()), 5)
                           for c in ("engagement_rate", "hide_rate")},
            "last_days": {c: round(float(d[c].iloc[-2:].mean()), 5)
                          for c in ("engagement_rate", "hide_rate")},
            "daily": d.round(5).to_dict(orient="list")}
        print(f"  {arm}: {json.dumps(summary['arms'][arm]['mean'])}")
    decay = store.decay()
    summary["alerts"] = [vars(a) for a in store.alerts()]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    paths = plot(per_day, decay, args.out) if set(ARMS) <= set(per_day) else []
    (args.out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        for p in [*paths, args.out / "results.json"]:
            shutil.copy(p, args.docs / (p.name if p.suffix == ".png" else "sim_results.json"))
    print(f"done in {summary['seconds']} s; metrics in {db} "
          f"(`transact monitor dashboard --metrics-url sqlite:///{db}`)")


if __name__ == "__main__":
    main()
