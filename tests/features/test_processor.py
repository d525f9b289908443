"""Stream processor semantics over the embedded SQLite queue (no server needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.processor import OfflineLog, ProcessorConfig, StreamProcessor
from features.replay import stream_scenario
from features.sequence import sequences_as_of
from features.state import ProcessorFenced, SqliteProcessorStore
from features.stream import SqliteEventQueue
from transact.data.counters import EngagementCounters
from transact.errors import UserError
from transact.schema import HOUR_MS, MAX_TIMESTAMP_MS


def expected_counts(accepted: pa.Table, side: str, keys: np.ndarray) -> np.ndarray:
    """The offline counters (the example builder's) over every accepted event: ``(K, 4)``."""
    counters = EngagementCounters(accepted.column(f"{side}_id").to_numpy(),
                                  accepted.column("timestamp_ms").to_numpy(),
                                  accepted.column("action_type").to_numpy())
    return counters.lookup(keys, np.full(len(keys), MAX_TIMESTAMP_MS)).astype(np.int64)


def _processor(tmp_path, batch_size=500, **cfg) -> StreamProcessor:
    queue = SqliteEventQueue(tmp_path / "queue.db")
    store = SqliteProcessorStore(queue)
    return StreamProcessor(store, OfflineLog(tmp_path / "log"),
                           ProcessorConfig(batch_size=batch_size, block_ms=0, **cfg))


def _sorted_ids(table: pa.Table) -> list[int]:
    return sorted(table.column("event_id").to_pylist())


def test_processor_accepts_each_valid_event_once_and_dead_letters_the_rest(tmp_path):
    sc = stream_scenario(6000, n_users=40, duplicate_rate=0.05, invalid_rate=0.02,
                         too_late_rate=0.01, jitter_ms=120_000, seed=3)
    queue = SqliteEventQueue(tmp_path / "queue.db")
    queue.publish(sc.published)
    queue.publish_raw([{b"e": b"not an event", b"s": b"homefeed"}])
    proc = _processor(tmp_path, batch_size=333)
    total = proc.run()
    assert total.messages == sc.published.num_rows + 1
    assert total.accepted == sc.accepted.num_rows
    assert total.duplicates == sc.duplicates
    assert total.dead == {**sc.dead, "malformed": 1}

    dead = queue.dead_letters()
    reasons = dead.column("reason").to_pylist()
    assert {r: reasons.count(r) for r in set(reasons)} == total.dead
    assert len(set(dead.column("message_id").to_pylist())) == dead.num_rows

    users = np.arange(1, 41)
    ref = sequences_as_of(sc.accepted, users, 2**62)
    state = proc.store.load_sequences(users)
    assert np.array_equal(state["item_id"], ref.item_ids)
    assert np.array_equal(state["action"], ref.action_types)
    assert np.array_equal(state["ts"], ref.timestamps_ms)

    log = OfflineLog(tmp_path / "log").read()
    assert _sorted_ids(log) == _sorted_ids(sc.accepted)  # skips logged too, each once
    assert proc.store.stats()["accepted"] == sc.accepted.num_rows
    assert queue.backlog() == 0

    # engagement counters: every accepted event once (skips as impressions); duplicates and
    # dead letters never counted; the same numbers the example builder computes offline
    items = np.unique(sc.published.column("item_id").to_numpy())
    assert np.array_equal(proc.store.load_counters("item", items),
                          expected_counts(sc.accepted, "item", items))
    assert np.array_equal(proc.store.load_counters("user", users),
                          expected_counts(sc.accepted, "user", users))
    assert proc.store.load_counters("user", users)[:, 0].sum() == sc.accepted.num_rows


def test_result_does_not_depend_on_batch_size(tmp_path):
    sc = stream_scenario(1500, n_users=25, duplicate_rate=0.1, too_late_rate=0.02,
                         jitter_ms=200_000, seed=5)
    states, counts = [], []
    for batch in (11, 1000):
        root = tmp_path / f"b{batch}"
        SqliteEventQueue(root / "queue.db").publish(sc.published)
        proc = _processor(root, batch_size=batch)
        proc.run()
        states.append(proc.store.load_sequences(np.arange(1, 26)))
        counts.append(proc.store.load_counters("user", np.arange(1, 26)))
        assert _sorted_ids(OfflineLog(root / "log").read()) == _sorted_ids(sc.accepted)
    assert np.array_equal(states[0], states[1])
    assert np.array_equal(counts[0], counts[1])


def test_replayed_stream_is_deduplicated_and_late_copies_are_dead_lettered(tmp_path):
    sc = stream_scenario(2000, n_users=10, span_ms=120_000, jitter_ms=10_000, seed=1)
    queue = SqliteEventQueue(tmp_path / "queue.db")
    queue.publish(sc.published)
    proc = _processor(tmp_path)
    proc.run()
    before = proc.store.load_sequences(np.arange(1, 11))
    # a producer retry: everything again; within the lateness bound -> duplicates
    queue.publish(sc.published)
    again = proc.run()
    assert again.accepted == 0 and again.duplicates == sc.published.num_rows
    assert np.array_equal(proc.store.load_sequences(np.arange(1, 11)), before)
    assert OfflineLog(tmp_path / "log").read().num_rows == sc.accepted.num_rows


def test_late_event_within_bound_is_inserted_in_time_order(tmp_path):
    sc = stream_scenario(10, n_users=1, engagement_rate=1.0, span_ms=10_000, jitter_ms=0)
    queue = SqliteEventQueue(tmp_path / "queue.db")
    queue.publish(sc.published)
    proc = _processor(tmp_path, allowed_lateness_ms=60_000)
    proc.run()
    first_ts = int(pc.min(sc.accepted.column("timestamp_ms")).as_py())
    late = sc.accepted.slice(0, 1).set_column(
        0, "event_id", pa.array([10_000], pa.int64())).set_column(
        4, "timestamp_ms", pa.array([first_ts - 30_000], pa.int64()))
    too_late = late.set_column(0, "event_id", pa.array([10_001], pa.int64())).set_column(
        4, "timestamp_ms", pa.array([first_ts - HOUR_MS], pa.int64()))
    queue.publish(pa.concat_tables([late, too_late]))
    result = proc.run()
    assert result.accepted == 1 and result.dead == {"too late": 1}
    seq = proc.store.load_sequences(np.array([1]))[0]
    assert int(seq["event_id"][10]) == 10_000  # oldest of 11, at the end: in time order
    assert (np.diff(seq["ts"][:11]) <= 0).all()


def test_a_second_processor_fences_the_first(tmp_path):
    sc = stream_scenario(200, n_users=5, seed=2)
    SqliteEventQueue(tmp_path / "queue.db").publish(sc.published)
    old = _processor(tmp_path, batch_size=50)
    old.step()
    new = _processor(tmp_path, batch_size=50)  # takes over the pending messages
    with pytest.raises(ProcessorFenced):
        old.step()
    new.run()
    assert _sorted_ids(OfflineLog(tmp_path / "log").read()) == _sorted_ids(sc.accepted)


def test_bad_configuration_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="batch_size"):
        ProcessorConfig(batch_size=0).validate()
