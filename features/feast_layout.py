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


_INT64_LE = struct.Struct("<q")


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


# --------------------------------------------------------------------------- wire encoding
# Protobuf's wire format for the few Value shapes the processor writes, vectorised over all
# touched users at once (the per-row protobuf path cost ~25 us per user, most of the
# processor's time). Byte-for-byte equality with protobuf/Feast is checked by
# ``tests/features/test_fast_encoding.py``.
#
#   Value(int64_list_val=Int64List(val=v))  = 0x72 varint(len(inner)) inner,
#       inner = 0x0A varint(len(packed)) packed, packed = varint(v_0) varint(v_1) ...
#       (an empty list: 0x72 0x00 — the oneof is set, the empty packed field is omitted)
#   Value(int32_list_val=...)                = the same with tag 0x6A (negatives sign-extended
#       to 64 bits, 10 bytes, as protobuf does)
#   Value(int64_val=v)                      = 0x20 varint(v) (oneof: written even when 0)
#   Timestamp(seconds=s, nanos=n)           = [0x08 varint(s)] [0x10 varint(n)] (zeros omitted)

_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_LIST_TAGS = {"int64_list_val": 0x72, "int32_list_val": 0x6A}
_INT64_VAL_TAG = 0x20
_PACKED_TAG = 0x0A  # field 1 (val), wire type 2


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of each value's varint (``values`` as uint64: negatives take 10), same shape."""
    v = np.asarray(values).astype(np.int64, copy=False)
    if v.size == 0:
        return np.zeros(v.shape, dtype=np.int64)
    if int(v.min()) < 0:
        return np.searchsorted(_VARINT_LIMITS, v.view(np.uint64), side="right") + 1
    top = int(v.max())
    sizes = np.ones(v.shape, dtype=np.int64)
    for k in range(1, 9):  # only the thresholds below the largest value
        limit = 1 << (7 * k)
        if top < limit:
            break
        sizes += v >= limit
    return sizes


#: byte k of a varint of n bytes carries the continuation bit when k < n - 1 / exists when k < n
_CONT_BITS = np.array([sum(0x80 << (8 * k) for k in range(max(n - 1, 0))) for n in range(9)],
                      dtype=np.uint64)
_BYTE_EXISTS = np.arange(8)[None, :] < np.arange(9)[:, None]  # (size, byte) bool


def varint_matrix(values: np.ndarray, keep: np.ndarray | None = None,
                  width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Varints of ``(U, K)`` ints, laid out ``(U, K * width)`` uint8 plus a keep-mask.

    Reading row ``u``'s masked bytes in order gives ``varint(v[u, 0]) varint(v[u, 1]) ...``
    for the entries where ``keep`` (``(U, K)`` bool, default all) is true. ``width`` (bytes per
    value slot) is 8 (or 10 when a value needs more than 8 varint bytes, i.e. >= 2**56 or
    negative).

    Values below 2**56 are spread 7 bits per byte inside one little-endian uint64 (a handful
    of whole-array shifts), so the layout is a zero-copy view; the rare longer ones take the
    general per-byte path.
    """
    v = np.asarray(values).astype(np.int64, copy=False)
    n_rows, n_cols = v.shape
    sizes = varint_sizes(v)
    top = int(sizes.max()) if sizes.size else 1
    if top > 8 or (width is not None and width != 8):
        return _varint_matrix_general(v, sizes, keep, max(top, width or 0))
    u = v.view(np.uint64)
    spread = u & np.uint64(0x7F)
    for k in range(1, top):
        spread |= ((u >> np.uint64(7 * k)) & np.uint64(0x7F)) << np.uint64(8 * k)
    spread |= _CONT_BITS[sizes]
    mask = _BYTE_EXISTS[sizes]  # (U, K, 8)
    if keep is not None:
        mask &= keep[..., None]
    data = spread.astype("<u8", copy=False).view(np.uint8)
    return data.reshape(n_rows, n_cols * 8), mask.reshape(n_rows, n_cols * 8)


def _varint_matrix_general(v: np.ndarray, sizes: np.ndarray, keep: np.ndarray | None,
                           width: int) -> tuple[np.ndarray, np.ndarray]:
    n_rows, n_cols = v.shape
    groups = np.empty((n_rows, n_cols, width), dtype=np.uint8)
    mask = np.empty((n_rows, n_cols, width), dtype=bool)
    rest = v.view(np.uint64).copy()
    for k in range(width):
        byte = (rest & np.uint64(0x7F)).astype(np.uint8)
        byte |= (sizes > k + 1).view(np.uint8) << 7
        groups[:, :, k] = byte
        mask[:, :, k] = sizes > k
        rest >>= np.uint64(7)
    if keep is not None:
        mask &= keep[..., None]
    return groups.reshape(n_rows, -1), mask.reshape(n_rows, -1)


def _rows_bytes(blocks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[bytes, np.ndarray]:
    """Concatenate masked ``(U, w_i)`` byte blocks row by row: one buffer + ``(U + 1,)`` row
    offsets into it."""
    data = np.concatenate([b for b, _ in blocks], axis=1)
    mask = np.concatenate([m for _, m in blocks], axis=1)
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    return data[mask].tobytes(), offsets


def _const(n_rows: int, byte: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_rows, 1), byte, dtype=np.uint8), np.ones((n_rows, 1), dtype=bool)


def int_list_blocks(values: np.ndarray, field_name: str,
                    lengths: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Masked byte blocks of ``Value(<field_name>=...List(val=row[:n]))`` for ``(U, L)`` rows
    (see :func:`_rows_bytes`)."""
    if field_name not in _LIST_TAGS:
        raise ValueError(f"unsupported list field {field_name!r}")
    vals = np.asarray(values)
    if field_name == "int32_list_val":
        vals = vals.astype(np.int32).astype(np.int64)  # protobuf sign-extends int32
    vals = vals.astype(np.int64, copy=False)
    n_rows, n_cols = vals.shape
    n = (np.full(n_rows, n_cols, dtype=np.int64) if lengths is None
         else np.minimum(np.asarray(lengths, dtype=np.int64), n_cols))
    keep = np.arange(n_cols)[None, :] < n[:, None]
    sizes = np.where(keep, varint_sizes(vals), 0)
    packed_len = sizes.sum(axis=1)
    inner_len = np.where(n > 0, 1 + varint_sizes(packed_len) + packed_len, 0)
    nonempty = (n > 0)[:, None]
    outer = varint_matrix(inner_len[:, None])
    packed_head = varint_matrix(packed_len[:, None], keep=nonempty)
    tag = _const(n_rows, _PACKED_TAG)
    return [
        _const(n_rows, _LIST_TAGS[field_name]), outer,
        (tag[0], tag[1] & nonempty), packed_head,
        varint_matrix(vals, keep=keep),
    ]


def int64_value_blocks(values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Masked byte blocks of ``Value(int64_val=v)`` for ``(U,)`` values."""
    vals = np.asarray(values, dtype=np.int64)
    return [_const(len(vals), _INT64_VAL_TAG), varint_matrix(vals[:, None])]


def timestamp_blocks(timestamp_ms: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Masked byte blocks of ``google.protobuf.Timestamp`` for ``(U,)`` epoch ms."""
    ms = np.asarray(timestamp_ms, dtype=np.int64)
    seconds, nanos = ms // 1000, (ms % 1000) * 1_000_000
    n_rows = len(ms)
    has_s, has_n = (seconds != 0)[:, None], (nanos != 0)[:, None]
    tag_s, tag_n = _const(n_rows, 0x08), _const(n_rows, 0x10)
    return [(tag_s[0], tag_s[1] & has_s), varint_matrix(seconds[:, None], keep=has_s),
            (tag_n[0], tag_n[1] & has_n), varint_matrix(nanos[:, None], keep=has_n)]


def _split(buf: bytes, offsets: np.ndarray) -> list[bytes]:
    bounds = offsets.tolist()
    return [buf[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def encode_int_lists(values: np.ndarray, field_name: str,
                     lengths: np.ndarray | None = None) -> list[bytes]:
    """``(U, L)`` ints -> one serialized ``Value(<field_name>=...List(val=row))`` per row.

    ``field_name`` is ``"int64_list_val"`` or ``"int32_list_val"``; ``lengths`` ``(U,)`` keeps
    only each row's first entries. Vectorised wire encoding, byte-identical to protobuf.
    """
    vals = np.asarray(values)
    if len(vals) == 0:
        return []
    return _split(*_rows_bytes(int_list_blocks(vals, field_name, lengths)))


def encode_int64(values: np.ndarray) -> list[bytes]:
    """``(U,)`` ints -> serialized ``Value(int64_val=v)`` (byte-identical to protobuf)."""
    vals = np.asarray(values, dtype=np.int64).reshape(-1)
    if len(vals) == 0:
        return []
    return _split(*_rows_bytes(int64_value_blocks(vals)))


def encode_timestamps(timestamp_ms: np.ndarray) -> list[bytes]:
    """``(U,)`` ms -> serialized ``google.protobuf.Timestamp`` (Feast's ``_ts:<view>`` field)."""
    ms = np.asarray(timestamp_ms, dtype=np.int64).reshape(-1)
    if len(ms) == 0:
        return []
    return _split(*_rows_bytes(timestamp_blocks(ms)))


def packed_varints(values: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """``(U, K)`` ints -> per row, the concatenated varints of its first ``lengths[u]`` values
    (the body of a packed repeated int field; int32 callers pass sign-extended int64)."""
    vals = np.asarray(values).astype(np.int64, copy=False)
    if len(vals) == 0:
        return []
    keep = np.arange(vals.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return _split(*_rows_bytes([varint_matrix(vals, keep=keep)]))


def list_header_sizes(value_len: np.ndarray) -> np.ndarray:
    """Header bytes (tag, lengths) of serialized int-list ``Value``s of ``(U,)`` total sizes.

    ``total = 1 + vs(I) + I`` with ``I = 1 + vs(P) + P`` for a ``P``-byte packed body (``vs``:
    varint size), or 2 for an empty list; both equations have one consistent solution.
    """
    total = np.asarray(value_len, dtype=np.int64)

    def strip(x: np.ndarray) -> np.ndarray:  # x = vs(y) + y  ->  y
        y = x - 1
        for size in range(2, 5):
            cand = x - size
            y = np.where(varint_sizes(np.maximum(cand, 0)) == size, cand, y)
        return y

    inner = strip(total - 1)
    body = np.where(inner > 0, strip(np.maximum(inner - 1, 1)), 0)
    return total - body


def list_value_headers(field_name: str, payload_len: np.ndarray) -> list[bytes]:
    """Bytes before the packed body in ``Value(<field_name>=...List(val=...))`` for bodies of
    ``(U,)`` ``payload_len`` bytes (0 = empty list: just the tag and a zero length)."""
    if field_name not in _LIST_TAGS:
        raise ValueError(f"unsupported list field {field_name!r}")
    plen = np.asarray(payload_len, dtype=np.int64).reshape(-1)
    if len(plen) == 0:
        return []
    nonempty = (plen > 0)[:, None]
    inner_len = np.where(plen > 0, 1 + varint_sizes(plen) + plen, 0)
    tag = _const(len(plen), _PACKED_TAG)
    return _split(*_rows_bytes([
        _const(len(plen), _LIST_TAGS[field_name]), varint_matrix(inner_len[:, None]),
        (tag[0], tag[1] & nonempty), varint_matrix(plen[:, None], keep=nonempty)]))


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

    def entity_key_fast(self, join_key: str, value: int) -> bytes:
        """:meth:`entity_key` from the cached fixed prefix (one ``struct.pack``; the online
        read path builds one key per request)."""
        return (self._key_prefix(join_key) + _INT64_LE.pack(value)
                + self.project.encode("utf-8"))

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
    "int64_value_blocks",
    "list_header_sizes",
    "list_value_headers",
    "packed_varints",
    "int_list_blocks",
    "timestamp_blocks",
    "varint_matrix",
    "varint_sizes",
]
