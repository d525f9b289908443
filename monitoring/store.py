"""The store of computed monitoring metrics and alerts: SQLite (embedded) or PostgreSQL
(production), same tables, same code (DB-API; ``?`` placeholders rewritten for psycopg).

Tables::

    window_metrics (window_start_ms, window_ms, model_version, metric, value, computed_at_ms)
        primary key (window_start_ms, model_version, metric)   -- a recompute replaces
    decay_metrics  (model_version, age_days, metric, value, computed_at_ms)
        primary key (model_version, age_days, metric)
    alerts         (alert_id, created_at_ms, kind, model_version, window_start_ms, metric,
                    value, reference, threshold, message)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Alert", "MetricStore"]


@dataclass
class Alert:
    """One alert: ``metric`` of ``model_version`` in the window starting ``window_start_ms``
    is ``value`` against ``reference`` (the drop or rise beyond ``threshold``)."""

    kind: str
    model_version: str
    window_start_ms: int
    metric: str
    value: float
    reference: float
    threshold: float
    message: str
    created_at_ms: int = 0
    alert_id: int | None = None


_ALERT_COLUMNS = ("created_at_ms", "kind", "model_version", "window_start_ms", "metric", "value",
                  "reference", "threshold", "message")


class MetricStore:
    """Metrics and alerts in ``url`` (``sqlite:///path.db`` or ``postgresql://...``; the
    PostgreSQL tables live in ``schema``)."""

    def __init__(self, url: str, schema: str = "monitoring") -> None:
        self.url = url
        self.schema = schema
        self.postgres = url.startswith("postgresql://")
        if not self.postgres:
            if not url.startswith("sqlite:///"):
                raise ValueError(f"unsupported metrics url {url!r}")
            self.path = Path(url[len("sqlite:///"):])
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.create()

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        if self.postgres:
            import psycopg

            with psycopg.connect(self.url) as conn:
                conn.execute(f'SET search_path TO "{self.schema}"')
                yield conn
        else:
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                with conn:
                    yield conn
            finally:
                conn.close()

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.postgres else text

    def _execute(self, conn: Any, text: str, params: Iterable[Any] = ()) -> Any:
        return conn.execute(self._sql(text), tuple(params))

    def create(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        if self.postgres:
            import psycopg

            with psycopg.connect(self.url) as conn:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        with self._connect() as conn:
            self._execute(conn, """CREATE TABLE IF NOT EXISTS window_metrics (
                window_start_ms BIGINT NOT NULL, window_ms BIGINT NOT NULL,
                model_version TEXT NOT NULL, metric TEXT NOT NULL,
                value DOUBLE PRECISION, computed_at_ms BIGINT NOT NULL,
                PRIMARY KEY (window_start_ms, model_version, metric))""")
            self._execute(conn, """CREATE TABLE IF NOT EXISTS decay_metrics (
                model_version TEXT NOT NULL, age_days DOUBLE PRECISION NOT NULL,
                metric TEXT NOT NULL, value DOUBLE PRECISION, computed_at_ms BIGINT NOT NULL,
                PRIMARY KEY (model_version, age_days, metric))""")
            self._execute(conn, f"""CREATE TABLE IF NOT EXISTS alerts (
                alert_id {serial}, created_at_ms BIGINT NOT NULL, kind TEXT NOT NULL,
                model_version TEXT NOT NULL, window_start_ms BIGINT NOT NULL,
                metric TEXT NOT NULL, value DOUBLE PRECISION, reference DOUBLE PRECISION,
                threshold DOUBLE PRECISION, message TEXT NOT NULL)""")

    @staticmethod
    def _value(v: Any) -> float | None:
        f = float(v)
        return None if not np.isfinite(f) else f

    def write_windows(self, frame: pd.DataFrame, window_ms: int) -> int:
        """Upsert every numeric column of ``frame`` (keyed by ``window_start_ms``,
        ``model_version``) as one metric row each; returns the rows written."""
        now = int(time.time() * 1000)
        metrics = [c for c in frame.columns if c not in ("window_start_ms", "model_version")]
        rows = [(int(r.window_start_ms), int(window_ms), str(r.model_version), m,
                 self._value(getattr(r, m)), now)
                for r in frame.itertuples(index=False) for m in metrics]
        with self._connect() as conn:
            for row in rows:
                self._execute(conn, """INSERT INTO window_metrics VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (window_start_ms, model_version, metric) DO UPDATE SET
                    value = excluded.value, window_ms = excluded.window_ms,
                    computed_at_ms = excluded.computed_at_ms""", row)
        return len(rows)

    def write_decay(self, frame: pd.DataFrame) -> int:
        """Upsert a :func:`monitoring.metrics.decay_curve` frame."""
        now = int(time.time() * 1000)
        metrics = [c for c in frame.columns if c not in ("model_version", "age_days")]
        rows = [(str(r.model_version), float(r.age_days), m, self._value(getattr(r, m)), now)
                for r in frame.itertuples(index=False) for m in metrics]
        with self._connect() as conn:
            for row in rows:
                self._execute(conn, """INSERT INTO decay_metrics VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (model_version, age_days, metric) DO UPDATE SET
                    value = excluded.value, computed_at_ms = excluded.computed_at_ms""", row)
        return len(rows)

    def windows(self, metrics: Iterable[str] | None = None) -> pd.DataFrame:
        """Wide frame: one row per (``window_start_ms``, ``model_version``), one column per
        metric (all, or ``metrics``), sorted by window."""
        with self._connect() as conn:
            got = self._execute(conn, "SELECT window_start_ms, model_version, metric, value "
                                      "FROM window_metrics").fetchall()
        long = pd.DataFrame(got, columns=["window_start_ms", "model_version", "metric", "value"])
        if metrics is not None:
            long = long[long["metric"].isin(list(metrics))]
        if len(long) == 0:
            return pd.DataFrame(columns=["window_start_ms", "model_version"])
        wide = long.pivot(index=["window_start_ms", "model_version"], columns="metric",
                          values="value").reset_index()
        wide.columns.name = None
        return wide.sort_values(["window_start_ms", "model_version"]).reset_index(drop=True)

    def decay(self) -> pd.DataFrame:
        """Wide decay frame: one row per (``model_version``, ``age_days``)."""
        with self._connect() as conn:
            got = self._execute(conn, "SELECT model_version, age_days, metric, value "
                                      "FROM decay_metrics").fetchall()
        long = pd.DataFrame(got, columns=["model_version", "age_days", "metric", "value"])
        if len(long) == 0:
            return pd.DataFrame(columns=["model_version", "age_days"])
        wide = long.pivot(index=["model_version", "age_days"], columns="metric",
                          values="value").reset_index()
        wide.columns.name = None
        return wide.sort_values(["model_version", "age_days"]).reset_index(drop=True)

    def add_alerts(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Insert ``alerts`` (stamping ``created_at_ms`` when 0), skipping one already stored
        for the same (kind, version, window, metric); returns the ones inserted."""
        added = []
        with self._connect() as conn:
            for alert in alerts:
                exists = self._execute(conn, "SELECT 1 FROM alerts WHERE kind = ? AND "
                                             "model_version = ? AND window_start_ms = ? AND "
                                             "metric = ?",
                                       (alert.kind, alert.model_version, alert.window_start_ms,
                                        alert.metric)).fetchone()
                if exists:
                    continue
                alert.created_at_ms = alert.created_at_ms or int(time.time() * 1000)
                self._execute(conn, f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)}) VALUES "
                                    f"({', '.join('?' * len(_ALERT_COLUMNS))})",
                              [getattr(alert, c) for c in _ALERT_COLUMNS])
                added.append(alert)
        return added

    def alerts(self, limit: int = 200) -> list[Alert]:
        """Newest first."""
        with self._connect() as conn:
            got = self._execute(conn, f"SELECT alert_id, {', '.join(_ALERT_COLUMNS)} FROM "
                                      f"alerts ORDER BY created_at_ms DESC, alert_id DESC "
                                      f"LIMIT ?", (limit,)).fetchall()
        return [Alert(alert_id=int(r[0]), **dict(zip(_ALERT_COLUMNS, r[1:], strict=True)))
                for r in got]
