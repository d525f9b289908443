"""Sequence merging: any batching and arrival order gives the offline "as of" sequence."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from features.sequence import (
    SEQ_RECORD,
    decode_sequences,
    empty_sequences,
    encode_sequences,
    merge_sequences,
    sequences_as_of,
)
from features.stream import RawBatch, decode_batch, encode_events
from transact.schema import EVENT_SCHEMA, SEQ_LEN


def _events(n: int, n_users: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "event_id": rng.permutation(n).astype(np.int64) + 1,
            "user_id": rng.integers(1, n_users + 1, n),
            "item_id": rng.integers(1, 50, n),
            "action_type": rng.integers(1, 5, n).astype(np.int8),
            # few distinct timestamps: many ties, broken by event_id
            "timestamp_ms": 1_790_000_000_000 + rng.integers(0, 40, n) * 1000,
            "surface": ["homefeed"] * n,
            "request_id": np.arange(n),
        },
        schema=EVENT_SCHEMA,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("arrival", ["shuffled", "in time order"])
def test_merging_in_any_batches_and_order_equals_the_offline_sequence(seed, arrival):
    # shuffled arrival takes the general (sorting) path, time order the shift+prepend path
    events = _events(3000, 12, seed)  # ~250 events per user: the 100 cap matters
    users = np.arange(1, 13)
    rng = np.random.default_rng(seed + 10)
    state = empty_sequences(len(users))
    if arrival == "shuffled":
        order = rng.permutation(events.num_rows)
    else:
        order = np.lexsort((events.column("event_id").to_numpy(),
                            events.column("timestamp_ms").to_numpy()))
    for chunk in np.array_split(order, rng.integers(2, 30)):
        part = events.take(pa.array(chunk))
        acts = part.column("action_type").to_numpy()
        eng = np.isin(acts, [2, 3, 4])
        state = merge_sequences(
            state, part.column("user_id").to_numpy()[eng] - 1,
            part.column("timestamp_ms").to_numpy()[eng], part.column("event_id").to_numpy()[eng],
            part.column("item_id").to_numpy()[eng], acts[eng])
    ref = sequences_as_of(events, users, 2**62)
    assert np.array_equal(state["item_id"], ref.item_ids)
    assert np.array_equal(state["ts"], ref.timestamps_ms)
    assert np.array_equal(state["action"], ref.action_types)
    assert (ref.lengths == SEQ_LEN).all()
    # newest first, ties by event_id descending, no skips
    ts, eid = state["ts"], state["event_id"]
    newer = ts[:, :-1] > ts[:, 1:]
    tie_newer = (ts[:, :-1] == ts[:, 1:]) & (eid[:, :-1] > eid[:, 1:])
    assert (newer | tie_newer).all()
    assert not (state["action"] == 1).any()


def test_as_of_excludes_actions_at_or_after_the_request_time():
    t = 1_790_000_000_000
    events = pa.table({
        "event_id": [1, 2, 3, 4], "user_id": [1, 1, 1, 1], "item_id": [10, 11, 12, 13],
        "action_type": pa.array([2, 3, 1, 4], pa.int8()),
        "timestamp_ms": [t - 2, t - 1, t - 1, t], "surface": ["homefeed"] * 4,
        "request_id": [1, 1, 1, 1]}, schema=EVENT_SCHEMA)
    seq = sequences_as_of(events, np.array([1, 2]), t)
    assert seq.item_ids[0, :3].tolist() == [11, 10, 0]  # skip (12) and t itself (13) excluded
    assert seq.action_types[0, :2].tolist() == [3, 2]
    assert seq.lengths.tolist() == [2, 0]


def test_packed_state_round_trips_and_rejects_foreign_sizes():
    state = empty_sequences(3)
    state[1, 0] = (5, 6, 7, 2)
    state[2, :] = (9, 9, 9, 3)
    blobs = encode_sequences(state)
    assert [len(b) for b in blobs] == [0, SEQ_RECORD.itemsize, SEQ_LEN * SEQ_RECORD.itemsize]
    back = decode_sequences([blobs[1], None, *blobs])
    assert back[0, 0]["item_id"] == 7 and (back[0, 1:]["action"] == 0).all()
    assert (back[1]["action"] == 0).all() and np.array_equal(back[2:], state)
    with pytest.raises(ValueError, match="wrong size"):
        decode_sequences([b"\x00" * 10])


def test_wire_format_round_trips_and_flags_malformed_messages():
    events = _events(50, 3, 0)
    payloads, surfaces = encode_events(events)
    raw = RawBatch([str(i) for i in range(52)], [*payloads, b"short", None],
                   [*surfaces, b"homefeed", b"homefeed"])
    decoded = decode_batch(raw)
    assert decoded.malformed.tolist() == [50, 51]
    assert decoded.events.equals(events)


def test_equal_timestamps_are_ordered_by_event_id_against_the_stored_head():
    state = empty_sequences(2, 4)
    state[0, 0] = (10, 5, 100, 2)
    state[1, 0] = (10, 5, 100, 2)
    merged = merge_sequences(state, np.array([0, 1]), np.array([10, 10]), np.array([3, 7]),
                             np.array([200, 300]), np.array([3, 4]))
    assert merged["item_id"][0, :2].tolist() == [100, 200]  # eid 3 is older than the head
    assert merged["item_id"][1, :2].tolist() == [300, 100]  # eid 7 is newer
