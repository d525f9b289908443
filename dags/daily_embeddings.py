"""Daily batch embeddings: the PinnerFormer job, then materialisation into Feast.

pinnerformer_job -> materialize_embeddings, thin calls into :mod:`training.pipeline`;
settings from the ``config_path`` / ``overrides`` params like ``retrain_twice_weekly``. The job
embeds every day through the run's logical date (reusing its checkpoint) and rewrites those
days' files, so a rerun of a day is idempotent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=30),
                "retry_exponential_backoff": True, "max_retry_delay": timedelta(minutes=10)}


def _cfg() -> Any:
    from training.pipeline import load_pipeline_config

    params = get_current_context()["params"]
    return load_pipeline_config(params.get("config_path") or None, params.get("overrides"))


@dag(dag_id="daily_embeddings", schedule="30 0 * * *", start_date=datetime(2026, 1, 1),
     catchup=False, max_active_runs=1, default_args=DEFAULT_ARGS,
     params={"config_path": Param("", type="string"), "overrides": Param({}, type="object"),
             "last_day": Param("", type="string")},
     tags=["transact", "embeddings"])
def daily_embeddings() -> None:
    @task
    def pinnerformer_job() -> dict[str, Any]:
        from training.pipeline import pinnerformer_step

        last_day = get_current_context()["params"].get("last_day") or None
        return pinnerformer_step(_cfg(), last_day)

    @task
    def materialize_embeddings(_job: dict[str, Any]) -> dict[str, Any]:
        from training.pipeline import materialize_step

        return materialize_step(_cfg())

    materialize_embeddings(pinnerformer_job())


DAG = daily_embeddings()
