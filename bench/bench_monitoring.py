"""Online-simulator experiments of docs/monitoring.md: engagement decay without retraining vs
twice-weekly retraining, diversity with and without the time-window mask, realtime + batch vs
batch only. Every arm runs the same simulated users, days, candidates and seeds.

    .venv/bin/python bench/bench_monitoring.py --dataset artifacts/demo/synthetic \
        --examples artifacts/demo/examples_synthetic --out artifacts/monitoring_sim

(the demo's world and examples: `make demo` first). With `--endpoint` the arms `no_retrain`
and `dag_retrain` run through the real services instead: `transact serve` (serving log written
by the server), `POST /events` → stream processor → online store, and the
`retrain_twice_weekly` Airflow DAG in simulated time (`monitoring/endpoint.py`):

    .venv/bin/python bench/bench_monitoring.py --endpoint --dataset artifacts/demo/synthetic \
        --embeddings artifacts/demo/pinnerformer --out artifacts/monitoring_endpoint/run \
        --docs docs/monitoring --users 50 --days 8 --candidates 50
 Models are trained here with one budget
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
from typing import Any

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



def arm_rates(d: pd.DataFrame) -> dict[str, Any]:
    """An arm's per-day metrics ``d`` (one row per simulated day) summarised: impressions,
    impression-weighted means, the first and last two days' engagement and hide rates, and
    the daily figures."""
    return {
        "impressions": int(d["impressions"].sum()),
        "mean": {c: round(float((d[c] * d["impressions"]).sum() / d["impressions"].sum()), 5)
                 for c in d.columns if c not in ("day", "impressions")},
        "first_days": {c: round(float(d[c].iloc[:2].mean()), 5)
                       for c in ("engagement_rate", "hide_rate")},
        "last_days": {c: round(float(d[c].iloc[-2:].mean()), 5)
                      for c in ("engagement_rate", "hide_rate")},
        "daily": d.round(5).to_dict(orient="list")}

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


# ------------------------------------------------------------------------ --endpoint mode
ENDPOINT_ARMS = ("no_retrain", "dag_retrain")
#: optional arm: the DAG with a gate on click and save only (hide's tolerance opened)
EXTRA_ENDPOINT_ARMS = ("dag_retrain_no_hide_gate", "dag_retrain_open_gate", "no_mask",
                       "batch_only")
#: arms served by their own first model (no retraining): the bootstrap DAG run's overrides
#: that make it (TransAct without the time-window mask; the no-sequence model)
ARM_MODELS: dict[str, dict[str, object]] = {
    "no_mask": {"retrain.train.model.ranker.encoder.time_window_mask": False},
    "batch_only": {"retrain.train.model.ranker.encoder.kind": "none"}}
#: per arm: overrides of the DAG's PipelineConfig on top of the common ones
ARM_OVERRIDES: dict[str, dict[str, object]] = {
    "dag_retrain_no_hide_gate": {"retrain.gate.hide_tolerance": 1e18},
    # every candidate promoted: what the DAG's retraining does to engagement without a gate
    "dag_retrain_open_gate": {"retrain.gate.margin": -2.0,
                              "retrain.gate.hide_tolerance": 1e18}}


ARMS_ORDER = ENDPOINT_ARMS + EXTRA_ENDPOINT_ARMS


def placeholder_examples(user_ids: np.ndarray, t_ms: int) -> object:
    """One empty example row per simulated user: in endpoint mode the server reads the users'
    sequences and batch embeddings from its online store, the simulator's copy is unused."""
    from transact.model.features import ExampleArrays
    from transact.schema import HEADS, SEQ_LEN, USER_EMB_DIM

    n = len(user_ids)
    z = np.zeros((n, SEQ_LEN), np.int64)
    return ExampleArrays(
        request_id=np.arange(n, dtype=np.int64), user_id=np.asarray(user_ids, np.int64),
        item_id=np.ones(n, np.int64), request_time_ms=np.full(n, t_ms, np.int64),
        surface_id=np.ones(n, np.int64), labels=np.zeros((n, len(HEADS)), np.float32),
        seq_item_ids=z, seq_action_types=z.copy(), seq_timestamps_ms=z.copy(),
        user_batch_emb=np.zeros((n, USER_EMB_DIM), np.float32),
        user_weight=np.ones(n, np.float32))


def choose_users(dataset: Path, n_sim: int, n_dag: int, seed: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """``(simulated users, users kept in the DAG's dataset)``: the ``n_sim`` users active most
    recently, and those plus a seeded sample of the others up to ``n_dag``."""
    from transact.data.dataset import iter_event_parts

    last: dict[int, int] = {}
    for part in iter_event_parts(dataset):
        frame = part.select(["user_id", "timestamp_ms"]).to_pandas()
        for user, ts in frame.groupby("user_id")["timestamp_ms"].max().items():
            last[int(user)] = max(int(ts), last.get(int(user), 0))
    order = sorted(last, key=lambda u: (-last[u], u))
    sim = np.sort(np.array(order[:n_sim], np.int64))
    rest = np.array(order[n_sim:], np.int64)
    rng = np.random.default_rng(seed)
    extra = rng.choice(rest, size=max(0, min(len(rest), n_dag - n_sim)), replace=False)
    return sim, np.sort(np.concatenate([sim, extra]))


def run_endpoint(args: argparse.Namespace) -> None:
    """The arms through the real services: `transact serve` + /events + stream processor, and
    the retraining DAG in simulated time (see docs/monitoring.md)."""
    import datetime as dt

    from monitoring.endpoint import (
        DAG_HOUR_UTC,
        DagScheduler,
        ServingProcess,
        StreamFeedback,
        airflow_env,
        endpoint_monitoring_inputs,
        prepare_dataset,
        seed_feature_store,
    )
    from monitoring.simulator import HttpRanker
    from transact.data.synthetic_world import SyntheticWorld, WorldConfig
    from transact.schema import HOUR_MS

    started = time.perf_counter()
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    meta = json.loads((args.dataset / "meta.json").read_text())
    world_cfg = WorldConfig.from_dict(meta["params"])
    world = SyntheticWorld(world_cfg)
    first_day = world_cfg.n_days
    sim_start_ms = world_cfg.start_ms + first_day * DAY_MS
    start_date = dt.date.fromisoformat(str(world_cfg.start_date))
    sim_users, dag_users = choose_users(args.dataset, args.users, args.dag_users, args.seed)
    log(f"{len(sim_users)} simulated users; the DAG's dataset keeps {len(dag_users)} users")
    base = prepare_dataset(args.dataset, out / "dataset_base", dag_users)
    embeddings = out / "pinnerformer"
    shutil.copytree(args.embeddings, embeddings)
    registry = out / "registry"
    overrides: dict[str, object] = {
        "work_dir": str(out / "pipeline"), "embeddings_dir": str(embeddings),
        "feature_root": str(out / "pipeline_features"),
        "retrain.registry.root": str(registry),
        "retrain.train.max_train_examples": args.dag_train_rows,
        "retrain.train.max_steps": args.dag_steps,
        "retrain.train.max_eval_requests": 1_000,
        "retrain.max_gate_requests": args.gate_requests}
    env = airflow_env(out / "airflow")
    catalogue = ItemCatalogue(world.content_emb, world.item_topic)
    known = np.zeros(len(world.item_topic), bool)
    known[1:] = True
    db = out / "metrics.db"
    mon_cfg = MonitoringConfig(metrics_url=f"sqlite:///{db}")
    mon_cfg.alerts.min_impressions = 500
    store = MetricStore(mon_cfg.metrics_url)

    # the first champion: a (manual) run of the retraining DAG on the world's data, at the
    # start of the simulation; the gate compares it with a random ranking
    boot_dataset = out / "dataset_boot"
    shutil.copytree(base, boot_dataset)
    boot = DagScheduler(env, boot_dataset, {**overrides, "dataset_dir": str(boot_dataset)},
                        start_date, log_dir=out / "dag_logs", progress=log)
    log("bootstrap: retrain_twice_weekly on the world's data ...")
    boot_record = boot.run(sim_start_ms + DAG_HOUR_UTC * HOUR_MS, "bootstrap")
    log(f"bootstrap: {boot_record['state']}, version {boot_record['candidate_version']}, "
        f"gate {boot_record['gate']} ({boot_record['gate_reason']}), "
        f"{boot_record['seconds']} s")
    if boot_record["state"] != "success" or not boot_record["candidate_version"]:
        raise SystemExit(f"the bootstrap DAG run failed: {boot_record}")
    if boot_record["gate"] != "promoted":
        # the simulation needs a first champion: promote the bootstrap candidate by hand (as
        # `transact registry promote` would) and say so; the scheduled runs keep the real gate
        from transact.registry import ModelRegistry, RegistryConfig

        version = str(boot_record["candidate_version"])
        reg = ModelRegistry(RegistryConfig(root=str(registry)))
        reg.promote(version, f"bootstrap of the endpoint simulation; the gate said: "
                             f"{boot_record['gate_reason']}")
        reg.set_version_tags(version, {"stage": "champion",
                                       "sim.promoted_at_ms": str(sim_start_ms)})
        boot_record.update(promoted_version=version, promoted_at_ms=sim_start_ms,
                           promoted_by_hand=True)
        log(f"bootstrap: version {version} promoted by hand (the gate rejected it)")
    summary: dict[str, object] = {
        "mode": "endpoint", "args": {k: str(v) for k, v in vars(args).items()},
        "simulated_users": sim_users.tolist(), "dag_dataset_users": int(len(dag_users)),
        "bootstrap": boot_record, "arms": {}}
    per_day: dict[str, pd.DataFrame] = {}
    arm_models: dict[str, dict[str, object]] = {}
    for k, arm in enumerate(a for a in args.arms.split(",") if a in ARM_MODELS):
        # each its own DAG run (a minute later: another run id) on the same data; served by
        # version, whatever the gate said (the champion is reset below)
        boot_dataset_arm = out / f"dataset_boot_{arm}"
        shutil.copytree(base, boot_dataset_arm)
        runner = DagScheduler(env, boot_dataset_arm,
                              {**overrides, **ARM_MODELS[arm],
                               "dataset_dir": str(boot_dataset_arm)},
                              start_date, log_dir=out / "dag_logs", progress=log)
        record = runner.run(sim_start_ms + DAG_HOUR_UTC * HOUR_MS + (k + 1) * 60_000,
                            f"bootstrap_{arm}")
        log(f"bootstrap of {arm}: {record['state']}, version {record['candidate_version']}, "
            f"gate vs the champion: {record['gate']}, {record['seconds']} s")
        if record["state"] != "success" or not record["candidate_version"]:
            raise SystemExit(f"the bootstrap DAG run of {arm} failed: {record}")
        arm_models[arm] = record
    summary["arm_models"] = arm_models
    for arm in args.arms.split(","):
        if arm not in ENDPOINT_ARMS + EXTRA_ENDPOINT_ARMS:
            raise SystemExit(f"unknown endpoint arm {arm!r}; choose from "
                             f"{ENDPOINT_ARMS + EXTRA_ENDPOINT_ARMS}")
        _reset_champion(registry, str(boot_record["promoted_version"]), arm)
        t_arm = time.perf_counter()
        arm_dir = out / arm
        seeded = seed_feature_store(arm_dir / "features", base, embeddings, sim_users,
                                    sim_start_ms)
        log(f"arm {arm}: feature store seeded ({seeded['events_published']} events of the "
            f"simulated users replayed, {seeded['engagements']} engagements)")
        own = arm_models.get(arm)
        uri = ("models:/transact-ranker@champion" if own is None
               else f"models:/transact-ranker/{own['candidate_version']}")
        server = ServingProcess(model_uri=uri,
                                features_root=arm_dir / "features",
                                serving_log_dir=arm_dir / "serving_log",
                                workdir=arm_dir / "serve", registry_root=registry)
        ready = server.start()
        log(f"arm {arm}: transact serve at {server.url}, model {ready['model_version']}")
        scheduler = None
        try:
            ranker = HttpRanker(server.url, version=str(ready["model_version"]))
            feedback = StreamFeedback(ranker, arm_dir / "features")
            if arm.startswith("dag_retrain"):
                dataset = arm_dir / "dataset"
                shutil.copytree(base, dataset)
                scheduler = DagScheduler(
                    env, dataset, {**overrides, **ARM_OVERRIDES.get(arm, {}),
                                   "dataset_dir": str(dataset),
                                   "serving_url": server.url,
                                   "serving_admin_token": server.admin_token},
                    start_date, server=server, log_dir=out / "dag_logs", progress=log,
                    run_after_offset_ms=1_000 * (1 + list(ARMS_ORDER).index(arm)))
            sim_cfg = SimulatorConfig(n_users=len(sim_users), n_days=args.days,
                                      requests_per_day=args.requests_per_day,
                                      n_candidates=args.candidates, seed=args.seed)
            result = simulate(sim_cfg, world, ranker,
                              placeholder_examples(sim_users, sim_start_ms - DAY_MS), known,
                              world_cfg.start_ms, progress=log, feedback=feedback,
                              scheduler=scheduler, user_ids=sim_users)
        finally:
            server.stop()
        shown, events = endpoint_monitoring_inputs(arm_dir / "serving_log",
                                                   arm_dir / "features", sim_start_ms)
        shown = shown.to_pandas()
        shown["model_version"] = arm + ":" + shown["model_version"]
        # simulated promotion times: the bootstrap run's and each promoting DAG run's
        # logical date (the registry's own alias history is stamped with the wall clock)
        promoted = {f"{arm}:{boot_record['promoted_version']}": boot_record["promoted_at_ms"]}
        if own is not None:
            promoted = {f"{arm}:{own['candidate_version']}": sim_start_ms}
        for run in scheduler.runs if scheduler is not None else []:
            if run.get("promoted_version"):
                promoted[f"{arm}:{run['promoted_version']}"] = run["promoted_at_ms"]
        report = run_monitoring(mon_cfg, shown, events, catalogue, promoted, store,
                                origin_ms=world_cfg.start_ms)
        per_day[arm] = daily(report.windows, arm)
        d = per_day[arm]
        lengths = result.requests.sort_values("request_time_ms").groupby("user_id")[
            "sequence_length"]
        summary["arms"][arm] = {
            "seconds": round(time.perf_counter() - t_arm, 1),
            "simulation_seconds": round(result.seconds, 1),
            "requests": int(len(result.requests)), "events_posted": int(feedback.posted),
            "server_log_rows": int(len(shown)), "action_stream_rows": int(len(events)),
            "sequence_length_first_last_mean": [round(float(lengths.first().mean()), 2),
                                                round(float(lengths.last().mean()), 2)],
            "served_versions": sorted(set(shown["model_version"])),
            "dag_runs": scheduler.runs if scheduler is not None else [],
            "promoted_at_ms": promoted,
            **arm_rates(d)}
        log(f"arm {arm} done in {summary['arms'][arm]['seconds']} s: "
            f"{json.dumps(summary['arms'][arm]['mean'])}")
    decay = store.decay()
    summary["decay"] = decay.round(5).to_dict(orient="list")
    summary["alerts"] = [vars(a) for a in store.alerts()]
    summary["seconds"] = round(time.perf_counter() - started, 1)
    name = args.docs_name
    retrained = [a for a in per_day if a.startswith("dag_retrain")]
    paths = (plot_endpoint({a: d for a, d in per_day.items()
                            if a == "no_retrain" or a in retrained},
                           decay, summary, out, name)
             if "no_retrain" in per_day and retrained else [])
    if {"no_retrain", "no_mask", "batch_only"} & set(per_day) and len(per_day) > 1:
        paths.append(plot_endpoint_arms(per_day, out, name))
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy(p, args.docs / p.name)
        shutil.copy(out / "results.json", args.docs / f"{name}_results.json")
    log(f"done in {summary['seconds']} s; metrics in {db}")


def _reset_champion(registry: Path, version: str, arm: str) -> None:
    """Every arm starts from the bootstrap champion (an earlier arm's DAG runs may have moved
    the alias)."""
    from transact.registry import CHAMPION, ModelRegistry, RegistryConfig

    reg = ModelRegistry(RegistryConfig(root=str(registry)))
    if reg.get_alias(CHAMPION) != version:
        reg.set_alias(CHAMPION, version, f"endpoint simulation: arm {arm} starts from the "
                                         f"bootstrap champion")


def plot_endpoint_arms(per_day: dict[str, pd.DataFrame], out: Path, name: str) -> Path:
    """Engagement and diversity per day of every arm (mask vs no mask, realtime + batch vs
    batch only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["engagement_rate", "hide_rate", "intra_list_diversity", "topic_entropy",
             "catalogue_coverage", "rabbit_hole_similarity"]
    fig, axes = plt.subplots(1, len(names), figsize=(22, 3.8))
    for ax, metric in zip(axes, names, strict=True):
        for arm, d in per_day.items():
            if metric in d:
                ax.plot(d["day"] - d["day"].min(), d[metric], marker="o", label=arm)
        ax.set(title=metric, xlabel="simulated day")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{name}_arms.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_endpoint(per_day: dict[str, pd.DataFrame], decay: pd.DataFrame,
                  summary: dict[str, object], out: Path, name: str = "endpoint"
                  ) -> list[Path]:
    """Engagement per day with and without DAG retraining (promotions marked), and the decay
    curves per served version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    labels = {"no_retrain": "no retraining", "dag_retrain": "twice-weekly DAG",
              "dag_retrain_no_hide_gate": "twice-weekly DAG, gate on click+save",
              "dag_retrain_open_gate": "twice-weekly DAG, every candidate promoted"}
    for arm, d in per_day.items():
        x = d["day"] - d["day"].min()
        axes[0].plot(x, d["engagement_rate"], marker="o", label=labels.get(arm, arm))
        axes[1].plot(x, d["hide_rate"], marker="o", label=labels.get(arm, arm))
    first = min(int(d["day"].min()) for d in per_day.values())
    arms = summary["arms"]
    assert isinstance(arms, dict)
    runs = [(arm, run) for arm, a in arms.items() for run in a.get("dag_runs", [])]
    for arm, run in runs:
        x = (pd.Timestamp(run["logical_date"]).value // 10**6) / DAY_MS - first
        for ax in axes[:2]:
            ax.axvline(x + (0.05 if arm != "dag_retrain" else 0.0),
                       color="#2a2" if run.get("promoted_version") else "#c33", lw=0.8,
                       ls="--" if arm == "dag_retrain" else ":")
    axes[0].set(xlabel="simulated day", ylabel="engagement per impression (click+save)",
                title="through the endpoint (dashed: DAG runs; green promoted, red rejected)")
    axes[1].set(xlabel="simulated day", ylabel="hides per impression", title="hide rate")
    axes[0].legend()
    for version, group in decay.groupby("model_version"):
        axes[2].plot(group["age_days"], group["engagement_rate_rel"], marker=".", label=version)
    axes[2].axhline(1.0, color="#999", lw=0.8)
    axes[2].set(xlabel="model age (simulated days since promotion)",
                ylabel="engagement / first day", title="decay per served version")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{name}_decay.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


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
    parser.add_argument("--endpoint", action="store_true",
                        help="run the arms through `transact serve` + /events + the stream "
                             "processor, retraining by the Airflow DAG in simulated time "
                             "(arms: no_retrain, dag_retrain)")
    parser.add_argument("--embeddings", type=Path, default=Path("artifacts/demo/pinnerformer"),
                        help="--endpoint: the daily PinnerFormer job's output (copied)")
    parser.add_argument("--dag-users", type=int, default=600,
                        help="--endpoint: users kept in the DAG's dataset (the simulated ones "
                             "plus a sample)")
    parser.add_argument("--dag-train-rows", type=int, default=40_000)
    parser.add_argument("--dag-steps", type=int, default=400)
    parser.add_argument("--gate-requests", type=int, default=5_000)
    parser.add_argument("--docs-name", default="endpoint",
                        help="--endpoint: prefix of the files copied to --docs")
    args = parser.parse_args()
    if args.endpoint:
        import torch

        torch.set_num_threads(1)
        if args.arms == ",".join(ARMS):
            args.arms = ",".join(ENDPOINT_ARMS)
        run_endpoint(args)
        return

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
            **arm_rates(d)}
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
