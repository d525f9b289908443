"""The demo's monitoring step: a short online simulation of the served model on the demo's
world, the metrics and alerts computed into the embedded store, and where the dashboard is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def run_monitoring_demo(artifact_dir: Path | str, dataset_dir: Path | str,
                        workdir: Path | str, n_users: int = 60, n_days: int = 3,
                        seed: int = 0) -> dict[str, Any]:
    """Simulate ``n_users`` users for ``n_days`` days against the model at ``artifact_dir``
    (in-process engine), write the serving log, compute the monitoring metrics into
    ``workdir/metrics.db``; returns the headline figures and the dashboard command."""
    from monitoring.config import MonitoringConfig
    from monitoring.logs import ParquetServingLog
    from monitoring.pipeline import ItemCatalogue, run_monitoring
    from monitoring.simulator import EngineRanker, SimulatorConfig, read_world_examples, simulate
    from serving.engine import EngineConfig
    from serving.model_source import load_served_model
    from transact.data.synthetic_world import SyntheticWorld, WorldConfig

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    served = load_served_model(str(artifact_dir), engine_cfg=EngineConfig(threads=1))
    meta = json.loads((Path(dataset_dir) / "meta.json").read_text())
    world_cfg = WorldConfig.from_dict(meta["params"])
    world = SyntheticWorld(world_cfg)
    examples = read_world_examples(served.artifact.metadata["examples_dir"])
    sim_cfg = SimulatorConfig(n_users=n_users, n_days=n_days, requests_per_day=2,
                              n_candidates=50, seed=seed)
    result = simulate(sim_cfg, world, EngineRanker(served.engine, served.version), examples,
                      served.known_items, world_cfg.start_ms)
    log = ParquetServingLog(workdir / "serving_log")
    log.append(result.shown)
    cfg = MonitoringConfig(serving_log_dir=str(workdir / "serving_log"),
                           metrics_url=f"sqlite:///{(workdir / 'metrics.db').resolve()}")
    report = run_monitoring(cfg, log.read(), result.events,
                            ItemCatalogue(world.content_emb, world.item_topic),
                            result.promoted_at_ms, origin_ms=world_cfg.start_ms)
    return {"headline": report.headline, "metrics_url": cfg.metrics_url,
            "impressions": int(result.shown.num_rows),
            "simulated_seconds": round(result.seconds, 1),
            "dashboard_command": f"transact monitor dashboard --metrics-url {cfg.metrics_url}",
            "dashboard_url": f"http://{cfg.dashboard_host}:{cfg.dashboard_port}/",
            "mean_utility": float(np.mean(result.shown.column("utility").to_numpy()))}
