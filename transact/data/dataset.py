"""The on-disk dataset format that every data source writes and every stage reads.

A dataset directory holds::

    meta.json                 DatasetMeta: source, seed, counts, time range, cleaning report
    items.parquet             ITEM_SCHEMA: item_id, content_emb (32 float32), topic, title
    events/part-00000.parquet EVENT_SCHEMA, one file per user chunk; within a file rows are
                              sorted by (user_id, timestamp_ms, event_id) and a user's events
                              never span two files

Keeping a user's events inside one part lets the example builder and the stream replays work one
part at a time in bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transact.errors import UserError
from transact.schema import EVENT_SCHEMA, ITEM_EMB_DIM, ITEM_SCHEMA


class DatasetError(UserError):
    """A dataset directory is missing, truncated or does not follow the format."""


@dataclass
class DatasetMeta:
    """What a dataset is and how it was made (``meta.json``)."""

    source: str
    n_users: int = 0
    n_items: int = 0
    n_events: int = 0
    n_parts: int = 0
    min_timestamp_ms: int = 0
    max_timestamp_ms: int = 0
    item_emb_dim: int = ITEM_EMB_DIM
    seed: int | None = None
    params: dict = field(default_factory=dict)
    #: counted cleaning steps: name -> number of rows affected (nothing is dropped silently)
    cleaning: dict[str, int] = field(default_factory=dict)
    #: how HIT@3 groups candidates into requests for this source
    request_grouping: str = ""

    def write(self, dataset_dir: Path) -> None:
        (Path(dataset_dir) / "meta.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, dataset_dir: Path) -> DatasetMeta:
        path = Path(dataset_dir) / "meta.json"
        if not path.exists():
            raise DatasetError(f"{dataset_dir} is not a dataset: no meta.json (create one with "
                               f"`transact data synthetic` or `transact data movielens`)")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise DatasetError(f"{path} is unreadable: {err}") from err


def event_parts(dataset_dir: Path) -> list[Path]:
    parts = sorted((Path(dataset_dir) / "events").glob("part-*.parquet"))
    if not parts:
        raise DatasetError(f"{dataset_dir}/events holds no part-*.parquet files")
    return parts


def read_parquet_checked(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet file, turning truncation and schema mismatches into :class:`DatasetError`."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path} is malformed or truncated: {err}") from err
    if schema is not None:
        missing = [f.name for f in schema if f.name not in table.column_names]
        if missing:
            raise DatasetError(f"{path} lacks columns {missing}")
        try:
            table = table.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DatasetError(f"{path} has columns of the wrong type: {err}") from err
    return table


def iter_event_parts(dataset_dir: Path) -> Iterator[pa.Table]:
    """Yield each events part as an Arrow table with :data:`EVENT_SCHEMA`."""
    for path in event_parts(dataset_dir):
        yield read_parquet_checked(path, EVENT_SCHEMA)


def read_events(dataset_dir: Path) -> pa.Table:
    """All events in one table (small datasets only)."""
    return pa.concat_tables(list(iter_event_parts(dataset_dir)))


def read_items(dataset_dir: Path) -> pa.Table:
    return read_parquet_checked(Path(dataset_dir) / "items.parquet", ITEM_SCHEMA)


def item_embedding_table(items: pa.Table, column: str = "content_emb", min_rows: int = 0
                         ) -> np.ndarray:
    """Dense ``(max(max_item_id + 1, min_rows), E)`` float32 lookup table of the vectors in
    ``column`` (a fixed-size list per ``item_id``); rows of absent ids (0, the padding id,
    among them) are zeros."""
    ids = items.column("item_id").to_numpy()
    emb = np.asarray(items.column(column).combine_chunks().values, dtype=np.float32)
    emb = emb.reshape(len(ids), -1)
    rows = max(int(ids.max()) + 1 if len(ids) else 0, min_rows)
    table = np.zeros((rows, emb.shape[1]), dtype=np.float32)
    table[ids] = emb
    return table


def is_event_order(events: pa.Table) -> bool:
    """Whether rows are already sorted by (user_id, timestamp_ms, event_id)."""
    if events.num_rows < 2:
        return True
    user = events.column("user_id").to_numpy()
    ts = events.column("timestamp_ms").to_numpy()
    eid = events.column("event_id").to_numpy()
    du, dt, de = np.diff(user), np.diff(ts), np.diff(eid)
    ordered = (du > 0) | ((du == 0) & ((dt > 0) | ((dt == 0) & (de > 0))))
    return bool(ordered.all())


class EventPartWriter:
    """Writes sorted events parts ``part-00000.parquet``, ``part-00001.parquet``, ..."""

    def __init__(self, dataset_dir: Path) -> None:
        self.events_dir = Path(dataset_dir) / "events"
        self.events_dir.mkdir(parents=True, exist_ok=True)
        for old in self.events_dir.glob("part-*.parquet"):
            old.unlink()
        self.n_parts = 0
        self.n_events = 0
        self.min_ts: int | None = None
        self.max_ts: int | None = None

    def write(self, events: pa.Table) -> Path:
        events = events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        if not is_event_order(events):
            events = events.sort_by([("user_id", "ascending"), ("timestamp_ms", "ascending"),
                                     ("event_id", "ascending")])
        path = self.events_dir / f"part-{self.n_parts:05d}.parquet"
        pq.write_table(events, path, compression="zstd")
        self.n_parts += 1
        self.n_events += events.num_rows
        if events.num_rows:
            ts = events.column("timestamp_ms").to_numpy()
            lo, hi = int(ts.min()), int(ts.max())
            self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)
        return path
