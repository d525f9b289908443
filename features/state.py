"""The processor's durable state and its one atomic commit per batch.

A batch's whole effect is committed in **one transaction** together with the acknowledgement of
its messages, which is what makes the processor's effect exactly-once:

====================================  ==========================  =============================
state                                 Redis (production)          SQLite (embedded)
====================================  ==========================  =============================
ack of the batch's messages           ``XACK``                    ``DELETE FROM pending``
dead letters (with reasons)           ``XADD <prefix>dead``       ``INSERT INTO dead_letters``
each touched user's sequence          ``<prefix>seq:<user_id>``   ``seq_state`` row
                                      (packed, <= 2,500 B)
the same sequence in Feast's layout   ``HSET <feast key>``        (online outbox, see below)
dedupe: accepted event ids            ``SADD <prefix>dedupe:<b>`` ``dedupe`` rows
                                      per event-time bucket b
watermark, commit sequence number     ``HSET <prefix>meta``       ``meta`` rows
engagement counters per touched item  ``<prefix>cnt:item:<id>``   ``counter_state`` rows
and user (impressions, clicks, saves,  (4 x int64) and ``HSET``
hides; the new totals)                 of the Feast views          (counter outbox)
counters (accepted, duplicates, ...)  ``HINCRBY <prefix>stats``   ``stats`` rows
offline-log outbox (Arrow IPC)        ``HSET <prefix>outbox``     ``outbox`` row
====================================  ==========================  =============================

Redis: ``WATCH <prefix>epoch`` + ``MULTI``/``EXEC``. Every processor start increments the epoch;
a commit from a processor whose epoch is no longer current aborts (:class:`ProcessorFenced`),
so a stale processor can never overwrite a newer one's state. SQLite: one ``BEGIN IMMEDIATE``
transaction in the queue's database file.

The offline log and (embedded) the Feast online store live outside that transaction; they are
fed from *outboxes* committed with the batch and replayed on restart. Their writes are
idempotent (a Parquet file named by the commit sequence number, replaced atomically; a full
latest-state upsert of the user's sequence), so a crash between commit and flush neither loses
nor duplicates anything.
"""

from __future__ import annotations

import io
import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import redis

from features.feast_layout import (
    FeastRedisLayout,
    Int32List,
    Int64List,
    ValueProto,
    encode_int64,
    encode_int_lists,
    encode_timestamps,
    list_header_sizes,
    list_value_headers,
    packed_varints,
    varint_sizes,
)
from features.names import (
    ITEM_COUNTS_FEATURE,
    ITEM_COUNTS_VIEW,
    SEQUENCE_VIEW,
    USER_COUNTS_FEATURE,
    USER_COUNTS_VIEW,
)
from features.sequence import SEQ_RECORD, decode_sequences, encode_sequences
from features.stream import GROUP, DecodedBatch, RawBatch, RedisEventStream, SqliteEventQueue
from transact.data.counters import COUNTER_NAMES
from transact.errors import InternalError
from transact.schema import SEQ_LEN

#: the two sides of the engagement counters and their Feast entity join keys
COUNTER_SIDES = ("item", "user")
_COUNTER_JOIN_KEYS = {"item": "item_id", "user": "user_id"}
_COUNTER_VIEWS = {"item": (ITEM_COUNTS_VIEW, ITEM_COUNTS_FEATURE),
                  "user": (USER_COUNTS_VIEW, USER_COUNTS_FEATURE)}
_N_COUNTS = len(COUNTER_NAMES)


def _no_counters() -> np.ndarray:
    return np.zeros((0, _N_COUNTS), dtype=np.int64)


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def encode_counts(counts: np.ndarray) -> list[bytes]:
    """``(K, 4)`` totals -> one 32-byte little-endian int64 blob per key (the Redis state)."""
    rows = np.ascontiguousarray(np.asarray(counts, dtype="<i8"))
    return [row.tobytes() for row in rows]


def decode_counts(blobs: list[bytes | None]) -> np.ndarray:
    """Blobs of :func:`encode_counts` (``None``: no events yet) -> ``(K, 4)`` int64."""
    out = np.zeros((len(blobs), _N_COUNTS), dtype=np.int64)
    for i, blob in enumerate(blobs):
        if blob is not None:
            out[i] = np.frombuffer(blob, dtype="<i8", count=_N_COUNTS)
    return out


def feast_counter_fields(side: str) -> list[bytes]:
    """Feast Redis hash fields of one side's counter view: the list value and its timestamp."""
    view, feature = _COUNTER_VIEWS[side]
    return [FeastRedisLayout.field(view, feature), FeastRedisLayout.ts_field(view)]


class ProcessorFenced(InternalError):
    """Another processor started on the same stream: this one must stop (its commit aborted).
    Not a user mistake: the command exits with the internal-fault code (3)."""


@dataclass
class ProcessorMeta:
    """Committed progress: the event-time watermark (max accepted timestamp, -1 before any),
    the last commit sequence number and the live dedupe buckets."""

    watermark_ms: int = -1
    commit_seq: int = 0
    buckets: list[int] = field(default_factory=list)


@dataclass
class CommitPlan:
    """Everything one batch changes, applied atomically by :meth:`ProcessorStore.commit`.

    ``user_ids`` ``(U,)`` and ``sequences`` ``(U, L)`` :data:`~features.sequence.SEQ_RECORD`:
    the touched users' new full sequences. ``dedupe_ids`` / ``dedupe_buckets`` ``(A,)``: the
    accepted event ids and their event-time buckets.
    """

    message_ids: list[str]
    dead_letters: pa.Table
    user_ids: np.ndarray
    sequences: np.ndarray
    dedupe_ids: np.ndarray
    dedupe_buckets: np.ndarray
    drop_buckets: list[int]
    meta: ProcessorMeta
    accepted_events: pa.Table
    counts: dict[str, int]
    #: ``(U,)`` per touched user: ``k >= 0`` if the new sequence is ``k`` new entries followed
    #: by the committed one (its encoding can be reused), ``-1`` otherwise; ``None``: unknown
    prepended: np.ndarray | None = None
    #: engagement counters: the items / users the batch's accepted events touch ``(K,)`` and
    #: their new totals ``(K, 4)`` (:data:`~transact.data.counters.COUNTER_NAMES`)
    counter_item_ids: np.ndarray = field(default_factory=_no_ids)
    item_counts: np.ndarray = field(default_factory=_no_counters)
    counter_user_ids: np.ndarray = field(default_factory=_no_ids)
    user_counts: np.ndarray = field(default_factory=_no_counters)

    def counters(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"item": (ids, totals), "user": (ids, totals)}``."""
        return {"item": (self.counter_item_ids, self.item_counts),
                "user": (self.counter_user_ids, self.user_counts)}


def table_to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def ipc_to_table(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


def feast_sequence_fields(sequences: np.ndarray) -> list[dict[bytes, bytes]]:
    """Feast Redis hash fields of the ``user_action_sequence`` view, one dict per user.

    ``sequences``: ``(U, L)`` :data:`SEQ_RECORD`, newest first. The lists hold the user's
    ``seq_len`` actions (no padding; readers pad to ``L``).
    """
    view = SEQUENCE_VIEW
    f = FeastRedisLayout.field
    n = (sequences["action"] != 0).sum(axis=1)
    items = encode_int_lists(sequences["item_id"], "int64_list_val", n)
    actions = encode_int_lists(sequences["action"].astype(np.int32), "int32_list_val", n)
    stamps = encode_int_lists(sequences["ts"], "int64_list_val", n)
    lengths = encode_int64(n)
    event_ts = encode_timestamps(sequences["ts"][:, 0])
    k_items, k_actions = f(view, "seq_item_ids"), f(view, "seq_action_types")
    k_stamps, k_len = f(view, "seq_timestamps_ms"), f(view, "seq_len")
    k_ts = FeastRedisLayout.ts_field(view)
    return [
        {k_items: a, k_actions: b, k_stamps: c, k_len: d, k_ts: e}
        for a, b, c, d, e in zip(items, actions, stamps, lengths, event_ts, strict=True)
    ]


#: Feast list fields of the sequence view, in HSET order, with their Value oneof field
_LIST_FEATURES = (("seq_item_ids", "int64_list_val"), ("seq_action_types", "int32_list_val"),
                  ("seq_timestamps_ms", "int64_list_val"))


_LIST_SERIALIZERS = {
    "int64_list_val": lambda row: ValueProto(int64_list_val=Int64List(val=row)).SerializeToString(),
    "int32_list_val": lambda row: ValueProto(int32_list_val=Int32List(val=row)).SerializeToString(),
}


def _list_columns(sequences: np.ndarray) -> tuple[np.ndarray, ...]:
    """The three list features' ``(U, L)`` int64 values (action types as int32 -> int64)."""
    return (sequences["item_id"], sequences["action"].astype(np.int64), sequences["ts"])


#: a cache entry: (packed state blob, (items, actions, stamps) Feast values, their header sizes)
CacheEntry = tuple[bytes, tuple[bytes, bytes, bytes], tuple[int, int, int]]


class SequenceEncodingCache:
    """Per-user memory of what the processor last committed: the packed state blob and the
    serialized Feast values of the three lists, so that a user whose new sequence is the old
    one with ``k`` events prepended (the common, in-order case) costs ``k`` varints and one
    byte concatenation instead of re-encoding 3 x up to 100 values.

    Only valid while this processor is the only writer, which the epoch fencing guarantees
    (a superseded processor's commits abort); it is filled after a successful commit and
    cleared when a commit fails. Bounded: least recently written users are evicted beyond
    ``max_users``.
    """

    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        self.entries: dict[int, CacheEntry] = {}

    def get(self, user_id: int) -> CacheEntry | None:
        return self.entries.get(user_id)

    def update(self, user_ids: list[int], entries: list[CacheEntry]) -> None:
        if self.max_users <= 0:
            return
        cache = self.entries
        for uid, entry in zip(user_ids, entries, strict=True):
            cache.pop(uid, None)  # re-insert: dict order is least recently written first
            cache[uid] = entry
        excess = len(cache) - self.max_users
        if excess > 0:
            for uid in list(itertools.islice(cache, excess)):
                del cache[uid]

    def clear(self) -> None:
        self.entries.clear()


def encode_sequence_update(
    sequences: np.ndarray, prepended: np.ndarray | None, cached: list[CacheEntry | None],
) -> tuple[list[bytes], list[tuple[tuple[bytes, bytes, bytes], tuple[int, int, int]]]]:
    """Feast values of the touched users' new sequences, reusing cached encodings.

    ``sequences`` ``(U, L)`` :data:`SEQ_RECORD`; ``prepended`` ``(U,)`` (see
    :class:`CommitPlan`); ``cached[u]``: the user's last committed :data:`CacheEntry` or
    ``None``.

    A reusable row's list value is ``header(new body length) + varints(k new entries) +``
    the old value's body cut after the entries that survive the 100 cap; every other row is
    encoded in full (vectorised). Returns the Feast hash values user-major (``[items,
    actions, stamps, seq_len, event ts]`` per user, the order of
    :func:`feast_sequence_fields`' keys; byte-identical to it, tested) and each user's three
    list values with their header sizes (for the cache).
    """
    n_users, seq_len = sequences.shape
    n = (sequences["action"] != 0).sum(axis=1)
    shift = np.full(n_users, -1) if prepended is None else np.asarray(prepended)
    have = np.array([c is not None for c in cached], dtype=bool)
    reuse = have & (shift >= 0)
    inc_rows = np.flatnonzero(reuse)
    inc_list = inc_rows.tolist()
    lists: list[list[bytes]] = []
    header_sizes: list[np.ndarray] = []
    full_rows = np.flatnonzero(~reuse)
    full_list = full_rows.tolist()
    cols = np.arange(seq_len)[None, :]
    for f, col in enumerate(_list_columns(sequences)):
        kind = _LIST_FEATURES[f][1]
        out = [b""] * n_users
        header_len = np.zeros(n_users, dtype=np.int64)
        if full_list:  # protobuf's C encoder beats numpy on whole rows
            serialize = _LIST_SERIALIZERS[kind]
            width = int(n[full_rows].max())
            encoded = [serialize(row[:count]) for row, count in
                       zip(col[full_rows, :width].tolist(), n[full_rows].tolist(), strict=True)]
            if len(full_list) == n_users:
                out = encoded
            else:
                for i, value in zip(full_list, encoded, strict=True):
                    out[i] = value
            header_len[full_rows] = list_header_sizes(
                np.fromiter(map(len, encoded), np.int64, len(encoded)))
        if inc_list:
            k = shift[inc_rows]
            rows = col[inc_rows]
            sizes = varint_sizes(rows)
            body_len = np.where(cols < n[inc_rows, None], sizes, 0).sum(axis=1)
            headers = list_value_headers(kind, body_len)
            width = max(int(k.max()), 1)
            prefix = packed_varints(rows[:, :width], k)
            prefix_len = np.where(cols[:, :width] < k[:, None], sizes[:, :width], 0).sum(axis=1)
            keep_old = (body_len - prefix_len).tolist()
            for i, head, pre, cut in zip(inc_list, headers, prefix, keep_old, strict=True):
                entry = cached[i]
                old = entry[1][f]  # type: ignore[index]
                start = entry[2][f]  # type: ignore[index]
                out[i] = head + pre + old[start : start + cut]
            header_len[inc_rows] = np.fromiter(map(len, headers), np.int64, len(inc_list))
        header_sizes.append(header_len)
        lists.append(out)
    lengths = encode_int64(n)
    event_ts = encode_timestamps(sequences["ts"][:, 0])
    values = [v for row in zip(lists[0], lists[1], lists[2], lengths, event_ts, strict=True)
              for v in row]
    sizes_rows = zip(*(h.tolist() for h in header_sizes), strict=True)
    return values, list(zip(zip(*lists, strict=True), sizes_rows, strict=True))


def feast_sequence_field_names() -> list[bytes]:
    """Hash field names of :func:`feast_sequence_fields`, in its order."""
    view = SEQUENCE_VIEW
    f = FeastRedisLayout.field
    return [f(view, "seq_item_ids"), f(view, "seq_action_types"),
            f(view, "seq_timestamps_ms"), f(view, "seq_len"), FeastRedisLayout.ts_field(view)]


class ProcessorStore(ABC):
    """The queue plus the processor's state, with one atomic commit per batch."""

    #: whether :meth:`commit` also writes the Feast online store (else: online outbox)
    writes_online_in_commit: bool = False

    @abstractmethod
    def start(self, consumer: str) -> int:
        """Fence older processors (new epoch), take over pending messages; return the epoch."""

    @abstractmethod
    def read(self, count: int, block_ms: int, pending: bool) -> RawBatch: ...

    @abstractmethod
    def load_meta(self) -> ProcessorMeta: ...

    @abstractmethod
    def load_sequences(self, user_ids: np.ndarray) -> np.ndarray:
        """``(U,)`` users -> their committed ``(U, SEQ_LEN)`` sequences (padding if none)."""

    @abstractmethod
    def seen(self, event_ids: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: event id already accepted (in its event-time bucket)."""

    @abstractmethod
    def commit(self, plan: CommitPlan) -> None: ...

    @abstractmethod
    def outbox(self) -> list[tuple[int, bytes]]:
        """Committed offline-log batches not yet written: ``(commit_seq, Arrow IPC)``."""

    @abstractmethod
    def outbox_done(self, commit_seq: int) -> None: ...

    def online_outbox(self) -> list[tuple[int, np.ndarray]]:
        """Committed batches whose users still need a Feast online write (embedded only)."""
        return []

    def online_done(self, commit_seq: int) -> None:
        return None

    @abstractmethod
    def load_counters(self, side: str, keys: np.ndarray) -> np.ndarray:
        """``(K,)`` item or user ids (``side``) -> their committed ``(K, 4)`` int64 totals
        (zeros for a key with no event yet)."""

    def counter_outbox(self) -> list[tuple[int, dict[str, np.ndarray], int]]:
        """Committed batches whose counters still need a Feast online write (embedded only):
        ``(commit_seq, {"item": ids, "user": ids}, watermark_ms)``."""
        return []

    def counter_done(self, commit_seq: int) -> None:
        return None

    @abstractmethod
    def stats(self) -> dict[str, int]: ...

    @abstractmethod
    def sequences_for_read(self, user_ids: np.ndarray) -> np.ndarray: ...

    def decode(self, batch: RawBatch) -> DecodedBatch:
        from features.stream import decode_batch

        return decode_batch(batch)


# --------------------------------------------------------------------------- Redis


def hset_many_script(n_fields: int) -> str:
    """Lua that HSETs the same ``n_fields`` fields on many keys in one command (inside the
    commit's MULTI/EXEC). ARGV = [field_1..field_n, values of key 1 (n), values of key 2 (n),
    ...]. Generated for a fixed ``n_fields`` so each key is one ``redis.call`` with literal
    arguments: no per-key Lua table and ``unpack`` (that generic loop cost twice the HSETs)."""
    names = ", ".join(f"f{j}" for j in range(1, n_fields + 1))
    fields = ", ".join(f"ARGV[{j}]" for j in range(1, n_fields + 1))
    pairs = ", ".join(f"f{j}, ARGV[b + {j}]" for j in range(1, n_fields + 1))
    return (f"local {names} = {fields}\n"
            f"for i = 1, #KEYS do\n"
            f"  local b = {n_fields} * i\n"
            f"  redis.call('HSET', KEYS[i], {pairs})\n"
            f"end\n"
            f"return #KEYS\n")


class RedisProcessorStore(ProcessorStore):
    """Production state in Redis; writes Feast's online layout inside the commit."""

    writes_online_in_commit = True

    def __init__(
        self, stream: RedisEventStream, project: str, trim_acked: bool = True,
        seq_len: int = SEQ_LEN, cache_users: int = 50_000,
    ) -> None:
        self.stream = stream
        self.client = stream.client
        self.prefix = stream.prefix
        self.layout = FeastRedisLayout(project)
        self.trim_acked = trim_acked
        self.seq_len = seq_len
        self.epoch_key = f"{self.prefix}epoch"
        self.meta_key = f"{self.prefix}meta"
        self.stats_key = f"{self.prefix}stats"
        self.outbox_key = f"{self.prefix}outbox"
        self.buckets_key = f"{self.prefix}dedupe:buckets"
        self.consumer = "processor-0"
        self.epoch = 0
        self._seq_fields = feast_sequence_field_names()
        self._hset_many = self.client.register_script(hset_many_script(len(self._seq_fields)))
        self._hset_two = self.client.register_script(hset_many_script(2))
        self.cache = SequenceEncodingCache(cache_users)
        self._pending_cache: tuple[list[int], list[CacheEntry]] | None
        self._pending_cache = None

    def seq_key(self, user_id: int) -> str:
        return f"{self.prefix}seq:{user_id}"

    def dedupe_key(self, bucket: int) -> str:
        return f"{self.prefix}dedupe:{bucket}"

    def counter_key(self, side: str, key: int) -> str:
        return f"{self.prefix}cnt:{side}:{key}"

    def load_counters(self, side: str, keys: np.ndarray) -> np.ndarray:
        if len(keys) == 0:
            return _no_counters()
        return decode_counts(self.client.mget([self.counter_key(side, k)
                                               for k in keys.tolist()]))

    def start(self, consumer: str) -> int:
        self.consumer = consumer
        self.epoch = int(self.client.incr(self.epoch_key))
        self.stream.claim_all(consumer)
        return self.epoch

    def read(self, count: int, block_ms: int, pending: bool) -> RawBatch:
        return self.stream.read(self.consumer, count, block_ms, pending)

    def load_meta(self) -> ProcessorMeta:
        raw = self.client.hgetall(self.meta_key)
        buckets = sorted(int(b) for b in self.client.smembers(self.buckets_key))
        return ProcessorMeta(
            watermark_ms=int(raw.get(b"watermark_ms", -1)),
            commit_seq=int(raw.get(b"commit_seq", 0)),
            buckets=buckets,
        )

    def load_sequences(self, user_ids: np.ndarray) -> np.ndarray:
        if len(user_ids) == 0:
            return np.zeros((0, self.seq_len), dtype=SEQ_RECORD)
        uids = user_ids.tolist()
        blobs: list[bytes | None] = []
        missing: list[int] = []
        for i, uid in enumerate(uids):
            entry = self.cache.get(uid)
            blobs.append(None if entry is None else entry[0])
            if entry is None:
                missing.append(i)
        if missing:
            fetched = self.client.mget([self.seq_key(uids[i]) for i in missing])
            for i, blob in zip(missing, fetched, strict=True):
                blobs[i] = blob
        return decode_sequences(blobs, self.seq_len)

    def sequences_for_read(self, user_ids: np.ndarray) -> np.ndarray:
        if len(user_ids) == 0:
            return np.zeros((0, self.seq_len), dtype=SEQ_RECORD)
        return decode_sequences(self.client.mget([self.seq_key(u) for u in user_ids.tolist()]),
                                self.seq_len)

    def seen(self, event_ids: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        out = np.zeros(len(event_ids), dtype=bool)
        if len(event_ids) == 0:
            return out
        groups = [np.flatnonzero(buckets == b) for b in np.unique(buckets).tolist()]
        pipe = self.client.pipeline(transaction=False)
        for idx in groups:
            pipe.smismember(self.dedupe_key(int(buckets[idx[0]])), event_ids[idx].tolist())
        for idx, flags in zip(groups, pipe.execute(), strict=True):
            out[idx] = np.asarray(flags, dtype=bool)
        return out

    def commit(self, plan: CommitPlan) -> None:
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.epoch_key)
                current = int(pipe.get(self.epoch_key) or 0)
                if current != self.epoch:
                    raise ProcessorFenced(
                        f"processor epoch {self.epoch} was superseded by {current}: another "
                        f"processor owns the stream {self.stream.stream_key}; stop this one")
                pipe.multi()
                self._pending_cache = None
                self._queue_commit(pipe, plan)
                pipe.execute()
            except redis.WatchError as err:
                self.cache.clear()
                raise ProcessorFenced(
                    "another processor started during this commit; stop this one") from err
            except BaseException:
                self.cache.clear()  # the commit may or may not have happened
                raise
        if self._pending_cache is not None:
            self.cache.update(*self._pending_cache)
            self._pending_cache = None

    def _queue_commit(self, pipe: redis.client.Pipeline, plan: CommitPlan) -> None:
        if plan.message_ids:
            pipe.xack(self.stream.stream_key, GROUP, *plan.message_ids)
        dead = plan.dead_letters
        if dead.num_rows:
            for mid, reason, payload, surface in zip(
                dead.column("message_id").to_pylist(), dead.column("reason").to_pylist(),
                dead.column("payload").to_pylist(), dead.column("surface").to_pylist(),
                strict=True,
            ):
                pipe.xadd(self.stream.dead_key, {
                    b"message_id": mid, b"reason": reason, b"payload": payload or b"",
                    b"surface": (surface or "").encode("utf-8"),
                })
        if len(plan.user_ids):
            blobs = encode_sequences(plan.sequences)
            uids = plan.user_ids.tolist()
            pipe.mset({self.seq_key(u): b for u, b in zip(uids, blobs, strict=True)})
            keys = self.layout.entity_keys("user_id", plan.user_ids)
            values, bodies = encode_sequence_update(
                plan.sequences, plan.prepended, [self.cache.get(u) for u in uids])
            names = self._seq_fields
            self._hset_many(keys=keys, args=[*names, *values], client=pipe)
            self._pending_cache = (uids, [(blob, *entry) for blob, entry in
                                          zip(blobs, bodies, strict=True)])
        stamp = encode_timestamps(np.array([max(plan.meta.watermark_ms, 0)]))[0]
        for side, (keys, totals) in plan.counters().items():
            if not len(keys):
                continue
            ids = keys.tolist()
            pipe.mset({self.counter_key(side, k): b
                       for k, b in zip(ids, encode_counts(totals), strict=True)})
            values = encode_int_lists(totals, "int64_list_val")
            self._hset_two(keys=self.layout.entity_keys(_COUNTER_JOIN_KEYS[side], keys),
                           args=[*feast_counter_fields(side),
                                 *(v for value in values for v in (value, stamp))],
                           client=pipe)
        if len(plan.dedupe_ids):
            for bucket in np.unique(plan.dedupe_buckets).tolist():
                ids = plan.dedupe_ids[plan.dedupe_buckets == bucket].tolist()
                pipe.sadd(self.dedupe_key(bucket), *ids)
                pipe.sadd(self.buckets_key, bucket)
        for bucket in plan.drop_buckets:
            pipe.delete(self.dedupe_key(bucket))
            pipe.srem(self.buckets_key, bucket)
        pipe.hset(self.meta_key, mapping={
            "watermark_ms": plan.meta.watermark_ms, "commit_seq": plan.meta.commit_seq,
        })
        for name, value in plan.counts.items():
            if value:
                pipe.hincrby(self.stats_key, name, value)
        if plan.accepted_events.num_rows:
            pipe.hset(self.outbox_key, str(plan.meta.commit_seq),
                      table_to_ipc(plan.accepted_events))
        if self.trim_acked and plan.message_ids:
            pipe.xtrim(self.stream.stream_key, minid=plan.message_ids[-1], approximate=True)

    def outbox(self) -> list[tuple[int, bytes]]:
        raw = self.client.hgetall(self.outbox_key)
        return sorted((int(k), v) for k, v in raw.items())

    def outbox_done(self, commit_seq: int) -> None:
        self.client.hdel(self.outbox_key, str(commit_seq))

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.stats_key).items()}


# --------------------------------------------------------------------------- SQLite

_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS seq_state (user_id INTEGER PRIMARY KEY, blob BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe (event_id INTEGER PRIMARY KEY, bucket INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS dedupe_bucket ON dedupe (bucket);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stats (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS online_outbox (seq INTEGER PRIMARY KEY, user_ids BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counter_state (side TEXT NOT NULL, key INTEGER NOT NULL,
    impressions INTEGER NOT NULL, clicks INTEGER NOT NULL, saves INTEGER NOT NULL,
    hides INTEGER NOT NULL, PRIMARY KEY (side, key));
CREATE TABLE IF NOT EXISTS counter_outbox (seq INTEGER PRIMARY KEY, item_ids BLOB NOT NULL,
    user_ids BLOB NOT NULL, watermark_ms INTEGER NOT NULL);
"""


class SqliteProcessorStore(ProcessorStore):
    """Embedded state in the queue's SQLite file: one transaction per batch. The Feast online
    store (SQLite too, Feast's own file) is fed from the ``online_outbox``."""

    writes_online_in_commit = False

    def __init__(self, queue: SqliteEventQueue, seq_len: int = SEQ_LEN) -> None:
        self.queue = queue
        self.conn = queue.conn
        self.conn.executescript(_STATE_SCHEMA)
        self.seq_len = seq_len
        self.consumer = "processor-0"
        self.epoch = 0

    def start(self, consumer: str) -> int:
        self.consumer = consumer
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('epoch', 1) "
                "ON CONFLICT(key) DO UPDATE SET value = value + 1")
            (self.epoch,) = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        self.queue.claim_all(consumer)
        return int(self.epoch)

    def read(self, count: int, block_ms: int, pending: bool) -> RawBatch:
        return self.queue.read(self.consumer, count, block_ms, pending)

    def _meta_value(self, key: str, default: int) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def load_meta(self) -> ProcessorMeta:
        buckets = [r[0] for r in self.conn.execute(
            "SELECT DISTINCT bucket FROM dedupe ORDER BY bucket")]
        return ProcessorMeta(
            watermark_ms=self._meta_value("watermark_ms", -1),
            commit_seq=self._meta_value("commit_seq", 0),
            buckets=buckets,
        )

    def load_sequences(self, user_ids: np.ndarray) -> np.ndarray:
        if len(user_ids) == 0:
            return np.zeros((0, self.seq_len), dtype=SEQ_RECORD)
        found: dict[int, bytes] = {}
        ids = user_ids.tolist()
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for uid, blob in self.conn.execute(
                f"SELECT user_id, blob FROM seq_state WHERE user_id IN ({marks})", chunk
            ):
                found[int(uid)] = bytes(blob)
        return decode_sequences([found.get(u) for u in ids], self.seq_len)

    sequences_for_read = load_sequences

    def load_counters(self, side: str, keys: np.ndarray) -> np.ndarray:
        out = np.zeros((len(keys), _N_COUNTS), dtype=np.int64)
        ids = keys.tolist()
        row_of = {k: i for i, k in enumerate(ids)}
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for key, *counts in self.conn.execute(
                f"SELECT key, impressions, clicks, saves, hides FROM counter_state "
                f"WHERE side = ? AND key IN ({marks})", [side, *chunk]):
                out[row_of[int(key)]] = counts
        return out

    def seen(self, event_ids: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        ids = event_ids.tolist()
        hits: set[int] = set()
        for lo in range(0, len(ids), 500):
            chunk = ids[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            hits.update(r[0] for r in self.conn.execute(
                f"SELECT event_id FROM dedupe WHERE event_id IN ({marks})", chunk))
        return np.array([i in hits for i in ids], dtype=bool)

    def commit(self, plan: CommitPlan) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._meta_value("epoch", 0)
            if current != self.epoch:
                raise ProcessorFenced(
                    f"processor epoch {self.epoch} was superseded by {current}: another "
                    f"processor owns the queue {self.queue.path}; stop this one")
            conn.executemany("DELETE FROM pending WHERE id = ?",
                             [(int(m),) for m in plan.message_ids])
            dead = plan.dead_letters
            if dead.num_rows:
                conn.executemany(
                    "INSERT INTO dead_letters (message_id, reason, payload, surface) "
                    "VALUES (?, ?, ?, ?)",
                    zip(dead.column("message_id").to_pylist(), dead.column("reason").to_pylist(),
                        dead.column("payload").to_pylist(), dead.column("surface").to_pylist(),
                        strict=True),
                )
            if len(plan.user_ids):
                conn.executemany(
                    "INSERT OR REPLACE INTO seq_state (user_id, blob) VALUES (?, ?)",
                    zip(plan.user_ids.tolist(), encode_sequences(plan.sequences), strict=True),
                )
                conn.execute("INSERT INTO online_outbox (seq, user_ids) VALUES (?, ?)",
                             (plan.meta.commit_seq, plan.user_ids.astype("<i8").tobytes()))
            counters = plan.counters()
            for side, (keys, totals) in counters.items():
                conn.executemany(
                    "INSERT OR REPLACE INTO counter_state (side, key, impressions, clicks, "
                    "saves, hides) VALUES (?, ?, ?, ?, ?, ?)",
                    [(side, k, *row) for k, row in zip(keys.tolist(), totals.tolist(),
                                                       strict=True)])
            if len(plan.counter_item_ids) or len(plan.counter_user_ids):
                conn.execute(
                    "INSERT INTO counter_outbox (seq, item_ids, user_ids, watermark_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (plan.meta.commit_seq, plan.counter_item_ids.astype("<i8").tobytes(),
                     plan.counter_user_ids.astype("<i8").tobytes(), plan.meta.watermark_ms))
            conn.executemany(
                "INSERT INTO dedupe (event_id, bucket) VALUES (?, ?)",
                zip(plan.dedupe_ids.tolist(), plan.dedupe_buckets.tolist(), strict=True),
            )
            conn.executemany("DELETE FROM dedupe WHERE bucket = ?",
                             [(b,) for b in plan.drop_buckets])
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [("watermark_ms", plan.meta.watermark_ms), ("commit_seq", plan.meta.commit_seq)],
            )
            conn.executemany(
                "INSERT INTO stats (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
                [(k, v) for k, v in plan.counts.items() if v],
            )
            if plan.accepted_events.num_rows:
                conn.execute("INSERT INTO outbox (seq, payload) VALUES (?, ?)",
                             (plan.meta.commit_seq, table_to_ipc(plan.accepted_events)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def outbox(self) -> list[tuple[int, bytes]]:
        return [(int(s), bytes(p)) for s, p in self.conn.execute(
            "SELECT seq, payload FROM outbox ORDER BY seq")]

    def outbox_done(self, commit_seq: int) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM outbox WHERE seq = ?", (commit_seq,))

    def online_outbox(self) -> list[tuple[int, np.ndarray]]:
        return [(int(s), np.frombuffer(bytes(u), dtype="<i8").copy()) for s, u in
                self.conn.execute("SELECT seq, user_ids FROM online_outbox ORDER BY seq")]

    def online_done(self, commit_seq: int) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM online_outbox WHERE seq = ?", (commit_seq,))

    def counter_outbox(self) -> list[tuple[int, dict[str, np.ndarray], int]]:
        return [(int(s), {"item": np.frombuffer(bytes(i), dtype="<i8").copy(),
                          "user": np.frombuffer(bytes(u), dtype="<i8").copy()}, int(w))
                for s, i, u, w in self.conn.execute(
                    "SELECT seq, item_ids, user_ids, watermark_ms FROM counter_outbox "
                    "ORDER BY seq")]

    def counter_done(self, commit_seq: int) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM counter_outbox WHERE seq = ?", (commit_seq,))

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.conn.execute("SELECT key, value FROM stats")}
