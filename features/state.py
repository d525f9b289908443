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
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import redis

from features.feast_layout import (
    FeastRedisLayout,
    encode_int64,
    encode_int_lists,
    encode_timestamps,
)
from features.names import SEQUENCE_VIEW
from features.sequence import SEQ_RECORD, decode_sequences, encode_sequences
from features.stream import GROUP, DecodedBatch, RawBatch, RedisEventStream, SqliteEventQueue
from transact.errors import UserError
from transact.schema import SEQ_LEN


class ProcessorFenced(UserError):
    """Another processor started on the same stream: this one must stop (its commit aborted)."""


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
    def stats(self) -> dict[str, int]: ...

    @abstractmethod
    def sequences_for_read(self, user_ids: np.ndarray) -> np.ndarray: ...

    def decode(self, batch: RawBatch) -> DecodedBatch:
        from features.stream import decode_batch

        return decode_batch(batch)


# --------------------------------------------------------------------------- Redis


#: HSET the same fields on many keys in one command (inside the commit's MULTI/EXEC).
#: ARGV = [n_fields, field_1..field_n, values of key 1 (n), values of key 2 (n), ...]
_HSET_MANY = """
local n = tonumber(ARGV[1])
local base = n + 1
for i, key in ipairs(KEYS) do
  local args = {}
  for j = 1, n do
    args[2 * j - 1] = ARGV[1 + j]
    args[2 * j] = ARGV[base + (i - 1) * n + j]
  end
  redis.call('HSET', key, unpack(args))
end
return #KEYS
"""


class RedisProcessorStore(ProcessorStore):
    """Production state in Redis; writes Feast's online layout inside the commit."""

    writes_online_in_commit = True

    def __init__(
        self, stream: RedisEventStream, project: str, trim_acked: bool = True,
        seq_len: int = SEQ_LEN,
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
        self._hset_many = self.client.register_script(_HSET_MANY)

    def seq_key(self, user_id: int) -> str:
        return f"{self.prefix}seq:{user_id}"

    def dedupe_key(self, bucket: int) -> str:
        return f"{self.prefix}dedupe:{bucket}"

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
        blobs = self.client.mget([self.seq_key(u) for u in user_ids.tolist()])
        return decode_sequences(blobs, self.seq_len)

    sequences_for_read = load_sequences

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
                self._queue_commit(pipe, plan)
                pipe.execute()
            except redis.WatchError as err:
                raise ProcessorFenced(
                    "another processor started during this commit; stop this one") from err

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
            mappings = feast_sequence_fields(plan.sequences)
            names = list(mappings[0])
            values = [m[name] for m in mappings for name in names]
            self._hset_many(keys=keys, args=[len(names), *names, *values], client=pipe)
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

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.conn.execute("SELECT key, value FROM stats")}
