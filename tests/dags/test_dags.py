"""Both Airflow DAGs end to end with ``dag.test()`` on the embedded profile.

One Airflow home (SQLite metadata database, ``airflow db migrate``) and one small synthetic
world for the module; each DAG run is a subprocess (Airflow reads its settings at import)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env,
                   check=True, capture_output=True, timeout=300)
    return env


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transact.data.synthetic import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("pipeline")
    generate_world(root / "world", WorldConfig(n_users=250, n_days=8, seed=3))
    overrides = {
        "dataset_dir": str(root / "world"), "work_dir": str(root / "work"),
        "embeddings_dir": str(root / "work" / "pinnerformer"),
        "feature_root": str(root / "work" / "features"),
        # embeddings from day 1 on: three days of training examples, enough for the first
        # model to beat a random ranking at the gate (one day is a coin flip)
        "pinnerformer": {"train_steps": 40, "history_len": 64, "window_days": 1,
                         "warmup_days": 1, "train_fraction": 0.2},
        "retrain.registry.root": str(root / "registry"),
        "retrain.train.max_train_examples": 20_000,
        "retrain.train.max_epochs": 2,
        # ~180 held-out requests with a hide: a hide head at chance cannot show it is within
        # 5 % of a random ranking; the test world is for the pipeline, not for hides
        "retrain.gate.hide_tolerance": 0.3,
        "retrain.train.max_eval_requests": 500,
        "retrain.max_gate_requests": 2_000,
    }
    return {"root": root, "overrides": overrides}


def run_dag(env: dict[str, str], dag: str, overrides: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "dags" / "run_dag.py"), str(ROOT / "dags" / dag),
         json.dumps({"overrides": overrides})],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAG_RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("DAG_RESULT "))


def states(result: dict[str, Any]) -> dict[str, str]:
    return {task: info["state"] for task, info in result["tasks"].items()}


def champion(pipeline: dict[str, Any]) -> str | None:
    from transact.registry import CHAMPION, ModelRegistry, RegistryConfig

    return ModelRegistry(RegistryConfig(root=pipeline["overrides"]["retrain.registry.root"])
                         ).get_alias(CHAMPION)


def test_daily_embeddings_then_retraining(airflow_env: dict[str, str],
                                          pipeline: dict[str, Any]) -> None:
    daily = run_dag(airflow_env, "daily_embeddings.py", pipeline["overrides"])
    assert daily["state"] == "success", daily
    job = daily["tasks"]["pinnerformer_job"]["value"]
    assert job["rows"] > 0
    assert daily["tasks"]["materialize_embeddings"]["value"]["materialized"] == [
        "user_batch_embedding"]

    first = run_dag(airflow_env, "retrain_twice_weekly.py", pipeline["overrides"])
    assert first["state"] == "success", first
    assert set(states(first).values()) == {"success"}
    decision = first["tasks"]["gate"]["value"]
    assert decision["promote"] and decision["champion_before"] is None
    version = first["tasks"]["train_candidate"]["value"]["version"]
    assert champion(pipeline) == version

    # a candidate the gate rejects stops at the short circuit; the champion is untouched (a gate
    # that asks for +1000 % HIT@3 rejects a briefly trained candidate at little cost; that the
    # gate rejects a shuffled-label model is tests/training/test_retrain.py's)
    rejected = run_dag(airflow_env, "retrain_twice_weekly.py",
                       {**pipeline["overrides"], "retrain.gate.margin": 10.0,
                        "retrain.train.max_steps": 3})
    assert rejected["tasks"]["gate"]["value"]["promote"] is False
    assert states(rejected)["promote"] == "skipped"
    assert states(rejected)["notify_serving"] == "skipped"
    assert champion(pipeline) == version

    # events that fail validation stop the run before training
    bad = pipeline["root"] / "bad_world"
    shutil.copytree(pipeline["overrides"]["dataset_dir"], bad)
    part = sorted((bad / "events").glob("*.parquet"))[0]
    table = pq.read_table(part)
    actions = table.column("action_type").to_numpy().copy()
    actions[:50] = 9  # not an action type
    table = table.set_column(table.schema.get_field_index("action_type"), "action_type",
                             pa.array(actions, table.schema.field("action_type").type))
    pq.write_table(table, part)
    failed = run_dag(airflow_env, "retrain_twice_weekly.py",
                     {**pipeline["overrides"], "dataset_dir": str(bad)})
    assert failed["state"] == "failed"
    assert states(failed)["validate_events"] == "failed"
    assert states(failed)["train_candidate"] in ("upstream_failed", "None")
    assert champion(pipeline) == version
