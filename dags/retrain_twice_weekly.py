"""Retraining twice a week (Monday and Thursday, 03:00 UTC), as the paper's cadence.

validate_events -> build_training_set -> train_candidate -> gate -> passed? -> promote
-> notify_serving. Each task is a thin call into :mod:`training.pipeline`; settings come from
the ``config_path`` param (a PipelineConfig JSON/YAML file; empty = defaults) and the
``overrides`` param (dotted paths). A rejected candidate stops at ``passed`` (the champion is
untouched); a failed validation stops the run before training.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=30),
                "retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=10)}
PARAMS = {"config_path": Param("", type="string"),
          "overrides": Param({}, type="object")}


def _cfg() -> Any:
    from training.pipeline import load_pipeline_config

    params = get_current_context()["params"]
    return load_pipeline_config(params.get("config_path") or None, params.get("overrides"))


def _run_key() -> str:
    """The run's identity: the same for every retry of every task of one DAG run."""
    return get_current_context()["dag_run"].run_id.replace(":", "_").replace("+", "_")


@dag(dag_id="retrain_twice_weekly", schedule="0 3 * * 1,4",
     start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1,
     default_args=DEFAULT_ARGS, params=PARAMS, tags=["transact", "retraining"])
def retrain_twice_weekly() -> None:
    @task
    def validate_events() -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from training.pipeline import validate_events_step
        from transact.errors import CheckFailed

        try:
            return validate_events_step(_cfg())
        except CheckFailed as err:  # bad data does not heal on retry: fail the run now
            raise AirflowFailException(f"events failed validation: {err}") from err

    @task
    def build_training_set(_valid: dict[str, Any]) -> dict[str, Any]:
        from training.pipeline import build_training_set_step

        return build_training_set_step(_cfg(), _run_key())

    @task
    def train_candidate(_examples: dict[str, Any]) -> dict[str, Any]:
        from training.pipeline import train_candidate_step

        return train_candidate_step(_cfg(), _run_key())

    @task
    def gate(candidate: dict[str, Any]) -> dict[str, Any]:
        from training.pipeline import gate_step

        return gate_step(_cfg(), _run_key(), candidate["version"])

    @task.short_circuit
    def passed(decision: dict[str, Any]) -> bool:
        return bool(decision["promote"])

    @task
    def promote(decision: dict[str, Any]) -> dict[str, Any]:
        from training.pipeline import promote_step

        return promote_step(_cfg(), decision)

    @task
    def notify_serving(promoted: dict[str, Any]) -> dict[str, Any]:
        from training.pipeline import notify_serving_step

        return notify_serving_step(_cfg(), promoted)

    decision = gate(train_candidate(build_training_set(validate_events())))
    promoted = promote(decision)
    passed(decision) >> promoted
    notify_serving(promoted)


DAG = retrain_twice_weekly()
