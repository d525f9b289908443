"""Run one DAG with ``dag.test()`` (in a process whose AIRFLOW_HOME the test chose) and print
a JSON line: the run's state and every task's state and return value."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path


def main() -> None:
    dag_file, run_conf = Path(sys.argv[1]), json.loads(sys.argv[2])
    spec = importlib.util.spec_from_file_location(dag_file.stem, dag_file)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    dag = next(v for v in vars(module).values() if type(v).__name__ == "DAG")
    run = dag.test(run_conf=run_conf)
    tasks = {}
    for ti in run.get_task_instances():
        value = None
        try:
            value = ti.xcom_pull(task_ids=ti.task_id, key="return_value")
        except Exception:  # noqa: BLE001 - a task that did not run has no value
            value = None
        tasks[ti.task_id] = {"state": str(ti.state), "value": value}
    print("DAG_RESULT " + json.dumps({"state": str(run.state), "tasks": tasks}, default=str))


if __name__ == "__main__":
    main()
