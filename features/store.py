"""Feature-store profiles and the apply / stage / materialise helpers.

Two profiles share one set of definitions (``features.repo``):

=============  ======================================  =========================================
               embedded (default, no server)            production
=============  ======================================  =========================================
registry       ``<root>/registry.db`` (Feast file)      PostgreSQL ``sql`` registry, schema
                                                        ``<pg_schema>``
online store   ``<root>/online.db`` (Feast SQLite)      Redis ``127.0.0.1:6379`` db ``redis_db``
offline store  Parquet files ``<root>/offline/``        PostgreSQL tables in ``<pg_schema>``
event stream   ``<root>/queue.db`` (SQLite queue)       Redis Stream ``<key_prefix>events``
offline log    ``<root>/offline_log/``                  ``<root>/offline_log/``
=============  ======================================  =========================================

The ``features/repo/{embedded,production}/feature_store.yaml`` files are each profile's Feast
configuration: Feast's own CLI reads them there (``cd features/repo/embedded && feast apply``,
with the definitions in ``definitions.py`` beside them), and :meth:`FeatureProfile.repo_config`
starts from them, putting in the profile's own directory, Redis database and PostgreSQL schema
(tests and jobs point profiles at their own places).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.names import ProfileKind
from transact.errors import UserError
from transact.runtime import quiet_telemetry
from transact.schema import DAY_MS, ITEM_EMB_DIM, MIN_TIMESTAMP_MS, USER_EMB_DIM

PROFILES = tuple(kind.value for kind in ProfileKind)


@dataclass
class FeatureProfile:
    """Where the feature platform keeps things. Build with :meth:`embedded` /
    :meth:`production` or :func:`load_profile`."""

    kind: ProfileKind = ProfileKind.EMBEDDED
    root: Path = Path("data/features")
    project: str = "transact"
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    key_prefix: str = "transact:"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_database: str = "test"
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_schema: str = "transact_features"
    table_prefix: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        try:
            self.kind = ProfileKind(self.kind)
        except ValueError:
            raise UserError(f"unknown feature profile {self.kind!r}; use one of {PROFILES}")
        if not self.project.replace("_", "").isalnum():
            raise UserError(f"project {self.project!r} must be letters, digits and '_'")
        if not self.pg_schema.replace("_", "").isalnum():
            raise UserError(f"pg_schema {self.pg_schema!r} must be letters, digits and '_'")

    @classmethod
    def embedded(cls, root: Path | str = "data/features", **kw: Any) -> FeatureProfile:
        return cls(kind=ProfileKind.EMBEDDED, root=Path(root), **kw)

    @classmethod
    def production(cls, root: Path | str = "data/features", **kw: Any) -> FeatureProfile:
        return cls(kind=ProfileKind.PRODUCTION, root=Path(root), **kw)

    def with_(self, **kw: Any) -> FeatureProfile:
        return replace(self, **kw)

    # -- paths ---------------------------------------------------------------------------------

    @property
    def offline_dir(self) -> Path:
        return self.root / "offline"

    @property
    def offline_log_dir(self) -> Path:
        return self.root / "offline_log"

    @property
    def queue_path(self) -> Path:
        return self.root / "queue.db"

    @property
    def pg_url(self) -> str:
        pw = f":{self.pg_password}" if self.pg_password else ""
        return (f"postgresql+psycopg://{self.pg_user}{pw}@{self.pg_host}:{self.pg_port}/"
                f"{self.pg_database}?options=-csearch_path%3D{self.pg_schema}")

    def pg_conninfo(self) -> str:
        pw = f" password={self.pg_password}" if self.pg_password else ""
        return (f"host={self.pg_host} port={self.pg_port} dbname={self.pg_database} "
                f"user={self.pg_user}{pw}")

    # -- Feast ---------------------------------------------------------------------------------

    def repo_config(self) -> Any:
        """The Feast ``RepoConfig`` of this profile: the profile's
        ``features/repo/<kind>/feature_store.yaml`` (what Feast's own CLI reads there), with
        this profile's places put in (local paths under ``root``; Redis database, PostgreSQL
        schema and project)."""
        quiet_telemetry()
        from feast.repo_config import RepoConfig

        from features.repo.definitions import profile_yaml, read_store_yaml

        self.root.mkdir(parents=True, exist_ok=True)
        config = read_store_yaml(profile_yaml(self.kind))
        config["project"] = self.project
        if self.kind == "embedded":
            config["registry"]["path"] = str((self.root / "registry.db").resolve())
            config["online_store"]["path"] = str((self.root / "online.db").resolve())
        else:
            config["registry"]["path"] = self.pg_url
            config["online_store"]["connection_string"] = (
                f"{self.redis_host}:{self.redis_port},db={self.redis_db}")
            config["offline_store"].update(
                host=self.pg_host, port=self.pg_port, database=self.pg_database,
                db_schema=self.pg_schema, user=self.pg_user, password=self.pg_password)
        return RepoConfig(repo_path=self.root.resolve(), **config)

    def feature_store(self) -> Any:
        quiet_telemetry()
        from feast import FeatureStore

        return FeatureStore(config=self.repo_config())

    def redis_client(self) -> Any:
        import redis

        return redis.Redis(host=self.redis_host, port=self.redis_port, db=self.redis_db)


def load_profile(name: str = "embedded", root: Path | str | None = None,
                 **overrides: Any) -> FeatureProfile:
    """A profile by name; ``root`` defaults to ``$TRANSACT_FEATURES_ROOT`` or
    ``data/features``; ``TRANSACT_REDIS_DB`` / ``TRANSACT_PG_SCHEMA`` override the defaults."""
    if name not in PROFILES:
        raise UserError(f"unknown feature profile {name!r}; use one of {PROFILES}")
    root = Path(root or os.environ.get("TRANSACT_FEATURES_ROOT", "data/features"))
    if "TRANSACT_REDIS_DB" in os.environ:
        overrides.setdefault("redis_db", int(os.environ["TRANSACT_REDIS_DB"]))
    if "TRANSACT_PG_SCHEMA" in os.environ:
        overrides.setdefault("pg_schema", os.environ["TRANSACT_PG_SCHEMA"])
    return FeatureProfile(kind=name, root=root, **overrides)


# ------------------------------------------------------------------------------- definitions


def feature_objects(profile: FeatureProfile) -> list[Any]:
    """Entities and views (with their sources) to apply for ``profile``: the same definitions
    Feast's CLI discovers in ``features/repo/<kind>/`` (:mod:`features.repo.definitions`)."""
    from features.repo.definitions import build

    return build(profile.kind, profile.offline_dir, profile.table_prefix).objects()


_PG_TABLES = {
    "user_action_sequence": "user_id BIGINT NOT NULL, seq_item_ids BIGINT[], "
    "seq_action_types INTEGER[], seq_timestamps_ms BIGINT[], seq_len BIGINT, "
    "event_timestamp TIMESTAMPTZ NOT NULL",
    "user_batch_embedding": "user_id BIGINT NOT NULL, user_emb REAL[], "
    "event_timestamp TIMESTAMPTZ NOT NULL, created_timestamp TIMESTAMPTZ",
    "item_content": "item_id BIGINT NOT NULL, content_emb REAL[], topic INTEGER, "
    "event_timestamp TIMESTAMPTZ NOT NULL",
    "item_engagement": "item_id BIGINT NOT NULL, item_counts BIGINT[], "
    "event_timestamp TIMESTAMPTZ NOT NULL",
    "user_engagement": "user_id BIGINT NOT NULL, user_counts BIGINT[], "
    "event_timestamp TIMESTAMPTZ NOT NULL",
}


def _pg_connect(profile: FeatureProfile) -> Any:
    import psycopg

    try:
        return psycopg.connect(profile.pg_conninfo(), autocommit=True)
    except psycopg.OperationalError as err:
        raise UserError(f"cannot reach PostgreSQL at {profile.pg_host}:{profile.pg_port} "
                        f"for the production feature profile ({err}); start it or use "
                        f"--profile embedded") from err


def ensure_offline_tables(profile: FeatureProfile) -> None:
    """Production: create the schema and the source tables if missing."""
    with _pg_connect(profile) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{profile.pg_schema}"')
        for name, cols in _PG_TABLES.items():
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{profile.pg_schema}".'
                         f'"{profile.table_prefix}{name}" ({cols})')


def apply(profile: FeatureProfile) -> list[str]:
    """Register the entities and feature views (``feast apply``); returns their names."""
    if profile.kind == "production":
        ensure_offline_tables(profile)
        _check_redis(profile)
    objects = feature_objects(profile)
    store = profile.feature_store()
    store.apply(objects)
    return [obj.name for obj in objects]


def _check_redis(profile: FeatureProfile) -> None:
    import redis

    try:
        profile.redis_client().ping()
    except redis.ConnectionError as err:
        raise UserError(f"cannot reach Redis at {profile.redis_host}:{profile.redis_port} for "
                        f"the production feature profile ({err}); start it or use "
                        f"--profile embedded") from err


# ------------------------------------------------------------------------------- staging


def _ts_array(ms: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ms, dtype=np.int64), pa.timestamp("ms", tz="UTC")).cast(
        pa.timestamp("us", tz="UTC"))


def _to_ms(when: datetime) -> int:
    """Epoch milliseconds of ``when`` (a naive datetime is read as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _check_vectors(name: str, values: pa.Array, dim: int) -> np.ndarray:
    """Flattened ``(N, dim)`` float32 matrix, or a UserError saying which rows are bad."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != dim)
    if len(bad):
        raise UserError(f"{name}: {len(bad)} rows do not have {dim} values (first row index "
                        f"{int(bad[0])}); fix the input before staging")
    mat = np.asarray(pc.list_flatten(values).to_numpy(zero_copy_only=False),
                     dtype=np.float32).reshape(-1, dim)
    nonfinite = int((~np.isfinite(mat)).any(axis=1).sum())
    if nonfinite:
        raise UserError(f"{name}: {nonfinite} rows hold NaN/inf; fix the input before staging")
    return mat


def _write_source(profile: FeatureProfile, name: str, table: pa.Table) -> int:
    """Replace one batch source with ``table`` (Parquet file or PostgreSQL table)."""
    if profile.kind == "embedded":
        profile.offline_dir.mkdir(parents=True, exist_ok=True)
        final = profile.offline_dir / f"{name}.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        return table.num_rows
    ensure_offline_tables(profile)
    qualified = f'"{profile.pg_schema}"."{profile.table_prefix}{name}"'
    cols = ", ".join(f'"{c}"' for c in table.column_names)
    rows = table.to_pylist()
    with _pg_connect(profile) as conn:
        with conn.transaction():
            conn.execute(f"TRUNCATE {qualified}")
            with conn.cursor() as cur:
                with cur.copy(f"COPY {qualified} ({cols}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([row[c] for c in table.column_names])
    return table.num_rows


def stage_items(profile: FeatureProfile, items_path: Path | str,
                as_of: datetime | None = None) -> int:
    """Stage ``items.parquet`` (ITEM_SCHEMA; or a dataset directory holding one) as the
    ``item_content`` source, stamped ``as_of`` (default: the core's timestamp floor,
    :data:`~transact.schema.MIN_TIMESTAMP_MS`, so the rows are valid for any event the
    platform accepts, MovieLens' 1997 included)."""
    path = Path(items_path)
    if path.is_dir():
        path = path / "items.parquet"
    if not path.exists():
        raise UserError(f"{path} does not exist; pass items.parquet or a dataset directory")
    items = pq.read_table(path)
    for col in ("item_id", "content_emb"):
        if col not in items.column_names:
            raise UserError(f"{path} lacks column {col!r}: not an items table")
    emb = _check_vectors(f"{path} content_emb", items.column("content_emb"), ITEM_EMB_DIM)
    stamp_ms = MIN_TIMESTAMP_MS if as_of is None else _to_ms(as_of)
    n = items.num_rows
    topic = (items.column("topic").cast(pa.int32()) if "topic" in items.column_names
             else pa.nulls(n, pa.int32()))
    table = pa.table({
        "item_id": items.column("item_id").cast(pa.int64()),
        "content_emb": pa.array(list(emb), type=pa.list_(pa.float32())),
        "topic": topic,
        "event_timestamp": _ts_array(np.full(n, stamp_ms, dtype=np.int64)),
    })
    return _write_source(profile, "item_content", table)


def stage_user_embeddings(profile: FeatureProfile, path: Path | str) -> int:
    """Stage daily batch user embeddings as the ``user_batch_embedding`` source.

    ``path``: a Parquet file or a directory of them (e.g. the PinnerFormer job's
    ``user_embeddings/date=YYYY-MM-DD/part-*.parquet``) with columns ``user_id``,
    ``event_timestamp`` (the day the row is valid from) and ``user_emb`` (32 float32);
    ``created_timestamp`` is optional.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not files:
        raise UserError(f"{path} holds no Parquet files of user embeddings")
    table = pa.concat_tables(
        pq.read_table(f, columns=None).select(
            [c for c in ("user_id", "event_timestamp", "user_emb", "created_timestamp")
             if c in pq.read_schema(f).names]) for f in files)
    for col in ("user_id", "event_timestamp", "user_emb"):
        if col not in table.column_names:
            raise UserError(f"{path} lacks column {col!r}; expected (user_id, event_timestamp, "
                            f"user_emb[{USER_EMB_DIM}])")
    emb = _check_vectors(f"{path} user_emb", table.column("user_emb"), USER_EMB_DIM)
    stamp = table.column("event_timestamp").cast(pa.timestamp("us", tz="UTC"))
    created = (table.column("created_timestamp").cast(pa.timestamp("us", tz="UTC"))
               if "created_timestamp" in table.column_names else stamp)
    out = pa.table({
        "user_id": table.column("user_id").cast(pa.int64()),
        "user_emb": pa.array(list(emb), type=pa.list_(pa.float32())),
        "event_timestamp": stamp,
        "created_timestamp": created,
    })
    return _write_source(profile, "user_batch_embedding", out)


def source_time_range(profile: FeatureProfile, source: str) -> tuple[int, int] | None:
    """``(min, max)`` ``event_timestamp`` in epoch ms of a staged batch source, or ``None``
    when it is empty or was never staged."""
    if profile.kind == "embedded":
        path = profile.offline_dir / f"{source}.parquet"
        if not path.exists():
            return None
        column = pq.read_table(path, columns=["event_timestamp"]).column("event_timestamp")
        if len(column) == 0:
            return None
        ms = pc.cast(pc.cast(column, pa.timestamp("ms", tz="UTC"), safe=False), pa.int64())
        bounds = pc.min_max(ms).as_py()
        return int(bounds["min"]), int(bounds["max"])
    qualified = f'"{profile.pg_schema}"."{profile.table_prefix}{source}"'
    with _pg_connect(profile) as conn:
        row = conn.execute(
            f"SELECT (EXTRACT(EPOCH FROM MIN(event_timestamp)) * 1000)::BIGINT, "
            f"(EXTRACT(EPOCH FROM MAX(event_timestamp)) * 1000)::BIGINT FROM {qualified}"
        ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def materialize(profile: FeatureProfile, end: datetime | None = None,
                start: datetime | None = None,
                views: list[str] | None = None) -> dict[str, Any]:
    """Load the batch views (item content, user embeddings) into the online store.

    The window defaults to the staged data: ``start`` = the oldest staged row (the core's
    timestamp floor when nothing says otherwise), ``end`` = one day after the later of now and
    the newest staged row. A fixed calendar window silently left data outside it offline
    (MovieLens' 1997-98 embeddings before a 2000 start). Views whose source was never staged
    (embedded: no Parquet file yet) are skipped and reported, not failed:
    ``{"materialized": [...], "skipped": {view: reason}, "window": [start, end]}``.
    """
    from features.names import ITEM_VIEW, USER_EMB_VIEW

    sources = {ITEM_VIEW: "item_content", USER_EMB_VIEW: "user_batch_embedding"}
    wanted = views or [ITEM_VIEW, USER_EMB_VIEW]
    unknown = [v for v in wanted if v not in sources]
    if unknown:
        raise UserError(f"cannot materialise {unknown}: only {sorted(sources)} are batch views "
                        f"(the realtime sequence is written by the stream processor)")
    if profile.kind == "production":
        ensure_offline_tables(profile)
    skipped: dict[str, str] = {}
    ranges: list[tuple[int, int]] = []
    for view in wanted:
        bounds = source_time_range(profile, sources[view])
        if bounds is None:
            skipped[view] = (f"source {sources[view]} not staged yet; run `transact "
                             f"features stage`")
        else:
            ranges.append(bounds)
    todo = [v for v in wanted if v not in skipped]
    result: dict[str, Any] = {"materialized": todo, "skipped": skipped}
    if todo:
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        start_ms = _to_ms(start) if start is not None else min(
            [MIN_TIMESTAMP_MS] if not ranges else [lo for lo, _ in ranges])
        end_ms = _to_ms(end) if end is not None else max(
            [now_ms] + [hi for _, hi in ranges]) + DAY_MS
        if start_ms >= end_ms:
            raise UserError(f"materialise window is empty: start {_from_ms(start_ms)} is not "
                            f"before end {_from_ms(end_ms)}")
        profile.feature_store().materialize(start_date=_from_ms(start_ms),
                                            end_date=_from_ms(end_ms), feature_views=todo)
        result["window"] = [_from_ms(start_ms).isoformat(), _from_ms(end_ms).isoformat()]
    return result


#: where the daily PinnerFormer job (``transact train pinnerformer``) puts its dated day files
#: inside its output directory: ``user_embeddings/date=YYYY-MM-DD/part-0.parquet``
JOB_USER_EMBEDDINGS_DIR = "user_embeddings"


def materialize_user_embeddings(profile: FeatureProfile, embeddings: Path | str,
                                include_items: bool = False,
                                end: datetime | None = None) -> dict[str, Any]:
    """Stage the daily user embeddings and load them into the online store: the DAG task that
    follows the embedding job.

    ``embeddings``: the job's output directory (its ``user_embeddings/`` is used), that
    directory itself, or one day's Parquet file. The ``user_batch_embedding`` source is
    replaced by what is there (every dated day the job has written), so a rerun after the job
    re-wrote a day is idempotent. ``include_items`` also materialises the staged item content
    (one Feast call instead of two).

    Returns ``{"user_emb_rows_staged": n, "materialized": [...], "skipped": {...},
    "window": [start, end]}`` (:func:`materialize`'s summary plus the staged row count).
    """
    from features.names import ITEM_VIEW, USER_EMB_VIEW

    path = Path(embeddings)
    if not path.exists():
        raise UserError(f"daily embeddings {path} do not exist; run `transact train "
                        f"pinnerformer DATASET_DIR {path}` first")
    if (path / JOB_USER_EMBEDDINGS_DIR).is_dir():
        path = path / JOB_USER_EMBEDDINGS_DIR
    staged = stage_user_embeddings(profile, path)
    views = [ITEM_VIEW, USER_EMB_VIEW] if include_items else [USER_EMB_VIEW]
    return {"user_emb_rows_staged": staged, **materialize(profile, end=end, views=views)}


def push_sequences(store: Any, user_ids: np.ndarray, sequences: np.ndarray) -> int:
    """Upsert users' full sequences into the Feast online store through the push source.

    ``sequences``: ``(U, L)`` :data:`~features.sequence.SEQ_RECORD`. Idempotent (full state).
    """
    from features.names import SEQUENCE_PUSH_SOURCE

    if len(user_ids) == 0:
        return 0
    from feast.data_source import PushMode

    newest = sequences["ts"][:, 0]
    lengths = (sequences["action"] != 0).sum(axis=1).astype(np.int64)

    def rows(values: np.ndarray) -> list[np.ndarray]:  # each user's actions, no padding
        return [row[:n] for row, n in zip(values, lengths.tolist(), strict=True)]

    frame = pd.DataFrame({
        "user_id": np.asarray(user_ids, dtype=np.int64),
        "seq_item_ids": rows(sequences["item_id"]),
        "seq_action_types": rows(sequences["action"].astype(np.int32)),
        "seq_timestamps_ms": rows(sequences["ts"]),
        "seq_len": lengths,
        "event_timestamp": pd.to_datetime(newest, unit="ms", utc=True),
    })
    store.push(SEQUENCE_PUSH_SOURCE, frame, to=PushMode.ONLINE)
    return len(frame)


def push_counters(store: Any, side: str, keys: np.ndarray, counts: np.ndarray,
                  timestamp_ms: int) -> int:
    """Upsert running engagement counters into the Feast online store through the push source.

    ``side``: ``"item"`` or ``"user"``; ``keys`` ``(K,)`` ids, ``counts`` ``(K, 4)`` totals
    (:data:`transact.data.counters.COUNTER_NAMES`). Idempotent (full state).
    """
    from features.names import (
        ITEM_COUNTS_FEATURE,
        ITEM_COUNTS_PUSH_SOURCE,
        USER_COUNTS_FEATURE,
        USER_COUNTS_PUSH_SOURCE,
    )

    if len(keys) == 0:
        return 0
    from feast.data_source import PushMode

    key, feature, source = (("item_id", ITEM_COUNTS_FEATURE, ITEM_COUNTS_PUSH_SOURCE)
                            if side == "item" else
                            ("user_id", USER_COUNTS_FEATURE, USER_COUNTS_PUSH_SOURCE))
    frame = pd.DataFrame({
        key: np.asarray(keys, dtype=np.int64),
        feature: list(np.asarray(counts, dtype=np.int64)),
        "event_timestamp": pd.to_datetime(np.full(len(keys), max(timestamp_ms, 0)), unit="ms",
                                          utc=True),
    })
    store.push(source, frame, to=PushMode.ONLINE)
    return len(frame)


def teardown(profile: FeatureProfile) -> None:
    """Remove everything this profile wrote (tests, ``features teardown``): the Redis database
    keys under the profile's prefix and Feast project keys, the PostgreSQL schema, the
    local files."""
    import shutil

    if profile.kind == "production":
        client = profile.redis_client()
        for key in client.scan_iter(match=f"{profile.key_prefix}*", count=1000):
            client.delete(key)
        suffix = profile.project.encode()
        batch = [k for k in client.scan_iter(count=1000) if k.endswith(suffix)]
        for lo in range(0, len(batch), 1000):
            client.delete(*batch[lo : lo + 1000])
        with _pg_connect(profile) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{profile.pg_schema}" CASCADE')
    shutil.rmtree(profile.root, ignore_errors=True)
