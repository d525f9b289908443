"""The online simulator through the real services: ``transact serve`` (Ray Serve on 127.0.0.1)
ranks, the simulated users' outcomes go back through ``POST /events`` → the durable stream →
the stream processor → the Feast online store that the next ``/rank`` reads, and the
``retrain_twice_weekly`` Airflow DAG runs in simulated time (``dag.test(logical_date=...)``)
and tells the running server to reload the new champion.

Pieces (each usable alone; :func:`bench/bench_monitoring.py --endpoint` wires them):

* :func:`prepare_dataset` — a private copy of the world's dataset (optionally a subset of its
  users) that the DAG reads and :func:`append_events` extends with the simulated days (each
  user's events stay in one part, as :mod:`transact.data.dataset` requires);
* :func:`seed_feature_store` — the embedded profile (Feast over SQLite + the SQLite event queue)
  seeded with the simulated users' history (replayed through the stream and the processor) and
  their daily batch embeddings;
* :class:`ServingProcess` — ``transact serve --config`` as a subprocess, with the serving log
  written by the server itself (``serving_log_dir``);
* :class:`StreamFeedback` — the simulator's ``feedback``: ``POST /events`` then the stream
  processor until idle;
* :class:`DagScheduler` — the simulator's ``scheduler``: on the DAG's weekdays, append the
  simulated events to the dataset and run the DAG at ``<day> 03:00 UTC`` in a subprocess with
  its own ``AIRFLOW_HOME``;
* :func:`endpoint_monitoring_inputs` — what monitoring reads afterwards: the *server's* serving
  log and the processor's offline log of the action stream.

Promotion times: the registry stamps alias moves with the wall clock; in simulated time the
promotion time of a version is the logical date of the DAG run that promoted it, which
:class:`DagScheduler` returns (``promoted_at_ms``) and also stores on the version as the tag
``sim.promoted_at_ms``; monitoring's decay-by-age uses those.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from transact.errors import UserError
from transact.schema import EVENT_SCHEMA, HOUR_MS

ROOT = Path(__file__).resolve().parents[1]
#: the retraining DAG's cron hour (``0 3 * * 1,4``)
DAG_HOUR_UTC = 3

__all__ = ["DagScheduler", "ServingProcess", "StreamFeedback", "airflow_env", "append_events",
           "endpoint_monitoring_inputs", "free_port", "prepare_dataset", "run_dag",
           "seed_feature_store"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


# ------------------------------------------------------------------------------ dataset
def prepare_dataset(src: Path, out: Path, keep_users: np.ndarray | None = None) -> Path:
    """Copy the dataset ``src`` (``meta.json``, ``items.parquet``, ``events/``) to ``out``;
    with ``keep_users`` only those users' events (a smaller world for a cheaper DAG)."""
    from transact.data.dataset import DatasetMeta, EventPartWriter, iter_event_parts

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(src / "items.parquet", out / "items.parquet")
    meta = DatasetMeta.read(src)
    writer = EventPartWriter(out)
    keep = None if keep_users is None else pa.array(np.asarray(keep_users, np.int64))
    for part in iter_event_parts(src):
        if keep is not None:
            import pyarrow.compute as pc

            part = part.filter(pc.is_in(part.column("user_id"), value_set=keep))
        if part.num_rows:
            writer.write(part)
    meta.n_events, meta.n_parts = writer.n_events, writer.n_parts
    meta.min_timestamp_ms, meta.max_timestamp_ms = int(writer.min_ts or 0), int(writer.max_ts or 0)
    if keep is not None:
        meta.n_users = int(len(keep))
    meta.write(out)
    return out


def append_events(dataset_dir: Path, events: pd.DataFrame) -> int:
    """Merge ``events`` (EVENT_SCHEMA columns) into ``dataset_dir``: each user's new events go
    into the part that already holds the user (a new part for new users), every touched part
    is rewritten sorted (temporary file, then rename), ``meta.json`` is updated. Returns the
    number of events added."""
    from transact.data.dataset import DatasetMeta, event_parts, read_parquet_checked

    if len(events) == 0:
        return 0
    new = pa.Table.from_pandas(events[list(EVENT_SCHEMA.names)], preserve_index=False
                               ).cast(EVENT_SCHEMA)
    new_users = new.column("user_id").to_numpy()
    placed = np.zeros(len(new_users), bool)
    parts = event_parts(dataset_dir)

    def rewrite(path: Path, table: pa.Table) -> None:
        table = table.sort_by([("user_id", "ascending"), ("timestamp_ms", "ascending"),
                               ("event_id", "ascending")])
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)

    for path in parts:
        old = read_parquet_checked(path, EVENT_SCHEMA)
        mine = np.isin(new_users, np.unique(old.column("user_id").to_numpy())) & ~placed
        if mine.any():
            rewrite(path, pa.concat_tables([old, new.filter(pa.array(mine))]))
            placed |= mine
    if not placed.all():
        rewrite(parts[-1].with_name(f"part-{len(parts):05d}.parquet"),
                new.filter(pa.array(~placed)))
    meta = DatasetMeta.read(dataset_dir)
    ts = new.column("timestamp_ms").to_numpy()
    meta.n_events += new.num_rows
    meta.n_parts = len(event_parts(dataset_dir))
    meta.max_timestamp_ms = max(meta.max_timestamp_ms, int(ts.max()))
    meta.write(dataset_dir)
    return int(new.num_rows)


# ------------------------------------------------------------------------ feature store
def seed_feature_store(root: Path, dataset_dir: Path, embeddings_dir: Path,
                       user_ids: np.ndarray, as_of_ms: int) -> dict[str, Any]:
    """A fresh embedded feature store at ``root``: the users' events of ``dataset_dir``
    replayed through the stream and the processor (their realtime sequences), and the daily
    batch embeddings of ``embeddings_dir`` materialised as of ``as_of_ms``."""
    import pyarrow.compute as pc

    from features.processor import ProcessorConfig, open_processor, open_stream
    from features.replay import replay_events
    from features.store import apply, load_profile, materialize_user_embeddings
    from transact.data.dataset import iter_event_parts

    shutil.rmtree(root, ignore_errors=True)
    profile = load_profile("embedded", root=root)
    apply(profile)
    keep = pa.array(np.asarray(user_ids, np.int64))
    events = pa.concat_tables(p.filter(pc.is_in(p.column("user_id"), value_set=keep))
                              for p in iter_event_parts(dataset_dir))
    published = replay_events(open_stream(profile), events)
    processor = open_processor(profile, ProcessorConfig(max_future_ms=None, block_ms=0))
    total = processor.run(until_idle=True)
    end = dt.datetime.fromtimestamp(as_of_ms / 1000, tz=dt.UTC)
    materialized = materialize_user_embeddings(profile, embeddings_dir, end=end)
    return {"root": str(root), "events_published": int(published),
            "engagements": int(total.engagements), "users": int(len(user_ids)),
            "materialized": json.loads(json.dumps(materialized, default=str))}


# ----------------------------------------------------------------------------- serving
@dataclass
class ServingProcess:
    """``transact serve --config <file>`` in a subprocess on a free loopback port (the real
    CLI, Ray and Serve on 127.0.0.1); the serving log is written by the server itself."""

    model_uri: str
    features_root: Path
    serving_log_dir: Path
    workdir: Path
    registry_root: Path | None = None
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240.0) -> dict[str, Any]:
        """Start the server and wait until ``/readyz`` answers 200 (returns its body)."""
        import yaml

        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = {"model_uri": self.model_uri, "profile": "embedded",
               "features_root": str(self.features_root), "host": "127.0.0.1",
               "port": self.port, "admin_token": self.admin_token,
               "serving_log_dir": str(self.serving_log_dir), "replica_threads": 1, **self.extra}
        cfg_path = self.workdir / "serve.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OMP_WAIT_POLICY": "PASSIVE", "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": str(ROOT)}
        if self.registry_root is not None:
            env["TRANSACT_REGISTRY_ROOT"] = str(Path(self.registry_root).resolve())
        log = (self.workdir / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "transact"), "serve", "--config", str(cfg_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(f"transact serve exited with {self.proc.returncode}; see "
                                f"{self.workdir / 'serve.log'}")
            try:
                return self.readyz()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1.0)
        self.stop()
        raise UserError(f"transact serve was not ready in {timeout_s:.0f} s; see "
                        f"{self.workdir / 'serve.log'}")

    def readyz(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/readyz", timeout=10) as resp:  # noqa: S310
            return dict(json.loads(resp.read()))

    def model_version(self) -> str:
        return str(self.readyz()["model_version"])

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM to the server (it shuts Serve and Ray down), then wait."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> ServingProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------ stream
@dataclass
class StreamFeedback:
    """The simulator's ``feedback``: post a round's outcomes (every impression, skips
    included, with the server's request ids) to ``POST /events``, then run the stream
    processor until the stream is drained, so the next ``/rank`` reads the new sequences."""

    ranker: Any
    features_root: Path
    posted: int = 0
    engagements: int = 0
    processor: Any = None

    def __call__(self, events: pd.DataFrame) -> None:
        from features.processor import ProcessorConfig, open_processor
        from features.store import load_profile

        self.posted += self.ranker.send_events(events)
        if self.processor is None:
            profile = load_profile("embedded", root=self.features_root)
            self.processor = open_processor(profile, ProcessorConfig(max_future_ms=None,
                                                                     block_ms=0))
        total = self.processor.run(until_idle=True)
        self.engagements += int(total.engagements)


# ------------------------------------------------------------------------------ airflow
def airflow_env(home: Path) -> dict[str, str]:
    """Environment of an Airflow with its own ``AIRFLOW_HOME`` (SQLite metadata database, the
    repository's ``dags/``, no examples, no telemetry, loopback); migrates the database once."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AIRFLOW_HOME": str(home.resolve()),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home.resolve() / 'airflow.db'}",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__ANALYTICS_ENABLED": "False",
           "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
           "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_HOST": "127.0.0.1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if not (home / "airflow.db").exists():
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                       env=env, check=True, capture_output=True, timeout=600)
    return env


def run_dag(env: dict[str, str], dag_file: str, logical_ms: int, overrides: dict[str, Any],
            log_path: Path | None = None, timeout_s: float = 1200.0,
            run_after_offset_ms: int = 0) -> dict[str, Any]:
    """One ``dag.test(logical_date=...)`` run of ``dags/<dag_file>`` in a subprocess
    (:mod:`monitoring.dag_run`); returns ``{"state", "run_id", "logical_date", "tasks": {id:
    {state, value}}, "seconds"}``. ``run_after_offset_ms`` shifts the run's trigger time (and
    so its run id, which the DAG uses as its idempotency key) off the logical date: runs of
    different experiment arms at one logical date must not reuse each other's candidate."""
    started = time.perf_counter()

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()

    proc = subprocess.run(
        [sys.executable, "-m", "monitoring.dag_run", str(ROOT / "dags" / dag_file),
         iso(logical_ms), json.dumps({"overrides": overrides}),
         iso(logical_ms + run_after_offset_ms)],
        env=env, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DAG_RESULT ")]
    if not lines:
        raise RuntimeError(f"the DAG run printed no result (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    result = dict(json.loads(lines[-1].removeprefix("DAG_RESULT ")))
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


@dataclass
class DagScheduler:
    """The simulator's ``scheduler``: on ``weekdays`` (0 = Monday; the DAG's cron ``0 3 * *
    1,4``) append the simulated events not yet in the dataset, then run
    ``retrain_twice_weekly`` at ``<day> 03:00 UTC`` with ``overrides`` (which point it at the
    dataset, registry and the server's ``/admin/reload``). A promoted version's simulated
    promotion time is the run's logical date; the server is then checked to answer with it.
    ``runs`` keeps one record per DAG run."""

    env: dict[str, str]
    dataset_dir: Path
    overrides: dict[str, Any]
    start_date: dt.date
    server: ServingProcess | None = None
    weekdays: tuple[int, ...] = (0, 3)
    log_dir: Path | None = None
    progress: Callable[[str], None] | None = None
    #: see :func:`run_dag` (one value per experiment arm sharing a registry)
    run_after_offset_ms: int = 0
    appended_rows: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, day: int, day_ms: int, events: pd.DataFrame) -> dict[str, Any] | None:
        date = self.start_date + dt.timedelta(days=day)
        if date.weekday() not in self.weekdays:
            return None
        fresh = events.iloc[self.appended_rows:]
        append_events(self.dataset_dir, fresh)
        self.appended_rows = len(events)
        logical_ms = day_ms + DAG_HOUR_UTC * HOUR_MS
        _say(self.progress, f"  {date} 03:00: retrain_twice_weekly (+{len(fresh)} simulated "
                            f"events in the dataset) ...")
        record = self.run(logical_ms, f"{date}")
        _say(self.progress, f"  {date}: DAG {record['state']}, candidate "
                            f"{record['candidate_version']}, gate "
                            f"{record['gate']}, {record['seconds']} s; serving "
                            f"{record.get('serving_version')}")
        return record

    def run(self, logical_ms: int, label: str) -> dict[str, Any]:
        """One DAG run at ``logical_ms``; the record of it (also appended to ``runs``)."""
        from transact.registry import ModelRegistry, RegistryConfig

        result = run_dag(self.env, "retrain_twice_weekly.py", logical_ms, self.overrides,
                         None if self.log_dir is None
                         else self.log_dir / f"retrain_{label}.log",
                         run_after_offset_ms=self.run_after_offset_ms)
        tasks = result["tasks"]
        gate = (tasks.get("gate") or {}).get("value") or {}
        candidate = ((tasks.get("train_candidate") or {}).get("value") or {}).get("version")
        promoted = ((tasks.get("promote") or {}).get("value") or {}).get("champion")
        record: dict[str, Any] = {
            "logical_date": result.get("logical_date"), "run_id": result.get("run_id"),
            "state": result["state"], "candidate_version": candidate,
            "gate": ("promoted" if gate.get("promote") else "rejected") if gate else "not run",
            "gate_reason": gate.get("reason"), "champion_before": gate.get("champion_before"),
            "seconds": result["seconds"],
            "task_states": {t: v["state"] for t, v in tasks.items()},
            "notify_serving": (tasks.get("notify_serving") or {}).get("value")}
        if gate.get("promote") and promoted:
            record["promoted_version"] = str(promoted)
            record["promoted_at_ms"] = int(logical_ms)
            root = self.overrides.get("retrain.registry.root")
            if root:
                ModelRegistry(RegistryConfig(root=str(root))).set_version_tags(
                    str(promoted), {"sim.promoted_at_ms": str(int(logical_ms))})
        if self.server is not None:
            record["serving_version"] = self._serving_version(record.get("promoted_version"))
        self.runs.append(record)
        return record

    def _serving_version(self, expected: str | None, timeout_s: float = 120.0) -> str:
        """The server's model version (``/readyz``), polled until it is ``expected`` or
        ``timeout_s`` passes: ``notify_serving``'s ``/admin/reload`` has switched the model
        when it returns, the poll only guards against a slow replica."""
        assert self.server is not None
        deadline = time.monotonic() + timeout_s
        version = self.server.model_version()
        while expected is not None and version != expected and time.monotonic() < deadline:
            time.sleep(1.0)
            version = self.server.model_version()
        return version


# --------------------------------------------------------------------------- monitoring
def endpoint_monitoring_inputs(serving_log_dir: Path, features_root: Path, since_ms: int
                               ) -> tuple[pa.Table, pd.DataFrame]:
    """What monitoring reads after an endpoint run: the server's own serving log
    (:class:`~monitoring.logs.ParquetServingLog`) and the action stream as the processor
    committed it (its offline log), from ``since_ms`` on (the seeded history is older)."""
    from features.processor import OfflineLog
    from features.store import load_profile
    from monitoring.logs import ParquetServingLog

    shown = ParquetServingLog(serving_log_dir).read()
    profile = load_profile("embedded", root=features_root)
    events = OfflineLog(profile.offline_log_dir).read().to_pandas()
    events = events[events["timestamp_ms"] >= since_ms].reset_index(drop=True)
    return shown, events

