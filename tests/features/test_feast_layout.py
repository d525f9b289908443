"""The feast-free layout code must produce Feast's exact Redis keys, fields and values."""

from __future__ import annotations

import numpy as np
import pytest

from features.feast_layout import (
    FeastRedisLayout,
    decode_float_lists,
    decode_int_list,
    encode_int64,
    encode_int_lists,
    encode_timestamps,
)


@pytest.mark.slow  # importing feast takes seconds
def test_keys_fields_and_values_are_byte_identical_to_feasts_own():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import FloatList, Int32List, Int64List, Value
    from google.protobuf.timestamp_pb2 import Timestamp

    layout = FeastRedisLayout("proj_x")
    ids = np.array([1, 7, 2**40 + 3, 2**63 - 1], dtype=np.int64)
    ours = layout.entity_keys("user_id", ids)
    for value, key in zip(ids.tolist(), ours, strict=True):
        ek = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=value)])
        assert key == _redis_key("proj_x", ek, 3)
        assert key == serialize_entity_key(ek, 3) + b"proj_x"
        assert layout.entity_key("user_id", value) == key
    assert FeastRedisLayout.field("v", "f") == _mmh3("v:f")

    rows = np.array([[0, 1, 127, 128, 2**35, 2**62], [5, 0, 0, 0, 0, 0]], dtype=np.int64)
    assert encode_int_lists(rows, "int64_list_val") == [
        Value(int64_list_val=Int64List(val=r)).SerializeToString() for r in rows.tolist()]
    small = rows[:, :3].astype(np.int32)
    assert encode_int_lists(small, "int32_list_val") == [
        Value(int32_list_val=Int32List(val=r)).SerializeToString() for r in small.tolist()]
    assert encode_int64(np.array([0, 99])) == [
        Value(int64_val=v).SerializeToString() for v in (0, 99)]
    stamp = Timestamp(seconds=1_790_000_000, nanos=123_000_000).SerializeToString()
    assert encode_timestamps(np.array([1_790_000_000_123])) == [stamp]

    floats = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    blobs = [Value(float_list_val=FloatList(val=r)).SerializeToString() for r in floats]
    decoded, found = decode_float_lists([*blobs, None], 32)
    assert np.array_equal(decoded[:5], floats) and found.tolist() == [True] * 5 + [False]
    assert (decoded[5] == 0).all()
    assert decode_int_list(encode_int_lists(rows, "int64_list_val")[0]).tolist() == rows[0].tolist()
