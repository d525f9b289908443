"""Feast data sources, one set per profile.

============================  =================================  ================================
source                        embedded (local files)             production (PostgreSQL)
============================  =================================  ================================
``user_action_sequence_log``  ``<offline>/user_action_sequence``  table ``<prefix>user_action_
                              ``.parquet``                       sequence``
``user_action_sequence_push`` PushSource over the log above      same
``user_batch_embedding``      ``<offline>/user_batch_embedding``  table ``<prefix>user_batch_
                              ``.parquet`` (dated rows)          embedding``
``item_content``              ``<offline>/item_content.parquet``  table ``<prefix>item_content``
``item_engagement_push``      PushSource over ``<offline>/item_``  table ``<prefix>item_
                              ``engagement.parquet``             engagement``
``user_engagement_push``      PushSource over ``<offline>/user_``  table ``<prefix>user_
                              ``engagement.parquet``             engagement``
============================  =================================  ================================

Every batch source has an ``event_timestamp`` column (timezone-aware UTC). The realtime sequence
is written by the stream processor (``features.processor``); Feast has no "append to a list"
operation, so the processor owns the merge and pushes/writes the whole latest-100 sequence; it
does the same for the engagement counters (no increment either: it writes the new totals).
The batch user embedding is a *dated* source: one row per (user_id, day), read with the view's
TTL, written by ``features.store.stage_user_embeddings`` from a parquet of
``(user_id, event_timestamp, user_emb[32])`` (the PinnerFormer job's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feast import FileSource, PushSource
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)

from features.names import (
    ITEM_COUNTS_PUSH_SOURCE,
    SEQUENCE_PUSH_SOURCE,
    USER_COUNTS_PUSH_SOURCE,
)

TIMESTAMP_FIELD = "event_timestamp"
SEQUENCE_TABLE = "user_action_sequence"
USER_EMB_TABLE = "user_batch_embedding"
ITEM_TABLE = "item_content"
ITEM_COUNTS_TABLE = "item_engagement"
USER_COUNTS_TABLE = "user_engagement"


@dataclass(frozen=True)
class Sources:
    """The batch and push sources of one profile."""

    sequence_log: DataSource
    sequence_push: PushSource
    user_embedding: DataSource
    item_content: DataSource
    item_counts_push: PushSource
    user_counts_push: PushSource


def _file(name: str, offline_dir: Path) -> FileSource:
    return FileSource(
        name=name,
        path=str(Path(offline_dir).resolve() / f"{name}.parquet"),
        timestamp_field=TIMESTAMP_FIELD,
    )


def _table(name: str, table_prefix: str) -> PostgreSQLSource:
    return PostgreSQLSource(
        name=name,
        table=f"{table_prefix}{name}",
        timestamp_field=TIMESTAMP_FIELD,
    )


def make_sources(kind: str, offline_dir: Path, table_prefix: str = "") -> Sources:
    """Sources for profile kind ``"embedded"`` (Parquet files under ``offline_dir``) or
    ``"production"`` (PostgreSQL tables named ``table_prefix + name``)."""
    if kind == "embedded":

        def make(name: str) -> DataSource:
            return _file(name, offline_dir)

    elif kind == "production":

        def make(name: str) -> DataSource:
            return _table(name, table_prefix)

    else:
        raise ValueError(f"unknown profile kind {kind!r}; use 'embedded' or 'production'")
    sequence_log = make(SEQUENCE_TABLE)
    return Sources(
        sequence_log=sequence_log,
        sequence_push=PushSource(name=SEQUENCE_PUSH_SOURCE, batch_source=sequence_log),
        user_embedding=make(USER_EMB_TABLE),
        item_content=make(ITEM_TABLE),
        item_counts_push=PushSource(name=ITEM_COUNTS_PUSH_SOURCE,
                                    batch_source=make(ITEM_COUNTS_TABLE)),
        user_counts_push=PushSource(name=USER_COUNTS_PUSH_SOURCE,
                                    batch_source=make(USER_COUNTS_TABLE)),
    )
