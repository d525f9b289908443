"""Feast's own Redis online-store layout, encoded and decoded with numpy.

Feast (0.67, ``feast.infra.online_stores.redis``) stores one Redis hash per entity::

    key   = serialize_entity_key(EntityKey(join_keys=[k], entity_values=[v]), 3) + project
    field = mmh3_32_le("<view>:<feature>")  ->  Value proto bytes
    field = "_ts:<view>"                    ->  google.protobuf.Timestamp bytes

The stream processor writes the sequence view in exactly this layout inside its commit
transaction, and the serving read path decodes it directly (no per-feature Python objects), so
``FeatureStore.get_online_features`` and the fast path read the same bytes. Every layout detail
is derived from Feast's own functions at construction time and checked against them in the
tests (``tests/features/test_feast_layout.py``).
"""

from __future__ import annotations

import struct

import mmh3
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.timestamp_pb2 import Timestamp

# Importing anything under ``feast`` runs ``feast/__init__`` (about 12 s of imports here), too
# slow for a processor restart or a serving replica. So this module carries a wire-compatible
# subset of ``feast/types/Value.proto`` (same field numbers and types, hence byte-identical
# serialization) and re-implements Feast's int64 entity-key serialization (version 3) and field
# hashing; ``tests/features/test_feast_layout.py`` checks all three against Feast's own code.

_VALUE_FIELDS = (  # (name, number, type) of feast.types.Value fields used here
    ("int32_val", 3, descriptor_pb2.FieldDescriptorProto.TYPE_INT32, None),
    ("int64_val", 4, descriptor_pb2.FieldDescriptorProto.TYPE_INT64, None),
    ("int32_list_val", 13, descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, "Int32List"),
    ("int64_list_val", 14, descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, "Int64List"),
    ("float_list_val", 16, descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, "FloatList"),
)
_PACKAGE = "transact.feast_value_subset"


def _build_messages() -> dict[str, type]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="transact_feast_value_subset.proto", package=_PACKAGE, syntax="proto3")
    label_rep = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    label_opt = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    for name, typ in (("Int32List", descriptor_pb2.FieldDescriptorProto.TYPE_INT32),
                      ("Int64List", descriptor_pb2.FieldDescriptorProto.TYPE_INT64),
                      ("FloatList", descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT)):
        msg = fdp.message_type.add(name=name)
        msg.field.add(name="val", number=1, type=typ, label=label_rep)
    value = fdp.message_type.add(name="Value")
    value.oneof_decl.add(name="val")
    for name, number, typ, type_name in _VALUE_FIELDS:
        field = value.field.add(name=name, number=number, type=typ, label=label_opt,
                                oneof_index=0)
        if type_name:
            field.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("Int32List", "Int64List", "FloatList", "Value")}


_MESSAGES = _build_messages()
Int32List = _MESSAGES["Int32List"]
Int64List = _MESSAGES["Int64List"]
FloatList = _MESSAGES["FloatList"]
ValueProto = _MESSAGES["Value"]

#: Feast ValueType codes used in entity keys (feast.value_type.ValueType)
_VALUE_TYPE_STRING = 2
_VALUE_TYPE_INT64 = 4


def _mmh3(key: str) -> bytes:
    """Feast's ``helpers._mmh3``: murmur3_32 (unsigned) as 4 little-endian bytes."""
    return struct.pack("<Q", mmh3.hash(key, signed=False))[:4]


def serialize_int64_entity_key(join_key: str, value: int) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) for one int64 join key."""
    key = join_key.encode("utf-8")
    return (struct.pack("<I", 1) + struct.pack("<I", _VALUE_TYPE_STRING)
            + struct.pack("<I", len(key)) + key
            + struct.pack("<I", _VALUE_TYPE_INT64) + struct.pack("<I", 8)
            + struct.pack("<q", value))


def encode_int_lists(values: np.ndarray, field_name: str,
                     lengths: np.ndarray | None = None) -> list[bytes]:
    """``(U, L)`` ints -> one serialized ``Value(<field_name>=...List(val=row))`` per row.

    ``field_name`` is ``"int64_list_val"`` or ``"int32_list_val"``; ``lengths`` ``(U,)`` keeps
    only each row's first entries. (A numpy packed-varint
    encoder was measured slower than protobuf's C implementation, so this uses protobuf.)
    """
    list_type = Int64List if field_name == "int64_list_val" else Int32List
    rows = np.asarray(values).tolist()
    if lengths is not None:  # only the first lengths[u] entries of row u
        rows = [row[:n] for row, n in zip(rows, np.asarray(lengths).tolist(), strict=True)]
    return [ValueProto(**{field_name: list_type(val=row)}).SerializeToString() for row in rows]


def encode_int64(values: np.ndarray) -> list[bytes]:
    """``(U,)`` ints -> serialized ``Value(int64_val=v)`` (byte-identical to protobuf)."""
    return [ValueProto(int64_val=int(v)).SerializeToString() for v in values.tolist()]


def encode_timestamps(timestamp_ms: np.ndarray) -> list[bytes]:
    """``(U,)`` ms -> serialized ``google.protobuf.Timestamp`` (Feast's ``_ts:<view>`` field)."""
    out = []
    for ms in np.asarray(timestamp_ms, dtype=np.int64).tolist():
        stamp = Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)
        out.append(stamp.SerializeToString())
    return out


class FeastRedisLayout:
    """Keys and hash fields of Feast's Redis online store for one project.

    Entity keys of a single int64 join key have a fixed shape (``prefix + int64 LE +
    project``), which lets :meth:`entity_keys` build thousands of keys with numpy.
    """

    def __init__(self, project: str, entity_key_serialization_version: int = 3) -> None:
        if entity_key_serialization_version != 3:
            raise ValueError("only Feast's entity key serialization version 3 is supported")
        self.project = project
        self._prefix: dict[str, bytes] = {}

    def _key_prefix(self, join_key: str) -> bytes:
        if join_key not in self._prefix:
            probe = serialize_int64_entity_key(join_key, 0)
            if not probe.endswith(bytes(8)):
                raise RuntimeError("Feast's entity key layout changed: int64 value not last")
            self._prefix[join_key] = probe[:-8]
        return self._prefix[join_key]

    def entity_key(self, join_key: str, value: int) -> bytes:
        """Feast's Redis key of one entity (scalar reference of :meth:`entity_keys`)."""
        return serialize_int64_entity_key(join_key, value) + self.project.encode("utf-8")

    def entity_keys(self, join_key: str, values: np.ndarray) -> list[bytes]:
        """Feast Redis keys for ``(N,)`` int64 entity values, vectorised."""
        prefix = np.frombuffer(self._key_prefix(join_key), dtype=np.uint8)
        suffix = np.frombuffer(self.project.encode("utf-8"), dtype=np.uint8)
        vals = np.ascontiguousarray(values, dtype="<i8")
        rows = np.empty((len(vals), len(prefix) + 8 + len(suffix)), dtype=np.uint8)
        rows[:, : len(prefix)] = prefix
        rows[:, len(prefix) : len(prefix) + 8] = vals.view(np.uint8).reshape(-1, 8)
        rows[:, len(prefix) + 8 :] = suffix
        width = rows.shape[1]
        buf = rows.tobytes()
        return [buf[i : i + width] for i in range(0, len(buf), width)]

    @staticmethod
    def field(view: str, feature: str) -> bytes:
        """Hash field of one feature (``mmh3("<view>:<feature>")``)."""
        return _mmh3(f"{view}:{feature}")

    @staticmethod
    def ts_field(view: str) -> bytes:
        return f"_ts:{view}".encode()


def float_list_header(dim: int) -> bytes:
    """Bytes before the ``dim`` little-endian floats in ``Value(float_list_val=...)``."""
    probe = ValueProto(float_list_val=FloatList(val=[0.0] * dim)).SerializeToString()
    return probe[: len(probe) - 4 * dim]


def decode_float_lists(blobs: list[bytes | None], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Serialized ``Value(float_list_val)`` blobs -> ``(N, dim)`` float32 and ``(N,)`` found.

    Missing blobs (``None``) give zero rows and ``found = False``. Blobs of the expected fixed
    layout decode in one ``np.frombuffer``; anything else goes through protobuf.
    """
    header = float_list_header(dim)
    size = len(header) + 4 * dim
    out = np.zeros((len(blobs), dim), dtype=np.float32)
    found = np.array([blob is not None for blob in blobs], dtype=bool)
    regular = [i for i, blob in enumerate(blobs) if blob is not None and len(blob) == size]
    if regular:
        joined = b"".join(blobs[i] for i in regular)
        rows = np.frombuffer(joined, dtype=np.uint8).reshape(len(regular), size)
        ok = (rows[:, : len(header)] == np.frombuffer(header, dtype=np.uint8)).all(axis=1)
        floats = rows[:, len(header) :].copy().view("<f4")
        idx = np.asarray(regular)
        out[idx[ok]] = floats[ok]
        irregular = set(idx[~ok].tolist())
    else:
        irregular = set()
    irregular |= {i for i, b in enumerate(blobs) if b is not None and len(b) != size}
    for i in irregular:
        value = ValueProto.FromString(blobs[i])  # type: ignore[arg-type]
        vals = np.asarray(value.float_list_val.val, dtype=np.float32)
        if len(vals) != dim:
            raise ValueError(f"stored embedding has {len(vals)} values, expected {dim}")
        out[i] = vals
    return out, found


def decode_int_list(blob: bytes | None) -> np.ndarray | None:
    """One serialized int64/int32 list Value -> ``(L,)`` int64 (``None`` if missing)."""
    if blob is None:
        return None
    value = ValueProto.FromString(blob)
    kind = value.WhichOneof("val")
    if kind == "int64_list_val":
        return np.asarray(value.int64_list_val.val, dtype=np.int64)
    if kind == "int32_list_val":
        return np.asarray(value.int32_list_val.val, dtype=np.int64)
    if kind is None:
        return np.zeros(0, dtype=np.int64)
    raise ValueError(f"expected an int list, found {kind}")


__all__ = [
    "FeastRedisLayout",
    "FloatList",
    "Int32List",
    "Int64List",
    "ValueProto",
    "decode_float_lists",
    "decode_int_list",
    "encode_int64",
    "encode_int_lists",
    "encode_timestamps",
]
