"""The processor's fast Feast value encoding: vectorised protobuf wire format and the
incremental (cached, prepend-only) re-encoding must give exactly the bytes protobuf/Feast
would write, whatever the values, batching and arrival order."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from features.feast_layout import (
    FeastRedisLayout,
    Int32List,
    Int64List,
    ValueProto,
    encode_int64,
    encode_int_lists,
    encode_timestamps,
    varint_sizes,
)
from features.names import SEQUENCE_VIEW
from features.processor import OfflineLog, ProcessorConfig, StreamProcessor
from features.replay import stream_scenario
from features.sequence import empty_sequences, merge_sequences_prepended, sequences_as_of
from features.state import (
    RedisProcessorStore,
    SequenceEncodingCache,
    encode_sequence_update,
    feast_sequence_fields,
)
from features.stream import RedisEventStream


def _edge_values(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """int64 values covering every varint length (1..10 bytes) and the sign boundary."""
    edges = np.array([0, 1, 127, 128, 16_383, 16_384, 2**21 - 1, 2**21, 2**35, 2**42,
                      2**49, 2**56 - 1, 2**56, 2**62, 2**63 - 1, -1, -128, -(2**40), -(2**63)],
                     dtype=np.int64)
    values = rng.integers(-(2**63), 2**63 - 1, shape, dtype=np.int64)
    small = rng.random(shape) < 0.5
    values[small] = rng.integers(0, 2**42, int(small.sum()))
    pick = rng.random(shape) < 0.3
    values[pick] = rng.choice(edges, int(pick.sum()))
    return values


def test_varint_sizes_match_protobuf():
    values = _edge_values(np.random.default_rng(0), (40, 50))
    sizes = varint_sizes(values)
    for v, size in zip(values.ravel().tolist(), sizes.ravel().tolist(), strict=True):
        # Int64List(val=[v]) = 0x0A, length, varint(v): the length byte is the varint size
        assert Int64List(val=[v]).SerializeToString()[1] == size


def test_vectorised_encoders_are_byte_identical_to_protobuf():
    rng = np.random.default_rng(1)
    values = _edge_values(rng, (300, 100))
    lengths = rng.integers(0, 101, 300)
    lengths[:3] = (0, 100, 1)
    assert encode_int_lists(values, "int64_list_val", lengths) == [
        ValueProto(int64_list_val=Int64List(val=row[:n])).SerializeToString()
        for row, n in zip(values.tolist(), lengths.tolist(), strict=True)]
    as_int32 = rng.integers(-(2**31), 2**31 - 1, (300, 100)).astype(np.int32)
    assert encode_int_lists(as_int32, "int32_list_val", lengths) == [
        ValueProto(int32_list_val=Int32List(val=row[:n])).SerializeToString()
        for row, n in zip(as_int32.tolist(), lengths.tolist(), strict=True)]
    scalars = values[:, 0]
    assert encode_int64(scalars) == [ValueProto(int64_val=v).SerializeToString()
                                     for v in scalars.tolist()]
    stamps_ms = np.concatenate([rng.integers(-(2**45), 2**45, 500),
                                [0, 1, 999, 1000, -1, -1000, 1_790_000_000_123]])
    assert encode_timestamps(stamps_ms) == [
        Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000).SerializeToString()
        for ms in stamps_ms.tolist()]
    assert encode_int_lists(values[:0], "int64_list_val") == []


@pytest.mark.slow  # importing feast takes seconds
def test_vectorised_encoders_match_feasts_own_value_proto():
    from feast.protos.feast.types.Value_pb2 import Int32List as FeastInt32List
    from feast.protos.feast.types.Value_pb2 import Int64List as FeastInt64List
    from feast.protos.feast.types.Value_pb2 import Value

    rng = np.random.default_rng(2)
    values = _edge_values(rng, (50, 100))
    lengths = rng.integers(0, 101, 50)
    assert encode_int_lists(values, "int64_list_val", lengths) == [
        Value(int64_list_val=FeastInt64List(val=row[:n])).SerializeToString()
        for row, n in zip(values.tolist(), lengths.tolist(), strict=True)]
    actions = rng.integers(0, 5, (50, 100)).astype(np.int32)
    assert encode_int_lists(actions, "int32_list_val", lengths) == [
        Value(int32_list_val=FeastInt32List(val=row[:n])).SerializeToString()
        for row, n in zip(actions.tolist(), lengths.tolist(), strict=True)]
    assert encode_int64(lengths) == [Value(int64_val=n).SerializeToString()
                                     for n in lengths.tolist()]


def _flat_reference(sequences: np.ndarray) -> list[bytes]:
    mappings = feast_sequence_fields(sequences)
    return [value for m in mappings for value in m.values()]


def test_incremental_encoding_equals_a_full_encoding_batch_after_batch():
    """Users cached or not, in-order prepends, late inserts, the 100 cap, cache eviction."""
    rng = np.random.default_rng(3)
    n_users, seq_len = 60, 100
    state = empty_sequences(n_users, seq_len)
    cache = SequenceEncodingCache(max_users=40)  # smaller than the user count: evictions
    next_id = 1
    now = 1_790_000_000_000
    reused = 0
    for _batch in range(80):
        n = int(rng.integers(1, 200))
        users = rng.integers(0, n_users, n)
        now += int(rng.integers(0, 5_000))
        late = rng.random(n) < 0.1  # some land behind the user's head: a real insert
        ts = np.where(late, now - rng.integers(1, 200_000, n), now + rng.integers(0, 1000, n))
        ids = np.arange(next_id, next_id + n)
        next_id += n
        items = np.where(rng.random(n) < 0.2, rng.integers(1, 2**40, n), rng.integers(1, 300, n))
        actions = rng.integers(2, 5, n).astype(np.int8)
        touched = np.unique(users)
        new, prepended = merge_sequences_prepended(
            state[touched], np.searchsorted(touched, users), ts, ids, items, actions)
        cached = [cache.get(int(u)) for u in touched]
        reused += sum(c is not None and k >= 0 for c, k in
                      zip(cached, prepended.tolist(), strict=True))
        values, bodies = encode_sequence_update(new, prepended, cached)
        assert values == _flat_reference(new)
        cache.update(touched.tolist(), [(b"", *entry) for entry in bodies])
        assert len(cache.entries) <= 40
        state[touched] = new
    assert reused > 100  # the incremental path was exercised, not only the full one
    assert (state["action"] != 0).sum(axis=1).max() == seq_len  # some users hit the cap
    # no cache information at all: full encoding, same bytes
    assert encode_sequence_update(state, None, [None] * n_users)[0] == _flat_reference(state)


@pytest.mark.services
def test_cached_processor_writes_feasts_bytes_and_drops_its_cache_when_fenced(tmp_path,
                                                                              redis_client):
    client = redis_client
    prefix = f"transact_test:{uuid.uuid4().hex[:8]}:"
    project = f"p{uuid.uuid4().hex[:8]}"

    def processor() -> StreamProcessor:
        store = RedisProcessorStore(RedisEventStream(client, prefix), project, cache_users=25)
        return StreamProcessor(store, OfflineLog(tmp_path / "log"),
                               ProcessorConfig(batch_size=400, block_ms=0))

    try:
        sc = stream_scenario(6000, n_users=40, duplicate_rate=0.03, jitter_ms=120_000,
                             engagement_rate=0.6, seed=5)
        stream = RedisEventStream(client, prefix)
        stream.publish(sc.published.slice(0, 4000))
        proc = processor()
        proc.run()
        assert len(proc.store.cache.entries) == 25  # bounded, and in use
        newer = processor()  # fences the first one
        stream.publish(sc.published.slice(4000))
        with pytest.raises(Exception, match="superseded"):
            proc.step()
        assert proc.store.cache.entries == {}
        newer.run()

        users = np.arange(1, 41)
        ref = sequences_as_of(sc.accepted, users, 2**62)
        state = newer.store.sequences_for_read(users)
        assert np.array_equal(state["item_id"], ref.item_ids)
        layout = FeastRedisLayout(project)
        expected = feast_sequence_fields(state)
        names = list(expected[0])
        for key, want in zip(layout.entity_keys("user_id", users), expected, strict=True):
            stored = client.hmget(key, names)
            assert stored == [want[name] for name in names]
        assert FeastRedisLayout.field(SEQUENCE_VIEW, "seq_item_ids") in names
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        stale = [k for k in client.scan_iter(count=1000) if k.endswith(project.encode())]
        if stale:
            client.delete(*stale)


def test_fast_entity_key_equals_the_reference_serialisation():
    layout = FeastRedisLayout("proj_y")
    for value in (1, 7, 2**40 + 3, 2**63 - 1, -5):
        assert layout.entity_key_fast("user_id", value) == layout.entity_key("user_id", value)
        assert layout.entity_key_fast("user_id", value) == layout.entity_keys(
            "user_id", np.array([value]))[0]


def test_cache_size_must_not_be_negative():
    from transact.errors import UserError

    with pytest.raises(UserError, match="state_cache_users"):
        ProcessorConfig(state_cache_users=-1).validate()


def test_freeze_startup_heap_takes_live_objects_out_of_the_collector():
    import gc

    from features.online import freeze_startup_heap

    try:
        frozen = freeze_startup_heap()
        # another thread (a pool, a client library) may free a few frozen objects meanwhile
        assert frozen > 1000 and frozen - 1000 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
