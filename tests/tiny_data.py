"""Tiny hand-made datasets in the shared on-disk format, for tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transact.data.dataset import DatasetMeta, EventPartWriter
from transact.schema import EVENT_SCHEMA, ITEM_EMB_DIM, ITEM_SCHEMA

#: 2026-01-01T00:00:00Z in ms: a convenient origin for hand-made timestamps
T0_MS = 1_767_225_600_000


def write_tiny_dataset(
    out_dir: Path,
    events: Sequence[tuple[int, int, int, int, int]] | pa.Table,
    n_items: int = 20,
    users_per_part: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a dataset directory from ``(event_id, user_id, item_id, action, timestamp_ms)``.

    Item ``i``'s embedding is ``i * 0.01`` in every dimension (easy to check means by hand).
    """
    if not isinstance(events, pa.Table):
        cols = list(zip(*events, strict=True)) if events else [[]] * 5
        n = len(cols[0])
        events = pa.table(
            {
                "event_id": pa.array(cols[0], pa.int64()),
                "user_id": pa.array(cols[1], pa.int64()),
                "item_id": pa.array(cols[2], pa.int64()),
                "action_type": pa.array(cols[3], pa.int8()),
                "timestamp_ms": pa.array(cols[4], pa.int64()),
                "surface": pa.array(["homefeed"] * n, pa.string()),
                "request_id": pa.array(cols[0], pa.int64()),
            },
            schema=EVENT_SCHEMA,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    item_ids = np.arange(1, n_items + 1)
    emb = np.repeat((item_ids * 0.01)[:, None], ITEM_EMB_DIM, axis=1).astype(np.float32)
    items = pa.table(
        {
            "item_id": pa.array(item_ids, pa.int64()),
            "content_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)),
                                                             ITEM_EMB_DIM),
            "topic": pa.array(item_ids % 3, pa.int32()),
            "title": pa.array([f"item {i}" for i in item_ids]),
        },
        schema=ITEM_SCHEMA,
    )
    pq.write_table(items, out_dir / "items.parquet")
    writer = EventPartWriter(out_dir)
    users = np.unique(events.column("user_id").to_numpy())
    chunks = [users] if users_per_part is None else [
        users[i:i + users_per_part] for i in range(0, len(users), users_per_part)]
    for chunk in chunks:
        mask = np.isin(events.column("user_id").to_numpy(), chunk)
        writer.write(events.filter(pa.array(mask)))
    DatasetMeta(
        source="tiny", n_users=len(users), n_items=n_items, n_events=writer.n_events,
        n_parts=writer.n_parts, min_timestamp_ms=writer.min_ts or 0,
        max_timestamp_ms=writer.max_ts or 0, seed=seed,
    ).write(out_dir)
    return out_dir


