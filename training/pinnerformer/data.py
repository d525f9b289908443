"""The PinnerFormer stage's data preparation: days, item content and engagement histories.

Days are UTC day starts in epoch ms (:func:`parse_day`, :func:`day_str`, :func:`dataset_days`);
:func:`item_content` is the frozen content table the towers read.

An :class:`EngagementLog` holds the engagements (click / save / hide) of the users of one events
part (or of several parts, concatenated), one contiguous segment per user, each segment sorted by
``(timestamp_ms, event_id)`` as the dataset format guarantees. Everything a training step or a
daily inference pass needs is gathered from it with index arithmetic, never a per-user loop:

* :func:`history_at` - the latest ``L`` engagements strictly before a cut-off, newest first,
  as ``(U, L)`` matrices;
* :func:`positives_between` - the ``[lo, hi)`` index range of each user's positive (click /
  save) engagements inside a time window, used as the dense all-action targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from transact.data.dataset import DatasetError, DatasetMeta, item_embedding_table, read_items
from transact.errors import UserError
from transact.schema import DAY_MS, SEQUENCE_ACTIONS, ActionType

_POSITIVE_CODES = np.array([int(ActionType.CLICK), int(ActionType.SAVE)], dtype=np.int8)
_SEQUENCE_CODES = np.array([int(a) for a in SEQUENCE_ACTIONS], dtype=np.int8)


@dataclass
class EngagementLog:
    """Engagements of a set of users, one contiguous time-sorted segment per user.

    Attributes (``N`` engagements, ``U`` users):
        user_ids: ``(U,)`` int64, the users (every user of the part, engaged or not).
        first_seen_ms: ``(U,)`` int64, time of the user's first event of any kind (skips too).
        seg_start / seg_stop: ``(U,)`` int64, each user's ``[start, stop)`` rows in the arrays.
        item_ids: ``(N,)`` int64.
        actions: ``(N,)`` int8 ActionType codes (click / save / hide only).
        timestamps_ms: ``(N,)`` int64.
        pos_*: the same for the positive (click / save) subset, same users, same order.
    """

    user_ids: np.ndarray
    first_seen_ms: np.ndarray
    seg_start: np.ndarray
    seg_stop: np.ndarray
    item_ids: np.ndarray
    actions: np.ndarray
    timestamps_ms: np.ndarray
    pos_seg_start: np.ndarray
    pos_seg_stop: np.ndarray
    pos_item_ids: np.ndarray
    pos_timestamps_ms: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_engagements(self) -> int:
        return len(self.item_ids)


def _segments(user_col: np.ndarray, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[start, stop)`` rows of each of ``user_ids`` (ascending) in ``user_col``, a sub-sequence
    of an ascending user column; users with no rows get an empty ``[0, 0)`` segment."""
    seg_start = np.zeros(len(user_ids), dtype=np.int64)
    seg_stop = np.zeros(len(user_ids), dtype=np.int64)
    if len(user_col) == 0:
        return seg_start, seg_stop
    change = np.flatnonzero(np.diff(user_col)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(user_col)]])
    where = np.searchsorted(user_ids, user_col[starts])
    seg_start[where] = starts
    seg_stop[where] = stops
    return seg_start, seg_stop


def engagement_log_from_events(events: pa.Table, until_ms: int | None = None) -> EngagementLog:
    """Build the log of one events part (``EVENT_SCHEMA``, sorted by user, time, event id).

    ``until_ms``: keep only events strictly before it (the training horizon), so that nothing
    at or after the horizon can reach the model.
    """
    users_col = events.column("user_id").to_numpy()
    ts_col = events.column("timestamp_ms").to_numpy()
    if until_ms is not None:
        keep = ts_col < until_ms
        events = events.filter(pa.array(keep))
        users_col = users_col[keep]
        ts_col = ts_col[keep]
    step_user = np.diff(users_col)
    if (step_user < 0).any() or ((step_user == 0) & (np.diff(ts_col) < 0)).any():
        raise DatasetError("an events part is not sorted by (user_id, timestamp_ms); rewrite "
                           "the dataset with transact.data.dataset.EventPartWriter")
    actions_col = events.column("action_type").to_numpy()
    items_col = events.column("item_id").to_numpy()
    if len(users_col):
        first_rows = np.concatenate([[0], np.flatnonzero(np.diff(users_col)) + 1])
    else:
        first_rows = np.zeros(0, dtype=np.int64)
    user_ids = users_col[first_rows].astype(np.int64)
    first_seen = ts_col[first_rows].astype(np.int64)

    engaged = np.isin(actions_col, _SEQUENCE_CODES)
    eng_users = users_col[engaged]
    seg_start, seg_stop = _segments(eng_users, user_ids)
    positive = np.isin(actions_col, _POSITIVE_CODES)
    pos_users = users_col[positive]
    pos_start, pos_stop = _segments(pos_users, user_ids)
    return EngagementLog(
        user_ids=user_ids,
        first_seen_ms=first_seen,
        seg_start=seg_start,
        seg_stop=seg_stop,
        item_ids=items_col[engaged].astype(np.int64),
        actions=actions_col[engaged].astype(np.int8),
        timestamps_ms=ts_col[engaged].astype(np.int64),
        pos_seg_start=pos_start,
        pos_seg_stop=pos_stop,
        pos_item_ids=items_col[positive].astype(np.int64),
        pos_timestamps_ms=ts_col[positive].astype(np.int64),
    )


def concat_logs(logs: list[EngagementLog]) -> EngagementLog:
    """One log from several (disjoint users), offsetting the segment indices."""
    if len(logs) == 1:
        return logs[0]
    eng_off = np.cumsum([0] + [log.n_engagements for log in logs[:-1]])
    pos_off = np.cumsum([0] + [len(log.pos_item_ids) for log in logs[:-1]])
    return EngagementLog(
        user_ids=np.concatenate([log.user_ids for log in logs]),
        first_seen_ms=np.concatenate([log.first_seen_ms for log in logs]),
        seg_start=np.concatenate([log.seg_start + o for log, o in zip(logs, eng_off, strict=True)]),
        seg_stop=np.concatenate([log.seg_stop + o for log, o in zip(logs, eng_off, strict=True)]),
        item_ids=np.concatenate([log.item_ids for log in logs]),
        actions=np.concatenate([log.actions for log in logs]),
        timestamps_ms=np.concatenate([log.timestamps_ms for log in logs]),
        pos_seg_start=np.concatenate(
            [log.pos_seg_start + o for log, o in zip(logs, pos_off, strict=True)]),
        pos_seg_stop=np.concatenate(
            [log.pos_seg_stop + o for log, o in zip(logs, pos_off, strict=True)]),
        pos_item_ids=np.concatenate([log.pos_item_ids for log in logs]),
        pos_timestamps_ms=np.concatenate([log.pos_timestamps_ms for log in logs]),
    )


def count_before(
    timestamps_ms: np.ndarray, seg_start: np.ndarray, seg_stop: np.ndarray, cutoff_ms: int
) -> np.ndarray:
    """``(U,)`` number of rows of each segment with ``timestamp < cutoff_ms`` (segments sorted)."""
    below = np.zeros(len(timestamps_ms) + 1, dtype=np.int64)
    np.cumsum(timestamps_ms < cutoff_ms, out=below[1:])
    return below[seg_stop] - below[seg_start]


@dataclass
class HistoryBatch:
    """Latest engagements before a cut-off, newest first, zero-padded.

    item_ids ``(B, L)`` int64 (0 = padding), actions ``(B, L)`` int8 (0 = padding),
    age_ms ``(B, L)`` int64 = cut-off minus the action's time (> 0; 0 at padding),
    lengths ``(B,)`` int64 number of real actions.
    """

    item_ids: np.ndarray
    actions: np.ndarray
    age_ms: np.ndarray
    lengths: np.ndarray


def history_at(
    log: EngagementLog,
    users: np.ndarray,
    cutoff_ms: np.ndarray | int,
    history_len: int,
    hist_end: np.ndarray | None = None,
) -> HistoryBatch:
    """Gather the latest ``history_len`` engagements strictly before ``cutoff_ms``.

    Args:
        log: the engagement log.
        users: ``(B,)`` row indices into ``log.user_ids``.
        cutoff_ms: scalar or ``(B,)`` cut-off per row.
        history_len: ``L``, the longest history kept.
        hist_end: ``(B,)`` precomputed end (exclusive) of the history rows (as from
            :func:`count_before` plus ``seg_start``); computed when omitted.
    """
    users = np.asarray(users, dtype=np.int64)
    cut = np.broadcast_to(np.asarray(cutoff_ms, dtype=np.int64), users.shape)
    start = log.seg_start[users]
    if hist_end is None:
        if np.ndim(cutoff_ms) == 0:
            hist_end = start + count_before(
                log.timestamps_ms, log.seg_start, log.seg_stop, int(cutoff_ms))[users]
        else:
            # per-row cut-offs: binary search inside each segment (vectorised)
            hist_end = _segment_searchsorted(log.timestamps_ms, start, log.seg_stop[users], cut)
    lengths = np.minimum(hist_end - start, history_len)
    offsets = np.arange(history_len, dtype=np.int64)
    idx = hist_end[:, None] - 1 - offsets[None, :]
    valid = offsets[None, :] < lengths[:, None]
    idx = np.where(valid, idx, 0)
    if log.n_engagements == 0:
        shape = (len(users), history_len)
        return HistoryBatch(np.zeros(shape, np.int64), np.zeros(shape, np.int8),
                            np.zeros(shape, np.int64), lengths)
    item_ids = np.where(valid, log.item_ids[idx], 0)
    actions = np.where(valid, log.actions[idx], 0).astype(np.int8)
    age = np.where(valid, cut[:, None] - log.timestamps_ms[idx], 0)
    return HistoryBatch(item_ids, actions, age, lengths)


def _segment_searchsorted(
    values: np.ndarray, start: np.ndarray, stop: np.ndarray, query: np.ndarray
) -> np.ndarray:
    """Per row ``b``: first index ``i`` in ``[start_b, stop_b)`` with ``values[i] >= query_b``.

    Vectorised bisection over all rows at once (``log2`` of the longest segment steps).
    """
    lo = start.copy()
    hi = stop.copy()
    if len(values) == 0:
        return lo
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        mid_val = values[np.minimum(mid, len(values) - 1)]
        go_right = active & (mid_val < query)
        go_left = active & ~go_right
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(go_left, mid, hi)


def positives_between(
    log: EngagementLog, users: np.ndarray, lo_ms: np.ndarray | int, hi_ms: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray]:
    """``([lo, hi) row ranges, (B,) each)`` of each user's positives with ``lo_ms <= t < hi_ms``."""
    users = np.asarray(users, dtype=np.int64)
    start = log.pos_seg_start[users]
    stop = log.pos_seg_stop[users]
    lo_q = np.broadcast_to(np.asarray(lo_ms, dtype=np.int64), users.shape)
    hi_q = np.broadcast_to(np.asarray(hi_ms, dtype=np.int64), users.shape)
    lo = _segment_searchsorted(log.pos_timestamps_ms, start, stop, lo_q)
    hi = _segment_searchsorted(log.pos_timestamps_ms, start, stop, hi_q)
    return lo, hi


def ranges_to_rows(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand ``[lo_b, hi_b)`` ranges into ``(owner (M,), index (M,))`` without a Python loop."""
    counts = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    first = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    index = first + np.arange(int(counts.sum()), dtype=np.int64)
    return owner, index


# --------------------------------------------------------------------------------------------
# days and item content


def day_str(day_start_ms: int) -> str:
    """``'YYYY-MM-DD'`` of the UTC day holding ``day_start_ms``."""
    return datetime.fromtimestamp(day_start_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def parse_day(day: date | datetime | str | int) -> int:
    """Start (ms, UTC) of a day given as ``date``, ``'YYYY-MM-DD'`` or a ms timestamp in it."""
    if isinstance(day, datetime):
        day = day.astimezone(UTC).date() if day.tzinfo else day.date()
    if isinstance(day, date):
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    if isinstance(day, str):
        try:
            parsed = datetime.strptime(day.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise UserError(f"day {day!r} is not a date; write it as YYYY-MM-DD")
        return int(parsed.timestamp() * 1000)
    if isinstance(day, int | np.integer) and not isinstance(day, bool):
        return int(day) // DAY_MS * DAY_MS
    raise UserError(f"day {day!r} is not a date; write it as YYYY-MM-DD")


def dataset_days(meta: DatasetMeta) -> tuple[int, int]:
    """``(first day start, last day start)`` in ms of the dataset's events."""
    if meta.n_events <= 0 or meta.max_timestamp_ms <= 0:
        raise DatasetError("the dataset has no events: nothing to embed")
    return (meta.min_timestamp_ms // DAY_MS * DAY_MS, meta.max_timestamp_ms // DAY_MS * DAY_MS)


def item_content(dataset_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(content table (max_id + 1, 32), known item ids (I,))`` from items.parquet."""
    items = read_items(dataset_dir)
    if items.num_rows == 0:
        raise DatasetError(f"{dataset_dir}/items.parquet holds no items")
    return item_embedding_table(items), np.sort(items.column("item_id").to_numpy())

