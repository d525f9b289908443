"""Serving logs: what every ``/rank`` answer showed, written durably, joined with what users did.

One row per shown candidate (:data:`SERVING_LOG_SCHEMA`)::

    request_id  user_id  item_id  position  score_click  score_save  score_hide  utility
    model_version  request_time_ms  surface

``position`` is 0-based (0 = top of the slate). Two writers with the same interface:

* :class:`ParquetServingLog` (embedded): each :meth:`append` writes one Parquet file under a
  directory — to a temporary name, ``fsync``'d, then renamed and the directory ``fsync``'d —
  so a crash leaves either the whole batch or nothing (append-only, no partial rows).
* :class:`PostgresServingLog` (production): a ``serving_log`` table in PostgreSQL, one
  transaction per batch.

:func:`join_actions` attributes the action stream (events: ``user_id, item_id, action_type,
timestamp_ms``) to the shown rows: an action on ``(user, item)`` at time ``t`` belongs to the
latest showing of that item to that user at or before ``t``, if ``t`` is within
``attribution_window_ms`` of it. The joined table adds boolean ``clicked``, ``saved``,
``hidden`` (a save also counts as engaged; skips are the absence of all three).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from transact.schema import HEADS, HOUR_MS, ActionType

__all__ = ["SERVING_LOG_SCHEMA", "ParquetServingLog", "PostgresServingLog", "ServingLog",
           "ServingLogBuffer", "join_actions", "rows_from_rank_answer", "serving_log_table"]

SERVING_LOG_SCHEMA = pa.schema(
    [pa.field("request_id", pa.int64(), nullable=False),
     pa.field("user_id", pa.int64(), nullable=False),
     pa.field("item_id", pa.int64(), nullable=False),
     pa.field("position", pa.int32(), nullable=False)]
    + [pa.field(f"score_{h}", pa.float32(), nullable=False) for h in HEADS]
    + [pa.field("utility", pa.float32(), nullable=False),
       pa.field("model_version", pa.string(), nullable=False),
       pa.field("request_time_ms", pa.int64(), nullable=False),
       pa.field("surface", pa.string(), nullable=False)]
)

#: the join's added columns
ACTION_COLUMNS: tuple[str, ...] = ("clicked", "saved", "hidden")


def serving_log_table(columns: Mapping[str, Any]) -> pa.Table:
    """An Arrow table of :data:`SERVING_LOG_SCHEMA` from column arrays (all the same length)."""
    missing = [n for n in SERVING_LOG_SCHEMA.names if n not in columns]
    if missing:
        raise ValueError(f"serving log rows lack columns {missing}")
    return pa.table({n: pa.array(np.asarray(columns[n]) if n not in ("model_version", "surface")
                                 else list(columns[n]), type=SERVING_LOG_SCHEMA.field(n).type)
                     for n in SERVING_LOG_SCHEMA.names}, schema=SERVING_LOG_SCHEMA)


def rows_from_rank_answer(answer: Mapping[str, Any], request_id: int, surface: str = "homefeed",
                          ) -> pa.Table:
    """The log rows of one ``/rank`` JSON answer (``items`` in shown order, positions 0..)."""
    items = list(answer["items"])
    n = len(items)
    cols: dict[str, Any] = {
        "request_id": np.full(n, request_id, np.int64),
        "user_id": np.full(n, int(answer["user_id"]), np.int64),
        "item_id": np.array([int(it["item_id"]) for it in items], np.int64),
        "position": np.arange(n, dtype=np.int32),
        "utility": np.array([float(it["utility"]) for it in items], np.float32),
        "model_version": [str(answer["model_version"])] * n,
        "request_time_ms": np.full(n, int(answer["request_time_ms"]), np.int64),
        "surface": [surface] * n,
    }
    for h in HEADS:
        cols[f"score_{h}"] = np.array([float(it["scores"].get(h, np.nan)) for it in items],
                                      np.float32)
    return serving_log_table(cols)


class ServingLog(Protocol):
    """Where serving writes what it showed."""

    def append(self, rows: pa.Table) -> None: ...

    def read(self, start_ms: int | None = None, end_ms: int | None = None) -> pa.Table: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ParquetServingLog:
    """Append-only Parquet files under ``directory`` (``part-<ms>-<uuid>.parquet``)."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def append(self, rows: pa.Table) -> None:
        """Write ``rows`` as one file, atomically and durably (empty tables are ignored)."""
        if rows.num_rows == 0:
            return
        rows = rows.select(SERVING_LOG_SCHEMA.names).cast(SERVING_LOG_SCHEMA)
        name = f"part-{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(rows, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / name)
        _fsync_dir(self.directory)

    def read(self, start_ms: int | None = None, end_ms: int | None = None) -> pa.Table:
        """Rows with ``start_ms <= request_time_ms < end_ms`` (None: unbounded)."""
        parts = sorted(self.directory.glob("part-*.parquet"))
        if not parts:
            return SERVING_LOG_SCHEMA.empty_table()
        table = pa.concat_tables([pq.read_table(p).cast(SERVING_LOG_SCHEMA) for p in parts])
        return _time_filter(table, start_ms, end_ms)


def _time_filter(table: pa.Table, start_ms: int | None, end_ms: int | None) -> pa.Table:
    times = table.column("request_time_ms").to_numpy()
    keep = np.ones(len(times), bool)
    if start_ms is not None:
        keep &= times >= start_ms
    if end_ms is not None:
        keep &= times < end_ms
    return table if keep.all() else table.filter(pa.array(keep))


_PG_TYPES = {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float32(): "REAL",
             pa.string(): "TEXT"}


@dataclass
class PostgresServingLog:
    """The serving log as a PostgreSQL table (``schema.serving_log``)."""

    url: str = "postgresql://postgres@127.0.0.1:5432/test"
    schema: str = "public"
    table: str = "serving_log"

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.table}"'

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url)

    def create(self) -> None:
        cols = ", ".join(f"{f.name} {_PG_TYPES[f.type]} NOT NULL" for f in SERVING_LOG_SCHEMA)
        with self._connect() as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.qualified} ({cols})")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.table}_time ON {self.qualified} "
                         f"(request_time_ms)")

    def append(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        rows = rows.select(SERVING_LOG_SCHEMA.names).cast(SERVING_LOG_SCHEMA)
        names = ", ".join(SERVING_LOG_SCHEMA.names)
        with self._connect() as conn, conn.cursor() as cur:
            with cur.copy(f"COPY {self.qualified} ({names}) FROM STDIN") as copy:
                for row in zip(*(rows.column(n).to_pylist() for n in SERVING_LOG_SCHEMA.names),
                               strict=True):
                    copy.write_row(row)

    def read(self, start_ms: int | None = None, end_ms: int | None = None) -> pa.Table:
        lo = start_ms if start_ms is not None else -(2**62)
        hi = end_ms if end_ms is not None else 2**62
        names = ", ".join(SERVING_LOG_SCHEMA.names)
        with self._connect() as conn:
            got = conn.execute(f"SELECT {names} FROM {self.qualified} WHERE request_time_ms >= "
                               f"%s AND request_time_ms < %s ORDER BY request_id, position",
                               (lo, hi)).fetchall()
        columns = list(zip(*got, strict=True)) if got else [[] for _ in SERVING_LOG_SCHEMA]
        return serving_log_table(dict(zip(SERVING_LOG_SCHEMA.names, columns, strict=True)))


@dataclass
class ServingLogBuffer:
    """Collects rows in memory and appends them to ``log`` every ``flush_rows`` rows (and on
    :meth:`flush`): fewer, larger durable writes on the request path."""

    log: ServingLog
    flush_rows: int = 4096
    pending: list[pa.Table] = field(default_factory=list)
    pending_rows: int = 0

    def add(self, rows: pa.Table) -> None:
        self.pending.append(rows)
        self.pending_rows += rows.num_rows
        if self.pending_rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.log.append(pa.concat_tables(self.pending))
        self.pending, self.pending_rows = [], 0


def join_actions(shown: pa.Table | pd.DataFrame, events: pa.Table | pd.DataFrame | Iterable,
                 attribution_window_ms: int = HOUR_MS) -> pd.DataFrame:
    """The serving log ``(N rows)`` with ``clicked``, ``saved``, ``hidden`` (bool) added.

    ``events`` has ``user_id, item_id, action_type, timestamp_ms`` (extra columns ignored;
    skips and unknown codes contribute nothing). Each action is attributed to the latest
    showing of its ``(user, item)`` at or before it, within ``attribution_window_ms``.
    """
    log = shown.to_pandas() if isinstance(shown, pa.Table) else pd.DataFrame(shown).copy()
    ev = (events.to_pandas() if isinstance(events, pa.Table) else pd.DataFrame(events))
    for col in ACTION_COLUMNS:
        log[col] = False
    if len(log) == 0 or len(ev) == 0:
        return log
    ev = ev[ev["action_type"].isin([int(ActionType.CLICK), int(ActionType.SAVE),
                                    int(ActionType.HIDE)])]
    if len(ev) == 0:
        return log
    log = log.reset_index(drop=True)
    left = pd.DataFrame({"t": ev["timestamp_ms"].to_numpy(np.int64),
                         "user_id": ev["user_id"].to_numpy(np.int64),
                         "item_id": ev["item_id"].to_numpy(np.int64),
                         "action_type": ev["action_type"].to_numpy(np.int64)}).sort_values("t")
    right = pd.DataFrame({"t": log["request_time_ms"].to_numpy(np.int64),
                          "user_id": log["user_id"].to_numpy(np.int64),
                          "item_id": log["item_id"].to_numpy(np.int64),
                          "row": np.arange(len(log))}).sort_values("t")
    matched = pd.merge_asof(left, right, on="t", by=["user_id", "item_id"], direction="backward",
                            tolerance=int(attribution_window_ms))
    matched = matched.dropna(subset=["row"])
    rows = matched["row"].to_numpy(np.int64)
    codes = matched["action_type"].to_numpy()
    for col, code in zip(ACTION_COLUMNS, (ActionType.CLICK, ActionType.SAVE, ActionType.HIDE),
                         strict=True):
        flags = np.zeros(len(log), bool)
        flags[rows[codes == int(code)]] = True
        log[col] = flags
    return log
