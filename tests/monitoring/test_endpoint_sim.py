"""The online simulator through the real services: ``transact serve`` (Ray Serve on 127.0.0.1,
serving log written by the server), ``POST /events`` → stream → processor → Feast online store,
monitoring from the server's log, and one ``retrain_twice_weekly`` DAG run in simulated time
that promotes a candidate and makes the running server reload it.

One tiny world for the module (120 users, 600 items, 9 days), a first champion registered and
promoted by the retraining library, one server for both tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from transact.schema import DAY_MS, SEQ_LEN, ActionType

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: a gate that lets every candidate through (the world is too small for the real gate to
#: decide; the gate itself is tested in tests/training and tests/dags)
OPEN_GATE = {"retrain.gate.margin": -2.0, "retrain.gate.hide_tolerance": 1e18,
             "retrain.gate.n_boot": 200}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import torch

    from monitoring.endpoint import ServingProcess, prepare_dataset, seed_feature_store
    from monitoring.simulator import HttpRanker, read_world_examples
    from training.pipeline import build_training_set_step, load_pipeline_config, pinnerformer_step
    from training.retrain import run_retraining
    from transact.data.synthetic import WorldConfig, generate_world
    from transact.data.synthetic_world import SyntheticWorld

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("endpoint_sim")
    world_cfg = WorldConfig(n_users=120, n_items=600, n_days=9, seed=3)
    generate_world(root / "world", world_cfg)
    overrides = {
        "dataset_dir": str(root / "dataset"), "work_dir": str(root / "work"),
        "embeddings_dir": str(root / "pinnerformer"),
        "pinnerformer": {"train_steps": 30, "history_len": 64, "window_days": 2,
                         "warmup_days": 2},
        "retrain.registry.root": str(root / "registry"),
        "retrain.train.max_train_examples": 4_000, "retrain.train.max_steps": 20,
        "retrain.train.eval_every_steps": 20, "retrain.train.max_eval_requests": 300,
        "retrain.max_gate_requests": 500, **OPEN_GATE}
    prepare_dataset(root / "world", root / "dataset")
    cfg = load_pipeline_config(None, overrides)
    pinnerformer_step(cfg)
    build_training_set_step(cfg, "bootstrap")
    first = run_retraining(dataclasses.replace(
        cfg.retrain, examples_dir=str(root / "work" / "examples" / "bootstrap"),
        work_dir=str(root / "work" / "retrain")), log=lambda *_: None)
    assert first.decision.promote
    examples = read_world_examples(root / "work" / "examples" / "bootstrap")
    newest = {int(u) for u in np.unique(examples.user_id[
        examples.request_time_ms >= examples.request_time_ms.max() - DAY_MS])}
    users = np.array(sorted(newest)[:4], np.int64)
    start_ms = world_cfg.start_ms + world_cfg.n_days * DAY_MS
    seeded = seed_feature_store(root / "features", root / "dataset", root / "pinnerformer",
                                users, start_ms)
    server = ServingProcess(model_uri="models:/transact-ranker@champion",
                            features_root=root / "features",
                            serving_log_dir=root / "serving_log", workdir=root / "serve",
                            registry_root=root / "registry")
    ready = server.start()
    try:
        yield {"root": root, "world": SyntheticWorld(world_cfg), "world_cfg": world_cfg,
               "examples": examples, "users": users, "start_ms": start_ms,
               "server": server, "ready": ready, "seeded": seeded, "overrides": overrides,
               "ranker": HttpRanker(server.url, version=str(ready["model_version"])),
               "first_version": first.version}
    finally:
        server.stop()


def test_simulation_through_the_endpoint(sim: dict[str, Any]) -> None:
    from monitoring.config import MonitoringConfig
    from monitoring.endpoint import StreamFeedback, endpoint_monitoring_inputs
    from monitoring.pipeline import ItemCatalogue, run_monitoring
    from monitoring.simulator import SimulatorConfig, simulate
    from monitoring.store import MetricStore

    assert sim["seeded"]["engagements"] > 0 and sim["ready"]["ready"]
    ranker, world = sim["ranker"], sim["world"]
    feedback = StreamFeedback(ranker, sim["root"] / "features")
    cfg = SimulatorConfig(n_days=2, requests_per_day=2, n_candidates=20, seed=1)
    result = simulate(cfg, world, ranker, sim["examples"], np.ones(len(world.item_topic), bool),
                      sim["world_cfg"].start_ms, feedback=feedback, user_ids=sim["users"])
    n_requests = len(sim["users"]) * 2 * 2
    assert len(result.requests) == n_requests and ranker.requests == n_requests
    assert feedback.posted == n_requests * cfg.slate_size  # skips included

    # the server's own serving log holds every shown slate, with the model version
    shown, events = endpoint_monitoring_inputs(sim["root"] / "serving_log",
                                               sim["root"] / "features", sim["start_ms"])
    log = shown.to_pandas().sort_values(["request_id", "position"]).reset_index(drop=True)
    mine = result.shown.to_pandas().sort_values(["request_id", "position"]
                                                ).reset_index(drop=True)
    assert len(log) == len(mine) == n_requests * cfg.slate_size
    for col in ("request_id", "user_id", "item_id", "position", "request_time_ms"):
        assert (log[col].to_numpy() == mine[col].to_numpy()).all(), col
    assert set(log["model_version"]) == {sim["ready"]["model_version"]}

    # the actions posted to /events are the next request's sequence (read by the server
    # from the online store the processor updated)
    engaged = result.events[result.events["action_type"].isin(
        [int(ActionType.CLICK), int(ActionType.SAVE), int(ActionType.HIDE)])]
    per_request = engaged.groupby("request_id").size()
    assert per_request.sum() > 0
    for _, reqs in result.requests.sort_values("request_time_ms").groupby("user_id"):
        lengths = reqs["sequence_length"].to_numpy()
        grown = [min(SEQ_LEN, lengths[k] + int(per_request.get(rid, 0)))
                 for k, rid in enumerate(reqs["request_id"].to_numpy()[:-1])]
        assert lengths[1:].tolist() == grown

    # monitoring from the server's log + the processor's log of the stream = what users did
    assert len(events) == feedback.posted
    mon = MonitoringConfig(metrics_url=f"sqlite:///{sim['root'] / 'metrics.db'}")
    catalogue = ItemCatalogue(world.content_emb, world.item_topic)
    report = run_monitoring(mon, shown, events, catalogue,
                            {sim["ready"]["model_version"]: sim["start_ms"]},
                            MetricStore(mon.metrics_url),
                            origin_ms=sim["world_cfg"].start_ms)
    windows = report.windows
    assert int(windows["impressions"].sum()) == len(mine)
    for name, code in (("click", ActionType.CLICK), ("save", ActionType.SAVE),
                       ("hide", ActionType.HIDE)):
        counted = float((windows[f"{name}_rate"] * windows["impressions"]).sum())
        assert round(counted) == int((result.events["action_type"] == int(code)).sum()), name
    sim["result"] = result


def test_dag_run_in_simulated_time_promotes_and_serving_reloads(sim: dict[str, Any]) -> None:
    from monitoring.endpoint import DagScheduler, airflow_env
    from monitoring.simulator import events_frame
    from transact.registry import CHAMPION, ModelRegistry, RegistryConfig

    # the events simulated by the test above (none when this test runs alone)
    events = sim["result"].events if "result" in sim else events_frame([])
    server = sim["server"]
    overrides = {**sim["overrides"], "serving_url": server.url,
                 "serving_admin_token": server.admin_token}
    scheduler = DagScheduler(airflow_env(sim["root"] / "airflow"), sim["root"] / "dataset",
                             overrides, dt.date.fromisoformat(sim["world_cfg"].start_date),
                             server=server, log_dir=sim["root"] / "dag_logs")
    day = sim["world_cfg"].n_days + 2  # the day after the simulation: 2026-11-12, a Thursday
    assert scheduler(day - 1, 0, events) is None  # a Wednesday: no run
    record = scheduler(day, sim["world_cfg"].start_ms + day * DAY_MS, events)
    assert record is not None, "Thursday is a retraining day"
    assert record["logical_date"] == "2026-11-12T03:00:00+00:00"
    assert "2026-11-12T03:00:00" in record["run_id"]
    assert record["state"] == "success", record
    assert record["gate"] == "promoted" and record["champion_before"] == sim["first_version"]
    new = record["candidate_version"]
    assert new != sim["first_version"]
    assert record["promoted_version"] == new and record["notify_serving"]["notified"]
    registry = ModelRegistry(RegistryConfig(root=sim["overrides"]["retrain.registry.root"]))
    assert registry.get_alias(CHAMPION) == new
    assert registry.version_tags(new)["sim.promoted_at_ms"] == str(
        sim["world_cfg"].start_ms + day * DAY_MS + 3 * 3_600_000)
    # the simulated events reached the training set the DAG built
    assert scheduler.appended_rows == len(events)
    # the running server answers with the promoted version
    assert record["serving_version"] == new
    body = json.dumps({"user_id": int(sim["users"][0]), "candidates": [1, 2, 3],
                       "request_time_ms": sim["start_ms"] + 3 * DAY_MS}).encode()
    req = urllib.request.Request(server.url + "/rank", data=body,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert json.loads(resp.read())["model_version"] == new
    assert Path(sim["root"] / "dag_logs").is_dir()
