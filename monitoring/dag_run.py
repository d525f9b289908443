"""Run one DAG with ``dag.test(logical_date=...)`` and print one JSON line (``DAG_RESULT
{...}``): the run's state and every task's state and return value.

    python -m monitoring.dag_run dags/retrain_twice_weekly.py 2026-11-16T03:00:00+00:00 \\
        '{"overrides": {...}}'

Run it in a process whose environment names the Airflow home (:func:`monitoring.endpoint.
airflow_env`): Airflow reads its settings at import. The logical date is the simulated time of
the run (the DAG's own ``data_interval`` and run id follow from it).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any


def run(dag_file: Path, logical_date: dt.datetime, run_conf: dict[str, Any],
        run_after: dt.datetime | None = None) -> dict[str, Any]:
    """``dag.test`` at ``logical_date``; ``run_after`` (default: the logical date) names the
    run (``manual__<run_after>``), so two runs at one logical date can be told apart."""
    spec = importlib.util.spec_from_file_location(dag_file.stem, dag_file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {dag_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = next(v for v in vars(module).values() if type(v).__name__ == "DAG")
    dag_run = dag.test(run_after=run_after or logical_date, logical_date=logical_date,
                       run_conf=run_conf)
    tasks: dict[str, Any] = {}
    for ti in dag_run.get_task_instances():
        try:
            value = ti.xcom_pull(task_ids=ti.task_id, key="return_value")
        except Exception:  # noqa: BLE001 - a task that did not run has no value
            value = None
        tasks[ti.task_id] = {"state": str(ti.state), "value": value}
    return {"state": str(dag_run.state), "run_id": str(dag_run.run_id),
            "logical_date": dag_run.logical_date.isoformat() if dag_run.logical_date else None,
            "tasks": tasks}


def main() -> None:
    dag_file, logical, conf = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    after = dt.datetime.fromisoformat(sys.argv[4]) if len(sys.argv) > 4 else None
    result = run(dag_file, dt.datetime.fromisoformat(logical), conf, after)
    print("DAG_RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
