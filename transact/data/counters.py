"""Point-in-time engagement counters: how often an item (or a user) was shown and engaged.

For a key (an item id or a user id) and a request time ``t``, the counters are the numbers of
events of that key with ``timestamp_ms < t`` *strictly*, over every user: impressions (all
outcomes, skips included), clicks, saves and hides — ``(N, 4)`` int32 in
:data:`COUNTER_NAMES` order. Events at exactly ``t`` (the other outcomes of the same request)
are never counted, so a row's own label never leaks into its features.

The example builder writes them as two optional example columns, ``item_counts`` and
``user_counts`` (:func:`transact.data.examples.build_examples`); the ranker reads them when
``RankerConfig.use_engagement_counters`` is on (MovieLens, where an item's rating bias is most
of the within-request signal). Lookups are vectorised: events are sorted once by (key, time)
with cumulative counts per outcome, and a query is two ``searchsorted`` calls.

Memory: about 25 bytes per event and side (sort key, cumulative counts), for the whole dataset at once
— the item side needs every user's events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transact.data.dataset import DatasetError
from transact.errors import UserError
from transact.schema import ActionType

#: counter columns, in order
COUNTER_NAMES: tuple[str, ...] = ("impressions", "clicks", "saves", "hides")
_COUNTED: tuple[ActionType, ...] = (ActionType.CLICK, ActionType.SAVE, ActionType.HIDE)
_TIME_BITS = 41  # 2**41 ms ≈ 70 years of span


class EngagementCounters:
    """As-of counts per key; build with :meth:`from_arrays` or :meth:`from_event_parts`."""

    def __init__(self, keys: np.ndarray, timestamps_ms: np.ndarray, actions: np.ndarray) -> None:
        """``keys``, ``timestamps_ms``, ``actions``: ``(E,)`` arrays of the events, any order."""
        keys = np.asarray(keys, dtype=np.int64)
        timestamps_ms = np.asarray(timestamps_ms, dtype=np.int64)
        actions = np.asarray(actions)
        if not len(keys) == len(timestamps_ms) == len(actions):
            raise UserError("counter events: keys, timestamps and actions differ in length")
        self._unique, rank = np.unique(keys, return_inverse=True)
        self._t0 = int(timestamps_ms.min()) if len(keys) else 0
        rel = timestamps_ms - self._t0
        if len(keys) and int(rel.max()) >= 1 << _TIME_BITS:
            raise UserError("counter events span more than 70 years of timestamps")
        if len(self._unique) >= 1 << (62 - _TIME_BITS):
            raise UserError("too many distinct keys to count")
        packed = (rank.astype(np.int64) << _TIME_BITS) | rel
        order = np.argsort(packed, kind="stable")
        self._packed = packed[order]
        sorted_actions = actions[order]
        # cumulative counts with a leading zero row: counts of events [0, i) = cum[i]
        cum = np.zeros((len(keys) + 1, len(COUNTER_NAMES)), dtype=np.int32)
        cum[1:, 0] = np.arange(1, len(keys) + 1, dtype=np.int32)
        for col, action in enumerate(_COUNTED, start=1):
            np.cumsum(sorted_actions == int(action), out=cum[1:, col])
        self._cum = cum

    @classmethod
    def from_event_parts(cls, parts: list[Path], key: str) -> EngagementCounters:
        """Read ``key`` (``item_id`` / ``user_id``), ``timestamp_ms`` and ``action_type`` of
        every events part (Parquet files in the events schema)."""
        if key not in ("item_id", "user_id"):
            raise UserError(f"counters are kept per item_id or user_id, not {key!r}")
        columns = [key, "timestamp_ms", "action_type"]
        tables = []
        for path in parts:
            try:
                tables.append(pq.read_table(path, columns=columns))
            except (pa.ArrowInvalid, OSError, KeyError) as err:
                raise DatasetError(f"{path} is malformed or truncated (or lacks {columns}): "
                                   f"{err}") from err
        if not tables:
            return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8))
        return cls(np.concatenate([t.column(key).to_numpy() for t in tables]),
                   np.concatenate([t.column("timestamp_ms").to_numpy() for t in tables]),
                   np.concatenate([t.column("action_type").to_numpy() for t in tables]))

    def lookup(self, keys: np.ndarray, request_time_ms: np.ndarray) -> np.ndarray:
        """``(N, 4)`` int32 counts of each key's events strictly before its request time."""
        keys = np.asarray(keys, dtype=np.int64)
        request_time_ms = np.asarray(request_time_ms, dtype=np.int64)
        out = np.zeros((len(keys), len(COUNTER_NAMES)), dtype=np.int32)
        if len(self._unique) == 0 or len(keys) == 0:
            return out
        rank = np.searchsorted(self._unique, keys)
        known = rank < len(self._unique)
        known[known] = self._unique[rank[known]] == keys[known]
        rank, rel = rank[known].astype(np.int64), request_time_ms[known] - self._t0
        # a time before the first event (rel < 0) counts nothing; beyond the span: everything
        rel = np.clip(rel, 0, (1 << _TIME_BITS) - 1)
        start = np.searchsorted(self._packed, rank << _TIME_BITS, side="left")
        end = np.searchsorted(self._packed, (rank << _TIME_BITS) | rel, side="left")
        out[known] = self._cum[end] - self._cum[start]
        return out


def count_events(keys: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts per distinct key of a batch of events: ``(unique keys (K,) int64, (K, 4) int64)``
    in :data:`COUNTER_NAMES` order (every event is an impression; skips count only there).
    The stream processor adds these to its running counters, the online twin of
    :class:`EngagementCounters`."""
    keys = np.asarray(keys, dtype=np.int64)
    actions = np.asarray(actions)
    unique, index = np.unique(keys, return_inverse=True)
    counts = np.zeros((len(unique), len(COUNTER_NAMES)), dtype=np.int64)
    np.add.at(counts[:, 0], index, 1)
    for col, action in enumerate(_COUNTED, start=1):
        np.add.at(counts[:, col], index, (actions == int(action)).astype(np.int64))
    return unique, counts


def counter_features(item_counts: np.ndarray, user_counts: np.ndarray) -> np.ndarray:
    """Model inputs ``(N, 8)`` float32 from ``item_counts`` / ``user_counts`` ``(N, 4)``.

    Per side: ``log1p(impressions) / log1p(10_000)`` and, per outcome (click, save, hide), the
    smoothed log-odds ``log((k + 1) / (n - k + 3)) / 4`` — a shrunk rate, defined with no
    history (``n = 0`` gives ``log(1/3) / 4``).
    """
    parts = []
    for counts in (item_counts, user_counts):
        counts = np.asarray(counts, dtype=np.float32).reshape(-1, len(COUNTER_NAMES))
        n = counts[:, :1]
        k = counts[:, 1:]
        parts.append(np.log1p(n) / np.log1p(10_000.0))
        parts.append(np.log((k + 1.0) / (np.maximum(n - k, 0.0) + 3.0)) / 4.0)
    return np.concatenate(parts, axis=1).astype(np.float32)


#: width of :func:`counter_features`
N_COUNTER_FEATURES = 2 * len(COUNTER_NAMES)
