"""Replays: publish recorded events to the stream in time order, in bounded chunks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from transact.schema import DAY_MS, EVENT_SCHEMA, HOUR_MS


def time_ordered(events: pa.Table) -> pa.Table:
    """Events sorted as a live stream would deliver them: ``(timestamp_ms, event_id)``."""
    return events.sort_by([("timestamp_ms", "ascending"), ("event_id", "ascending")])


def replay_events(stream: Any, events: pa.Table, chunk: int = 50_000,
                  sort: bool = True) -> int:
    """Publish ``events`` (EVENT_SCHEMA) to ``stream``; time-ordered unless ``sort=False``."""
    if sort:
        events = time_ordered(events)
    n = 0
    for lo in range(0, events.num_rows, chunk):
        n += stream.publish(events.slice(lo, chunk))
    return n


# ------------------------------------------------------------------------------- scenarios


@dataclass
class StreamScenario:
    """A synthetic stream with a known outcome, for tests and benchmarks.

    ``published``: EVENT_SCHEMA rows in arrival (publish) order, including duplicates, invalid
    and too-late events. ``accepted``: what the processor must accept, each event once.
    ``dead``: expected dead letters by reason. ``duplicates``: re-sent copies.
    """

    published: pa.Table
    accepted: pa.Table
    dead: dict[str, int]
    duplicates: int


def stream_scenario(
    n_events: int,
    n_users: int = 1_000,
    n_items: int = 5_000,
    start_ms: int | None = None,
    span_ms: int = HOUR_MS,
    jitter_ms: int = 60_000,
    allowed_lateness_ms: int = 300_000,
    duplicate_rate: float = 0.0,
    invalid_rate: float = 0.0,
    too_late_rate: float = 0.0,
    engagement_rate: float = 0.3,
    seed: int = 0,
) -> StreamScenario:
    """Events over ``span_ms`` arriving up to ``jitter_ms`` late (out of order but within the
    lateness bound, so all accepted), plus re-sent duplicates, invalid events (unknown action
    type, seconds timestamp, zero user id) and events far older than the lateness bound.
    ``start_ms`` defaults to two days before now (the processor rejects future events)."""
    if jitter_ms > allowed_lateness_ms:
        raise ValueError("jitter_ms must not exceed allowed_lateness_ms")
    rng = np.random.default_rng(seed)
    if start_ms is None:
        start_ms = (int(time.time() * 1000) - 2 * DAY_MS) // 1000 * 1000
    ts = np.sort(rng.integers(start_ms, start_ms + span_ms, n_events))
    engaged = rng.random(n_events) < engagement_rate
    actions = np.where(engaged, rng.integers(2, 5, n_events), 1).astype(np.int8)
    base = {
        "event_id": rng.permutation(n_events).astype(np.int64) + 1,
        "user_id": rng.integers(1, n_users + 1, n_events),
        "item_id": rng.integers(1, n_items + 1, n_events),
        "action_type": actions,
        "timestamp_ms": ts,
        "surface": np.array(["homefeed", "related", "search"])[rng.integers(0, 3, n_events)],
        "request_id": rng.integers(1, max(2, n_events // 8), n_events),
    }
    arrival = ts + rng.integers(0, jitter_ms + 1, n_events)
    parts = [(base, arrival)]
    next_id = n_events + 1

    def sample(rate: float, lo_frac: float = 0.0) -> np.ndarray:
        k = int(round(n_events * rate))
        lo = int(n_events * lo_frac)
        return rng.integers(lo, n_events, k) if k and lo < n_events else np.zeros(0, np.int64)

    dups = sample(duplicate_rate)
    parts.append(({k: v[dups] for k, v in base.items()},
                  ts[dups] + rng.integers(0, jitter_ms + 1, len(dups))))
    dead: dict[str, int] = {}
    inv = sample(invalid_rate)
    if len(inv):
        bad = {k: v[inv].copy() for k, v in base.items()}
        bad["event_id"] = np.arange(next_id, next_id + len(inv), dtype=np.int64)
        next_id += len(inv)
        kind = np.arange(len(inv)) % 3
        bad["action_type"] = np.where(kind == 0, 7, bad["action_type"]).astype(np.int8)
        bad["timestamp_ms"] = np.where(kind == 1, bad["timestamp_ms"] // 1000,
                                       bad["timestamp_ms"])
        bad["user_id"] = np.where(kind == 2, 0, bad["user_id"])
        for reason, k in (("invalid action type", 0), ("timestamp not in ms", 1),
                          ("invalid id", 2)):
            if (kind == k).any():
                dead[reason] = int((kind == k).sum())
        parts.append((bad, ts[inv] + rng.integers(0, jitter_ms + 1, len(inv))))
    late = sample(too_late_rate, lo_frac=0.5)
    if len(late):
        old = {k: v[late].copy() for k, v in base.items()}
        old["event_id"] = np.arange(next_id, next_id + len(late), dtype=np.int64)
        next_id += len(late)
        arrive = ts[late] + jitter_ms
        old["timestamp_ms"] = arrive - 10 * allowed_lateness_ms - HOUR_MS
        dead["too late"] = len(late)
        parts.append((old, arrive))
    cols = {k: np.concatenate([p[0][k] for p in parts]) for k in base}
    arrivals = np.concatenate([p[1] for p in parts])
    order = np.lexsort((cols["event_id"], arrivals))
    published = pa.table({k: pa.array(v[order], type=EVENT_SCHEMA.field(k).type)
                          for k, v in cols.items()}, schema=EVENT_SCHEMA)
    accepted = pa.table({k: pa.array(v, type=EVENT_SCHEMA.field(k).type)
                         for k, v in base.items()}, schema=EVENT_SCHEMA)
    return StreamScenario(published=published, accepted=accepted, dead=dead,
                          duplicates=len(dups))
