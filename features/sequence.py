"""Vectorised realtime action sequences: the packed state record, merging, and "as of t".

A user's sequence holds their latest :data:`~transact.schema.SEQ_LEN` engagements
(:data:`~transact.schema.SEQUENCE_ACTIONS`: click, save, hide), newest first, ordered by
``(timestamp_ms desc, event_id desc)`` (a higher event id is later at equal timestamps), padded
with zeros (``action == 0``). The processor keeps it as a structured numpy array of shape
``(U, SEQ_LEN)`` with dtype :data:`SEQ_RECORD`; stored packed, one user is
at most ``SEQ_LEN * SEQ_RECORD.itemsize`` = 2,500 bytes (trailing padding is not stored), so
a batch of users decodes with one ``np.frombuffer`` after re-padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transact.schema import SEQ_LEN, SEQUENCE_ACTIONS

#: One sequence entry. ``action == 0`` (PAD) marks padding.
SEQ_RECORD = np.dtype(
    [("ts", "<i8"), ("event_id", "<i8"), ("item_id", "<i8"), ("action", "i1")]
)
SEQ_BYTES = SEQ_LEN * SEQ_RECORD.itemsize
SEQUENCE_CODES = np.array([int(a) for a in SEQUENCE_ACTIONS], dtype=np.int8)


def empty_sequences(n_users: int, seq_len: int = SEQ_LEN) -> np.ndarray:
    """All-padding state, shape ``(n_users, seq_len)``, dtype :data:`SEQ_RECORD`."""
    return np.zeros((n_users, seq_len), dtype=SEQ_RECORD)


def decode_sequences(blobs: list[bytes | None], seq_len: int = SEQ_LEN) -> np.ndarray:
    """Packed blobs (``None`` = no state yet) -> ``(U, seq_len)`` :data:`SEQ_RECORD` array."""
    size = seq_len * SEQ_RECORD.itemsize
    zero = bytes(size)
    if any(blob is not None and (len(blob) > size or len(blob) % SEQ_RECORD.itemsize)
           for blob in blobs):
        raise ValueError("a stored sequence blob has the wrong size (state written by another "
                         "SEQ_LEN?); clear the processor state and replay the stream")
    joined = b"".join(zero if blob is None else blob.ljust(size, b"\0") for blob in blobs)
    return np.frombuffer(joined, dtype=SEQ_RECORD).reshape(len(blobs), seq_len).copy()


def encode_sequences(sequences: np.ndarray) -> list[bytes]:
    """``(U, seq_len)`` :data:`SEQ_RECORD` array -> one packed blob per user, trailing padding
    cut (a user with ``n`` actions takes ``25 n`` bytes; :func:`decode_sequences` re-pads)."""
    flat = np.ascontiguousarray(sequences).view(np.uint8).reshape(len(sequences), -1)
    n_bytes = (sequences["action"] != 0).sum(axis=1) * SEQ_RECORD.itemsize
    return [row[:n].tobytes() for row, n in zip(flat, n_bytes.tolist(), strict=True)]


def is_engagement(action_type: np.ndarray) -> np.ndarray:
    """Boolean mask of events that enter the sequence (click, save, hide)."""
    return np.isin(action_type, SEQUENCE_CODES)


def merge_sequences(
    state: np.ndarray,
    user_index: np.ndarray,
    timestamp_ms: np.ndarray,
    event_id: np.ndarray,
    item_id: np.ndarray,
    action_type: np.ndarray,
) -> np.ndarray:
    """Insert new engagements into the users' sequences (see :func:`merge_sequences_prepended`,
    which also says which rows were a plain prepend)."""
    return merge_sequences_prepended(state, user_index, timestamp_ms, event_id, item_id,
                                     action_type)[0]


def merge_sequences_prepended(
    state: np.ndarray,
    user_index: np.ndarray,
    timestamp_ms: np.ndarray,
    event_id: np.ndarray,
    item_id: np.ndarray,
    action_type: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Insert new engagements into the users' sequences, in order, and keep the newest.

    Args:
        state: ``(U, L)`` current sequences (:data:`SEQ_RECORD`), newest first.
        user_index: ``(N,)`` row of ``state`` each new engagement belongs to.
        timestamp_ms, event_id, item_id, action_type: ``(N,)`` the new engagements (already
            deduplicated against ``state``; skips must be filtered out by the caller).

    Returns:
        ``(U, L)`` merged sequences ordered by ``(ts desc, event_id desc)``, zero-padded (late
        events land at their place in time, not at the front), and ``(U,)`` int64
        ``prepended``: ``k >= 0`` when row ``u`` is its ``k`` new events followed by its old
        entries (``out[u, k:] == state[u, :L - k]``), ``-1`` when an out-of-order event was
        inserted (the writer can then reuse the old row's encoding only for a prepend).

    Rows whose new events are all newer than their current head (the common, in-order case)
    are a shift plus a prepend, done with index arithmetic over the ``(U, L)`` grid; only rows
    receiving an out-of-order event go through the general sort.
    """
    n_users, seq_len = state.shape
    user_index = np.asarray(user_index, dtype=np.int64)
    ts = np.asarray(timestamp_ms, dtype=np.int64)
    eid = np.asarray(event_id, dtype=np.int64)
    order = np.lexsort((-eid, -ts, user_index))  # new events: user asc, newest first
    users, ts, eid = user_index[order], ts[order], eid[order]
    item = np.asarray(item_id, dtype=np.int64)[order]
    action = np.asarray(action_type, dtype=np.int8)[order]
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # in order: the row's oldest new event is newer than its current head (or it is empty)
    oldest_new = np.where(counts > 0, starts + counts - 1, 0)
    head = state[:, 0]
    new_ts, new_eid = ts[oldest_new] if len(ts) else head["ts"], (
        eid[oldest_new] if len(eid) else head["event_id"])
    in_order = (counts == 0) | (head["action"] == 0) | (new_ts > head["ts"]) | (
        (new_ts == head["ts"]) & (new_eid > head["event_id"]))

    # row u = its counts[u] new events, then its old entries shifted right (flat gathers on
    # each native-dtype field; a structured take_along_axis was the merge's main cost)
    out = np.empty_like(state)
    col = np.arange(seq_len)[None, :]
    shifted = col - counts[:, None]  # (U, L) old column feeding each slot, < 0: a new event
    from_new = shifted < 0
    new_idx = np.minimum(starts[:, None] + col, max(len(ts) - 1, 0))
    old_flat = (np.arange(n_users) * seq_len)[:, None] + np.clip(shifted, 0, seq_len - 1)
    for name, values in (("ts", ts), ("event_id", eid), ("item_id", item),
                         ("action", action)):
        old = state[name].reshape(-1)[old_flat]  # counts >= 0, so shifted <= col: in range
        fresh = values[new_idx] if len(values) else np.zeros_like(old)
        out[name] = np.where(from_new, fresh, old)
    slow = np.flatnonzero(~in_order)
    if len(slow):
        pick = np.isin(users, slow)
        out[slow] = _merge_sorted(state[slow], np.searchsorted(slow, users[pick]), ts[pick],
                                  eid[pick], item[pick], action[pick])
    prepended = np.where(in_order, np.minimum(counts, seq_len), -1).astype(np.int64)
    return out, prepended


def _merge_sorted(
    state: np.ndarray,
    user_index: np.ndarray,
    ts_new: np.ndarray,
    eid_new: np.ndarray,
    item_new: np.ndarray,
    action_new: np.ndarray,
) -> np.ndarray:
    """General merge (any arrival order): sort old + new entries per row, keep the first L."""
    n_users, seq_len = state.shape
    old_rows, old_cols = np.nonzero(state["action"] != 0)
    old = state[old_rows, old_cols]
    users = np.concatenate([old_rows, user_index])
    ts = np.concatenate([old["ts"], ts_new])
    eid = np.concatenate([old["event_id"], eid_new])
    item = np.concatenate([old["item_id"], item_new])
    action = np.concatenate([old["action"], action_new])
    order = np.lexsort((-eid, -ts, users))
    users = users[order]
    group_start = np.searchsorted(users, users, side="left")
    rank = np.arange(len(users)) - group_start
    keep = rank < seq_len
    out = empty_sequences(n_users, seq_len)
    rows, cols = users[keep], rank[keep]
    kept = order[keep]
    out["ts"][rows, cols] = ts[kept]
    out["event_id"][rows, cols] = eid[kept]
    out["item_id"][rows, cols] = item[kept]
    out["action"][rows, cols] = action[kept]
    return out


@dataclass
class SequenceArrays:
    """Sequences as model-ready arrays, newest first, zero-padded.

    ``item_ids`` ``(U, L)`` int64, ``action_types`` ``(U, L)`` int8, ``timestamps_ms``
    ``(U, L)`` int64, ``lengths`` ``(U,)`` int16.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    action_types: np.ndarray
    timestamps_ms: np.ndarray
    lengths: np.ndarray


def to_arrays(user_ids: np.ndarray, state: np.ndarray) -> SequenceArrays:
    """:data:`SEQ_RECORD` state ``(U, L)`` -> :class:`SequenceArrays`."""
    return SequenceArrays(
        user_ids=np.asarray(user_ids, dtype=np.int64),
        item_ids=state["item_id"].copy(),
        action_types=state["action"].copy(),
        timestamps_ms=state["ts"].copy(),
        lengths=(state["action"] != 0).sum(axis=1).astype(np.int16),
    )


def sequences_as_of(
    events: pa.Table, user_ids: np.ndarray, as_of_ms: int | np.ndarray, seq_len: int = SEQ_LEN
) -> SequenceArrays:
    """Offline reference: each user's sequence of engagements strictly before ``as_of_ms``.

    Args:
        events: events with at least ``user_id``, ``item_id``, ``action_type``,
            ``timestamp_ms``, ``event_id`` (EVENT_SCHEMA columns), any order.
        user_ids: ``(U,)`` users to compute.
        as_of_ms: a request time, or ``(U,)`` one per user.

    Returns:
        :class:`SequenceArrays` in ``user_ids`` order (what the stream's online state must equal
        after replaying every event with ``timestamp_ms < as_of_ms``).
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    as_of = np.broadcast_to(np.asarray(as_of_ms, dtype=np.int64), user_ids.shape)
    ev_user = events.column("user_id").to_numpy()
    order = np.argsort(user_ids, kind="stable")
    sorted_users = user_ids[order]
    pos = np.searchsorted(sorted_users, ev_user)
    pos_clipped = np.minimum(pos, len(sorted_users) - 1)
    known = (len(sorted_users) > 0) & (sorted_users[pos_clipped] == ev_user)
    ev_ts = events.column("timestamp_ms").to_numpy()
    action = pc.cast(events.column("action_type"), pa.int8()).to_numpy()
    row = order[pos_clipped]
    mask = known & is_engagement(action) & (ev_ts < as_of[row])
    state = merge_sequences(
        empty_sequences(len(user_ids), seq_len),
        row[mask],
        ev_ts[mask],
        events.column("event_id").to_numpy()[mask],
        events.column("item_id").to_numpy()[mask],
        action[mask],
    )
    return to_arrays(user_ids, state)
