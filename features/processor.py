"""The stream processor: validate, deduplicate, time-align, keep each user's latest-100
engagement sequence, publish it online and log every accepted event offline — exactly once.

Per batch (``XREADGROUP COUNT batch_size``, default 5,000 messages), all vectorised:

1. **decode** the 41-byte records; undecodable messages -> dead letter ``malformed``;
2. **validate**: known action type (skip/click/save/hide), ids > 0, ``timestamp_ms`` a plausible
   epoch-milliseconds value (``transact.schema.MIN_TIMESTAMP_MS`` .. ``MAX_TIMESTAMP_MS``,
   1995-01-01 .. 2100-01-01; seconds are rejected), not more than
   ``max_future_ms`` ahead of the wall clock -> dead letters ``invalid action type``,
   ``invalid id``, ``timestamp not in ms``, ``from the future``;
3. **lateness**: the event-time watermark is the highest accepted timestamp seen *before* the
   event, in stream order (deterministic whatever the batching). An event up to
   ``allowed_lateness_ms`` (default 5 minutes) behind it is accepted and inserted at its place
   in time; an older one goes to the dead letters with reason ``too late``. Nothing is dropped
   silently: duplicates are counted in the ``duplicates`` counter, everything else is either
   accepted or dead-lettered with its reason;
4. **dedupe** by ``event_id`` against the committed dedupe set (kept per event-time bucket and
   pruned once a bucket is older than the lateness bound — events that old are rejected as too
   late anyway) and within the batch (first occurrence wins);
5. **merge** the accepted engagements (click/save/hide; skips are logged but never enter the
   sequence) into the touched users' sequences (newest first, ties by ``event_id``), and add
   every accepted event (skips included: impressions) to its item's and its user's
   **engagement counters** (impressions, clicks, saves, hides;
   :func:`transact.data.counters.count_events`: the online twin of the example builder's
   point-in-time counters);
6. **commit** everything atomically with the acks (``features.state``), then flush the
   outboxes: the offline log (``OfflineLog``, Parquet in EVENT_SCHEMA) and, embedded, the Feast
   online store.

Killing the process at any point and restarting loses nothing and applies nothing twice:
uncommitted messages are still pending and are re-read first; committed ones are acked; the
outboxes are replayed idempotently (see ``tests/features/test_exactly_once.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.sequence import SEQ_RECORD, is_engagement, merge_sequences_prepended
from features.state import (
    CommitPlan,
    ProcessorMeta,
    ProcessorStore,
    ipc_to_table,
)
from features.stream import DEAD_LETTER_SCHEMA, RawBatch, decode_batch
from transact.data.counters import count_events
from transact.data.dataset import EventPartWriter, read_parquet_checked
from transact.errors import UserError
from transact.schema import (
    EVENT_ACTIONS,
    EVENT_SCHEMA,
    HOUR_MS,
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    SEQ_LEN,
)

REASONS = (
    "malformed",
    "invalid action type",
    "invalid id",
    "timestamp not in ms",
    "from the future",
    "too late",
)
_EVENT_CODES = np.array([int(a) for a in EVENT_ACTIONS], dtype=np.int8)


log = logging.getLogger("transact.features.processor")

def event_rejections(event_id: np.ndarray, user_id: np.ndarray, item_id: np.ndarray,
                     action_type: np.ndarray, timestamp_ms: np.ndarray,
                     max_future_ms: int | None, now_ms: int | None = None) -> np.ndarray:
    """Per-event checks of the processor (no state needed): ``(n,)`` int8 index into
    :data:`REASONS` of the first failed check, -1 for a valid event. Shared with the serving
    endpoint's ``POST /events`` so that both reject the same events."""
    reason = np.full(len(event_id), -1, dtype=np.int8)

    def flag(mask: np.ndarray, name: str) -> None:
        reason[(reason < 0) & mask] = REASONS.index(name)

    flag(~np.isin(action_type, _EVENT_CODES), "invalid action type")
    flag((event_id <= 0) | (user_id <= 0) | (item_id <= 0), "invalid id")
    flag((timestamp_ms < MIN_TIMESTAMP_MS) | (timestamp_ms > MAX_TIMESTAMP_MS),
         "timestamp not in ms")
    if max_future_ms is not None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        flag(timestamp_ms > now + max_future_ms, "from the future")
    return reason

#: a progress line at INFO at most this often while running (per-batch lines are DEBUG)
LOG_EVERY_S = 10.0


def _as_str(message_id: Any) -> str:
    return message_id.decode() if isinstance(message_id, bytes) else str(message_id)


def _failpoint(name: str, commit_seq: int) -> None:
    """Crash testing: ``TRANSACT_FAILPOINTS="after_commit:3,before_commit:5"`` SIGKILLs this
    process when it reaches that point for that commit sequence number, once per point
    (``TRANSACT_FAILPOINT_DIR`` records the points already fired). Unset in normal runs."""
    spec = os.environ.get("TRANSACT_FAILPOINTS")
    if not spec or f"{name}:{commit_seq}" not in spec.split(","):
        return
    marker_dir = Path(os.environ.get("TRANSACT_FAILPOINT_DIR", "."))
    marker = marker_dir / f"fired-{name}-{commit_seq}"
    if marker.exists():
        return
    marker.write_text("fired")
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class ProcessorConfig:
    """Knobs of :class:`StreamProcessor`.

    ``allowed_lateness_ms``: how far behind the watermark an event may arrive and still be
    inserted in order (``None``: unbounded, the dedupe state is then never pruned).
    ``max_future_ms``: events this far ahead of the wall clock are dead-lettered
    (``None`` disables the check, e.g. to replay a synthetic world dated in the future).
    ``dedupe_bucket_ms``: event-time granularity of the dedupe state.
    ``state_cache_users``: production only, how many users' last committed sequence (packed
    state and Feast list encodings) the processor keeps in memory to skip re-reading and
    re-encoding them (about 4 KB per user with full sequences; 0 disables the cache).
    """

    batch_size: int = 5_000
    block_ms: int = 200
    allowed_lateness_ms: int | None = 5 * 60_000
    max_future_ms: int | None = 10 * 60_000
    dedupe_bucket_ms: int = HOUR_MS
    seq_len: int = SEQ_LEN
    consumer: str = "processor-0"
    state_cache_users: int = 50_000

    def validate(self) -> ProcessorConfig:
        """Raise :class:`UserError` naming the first bad setting; return ``self``."""
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.block_ms < 0:
            raise UserError(f"block_ms must be >= 0, got {self.block_ms}")
        if self.max_future_ms is not None and self.max_future_ms < 0:
            raise UserError("max_future_ms must be >= 0 (or None to disable the check)")
        if self.seq_len < 1:
            raise UserError(f"seq_len must be >= 1, got {self.seq_len}")
        if not self.consumer:
            raise UserError("consumer must be a non-empty name")
        if self.allowed_lateness_ms is not None and self.allowed_lateness_ms < 0:
            raise UserError("allowed_lateness_ms must be >= 0 (or None for unbounded)")
        if self.state_cache_users < 0:
            raise UserError("state_cache_users must be >= 0 (0 disables the cache)")
        if self.dedupe_bucket_ms < 1000:
            raise UserError("dedupe_bucket_ms must be >= 1000")
        return self


class OfflineLog:
    """The processor's offline event log: ``<dir>/batch-<commit_seq:012d>.parquet`` files in
    :data:`EVENT_SCHEMA`, one per committed batch, each written to a temporary name and renamed
    (a crash never leaves a partial file; rewriting a batch replaces it with the same rows).
    :meth:`to_dataset` compacts the log into the shared dataset format."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def path(self, commit_seq: int) -> Path:
        return self.log_dir / f"batch-{commit_seq:012d}.parquet"

    def write(self, commit_seq: int, events: pa.Table) -> Path:
        final = self.path(commit_seq)
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(events.cast(EVENT_SCHEMA), tmp, compression="zstd")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        return final

    def files(self) -> list[Path]:
        return sorted(self.log_dir.glob("batch-*.parquet"))

    def read(self) -> pa.Table:
        """Every logged event, in commit order."""
        files = self.files()
        if not files:
            return EVENT_SCHEMA.empty_table()
        return pa.concat_tables(read_parquet_checked(f, EVENT_SCHEMA) for f in files)

    def to_dataset(self, dataset_dir: Path, users_per_part: int = 100_000) -> int:
        """Write the log as a dataset's ``events/part-NNNNN.parquet`` (users never span two
        parts); copy ``items.parquet`` there yourself. Returns the number of events."""
        events = self.read()
        writer = EventPartWriter(Path(dataset_dir))
        users = np.unique(events.column("user_id").to_numpy())
        for lo in range(0, max(len(users), 1), users_per_part):
            chunk = users[lo : lo + users_per_part]
            writer.write(events.filter(pc.is_in(events.column("user_id"), pa.array(chunk))))
        return writer.n_events


@dataclass
class BatchResult:
    """Counts of one processed batch."""

    messages: int = 0
    accepted: int = 0
    engagements: int = 0
    duplicates: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    users_updated: int = 0


class StreamProcessor:
    """Consumes the stream through a :class:`~features.state.ProcessorStore`.

    ``online_sink`` (embedded profile only): called with ``(user_ids (U,), sequences (U, L))``
    to upsert the users' full sequences into the Feast online store; ``counter_sink`` likewise
    with ``(side, ids (K,), totals (K, 4), watermark_ms)`` for the engagement counters. With a
    Redis store the Feast layout is written inside the commit instead.
    """

    def __init__(
        self,
        store: ProcessorStore,
        offline_log: OfflineLog | None,
        cfg: ProcessorConfig | None = None,
        online_sink: Any = None,
        counter_sink: Any = None,
    ) -> None:
        self.store = store
        self.offline_log = offline_log
        self.cfg = (cfg or ProcessorConfig()).validate()
        self.online_sink = online_sink
        self.counter_sink = counter_sink
        self.epoch = store.start(self.cfg.consumer)
        log.info("processor started: consumer %s, epoch %s, %s", self.cfg.consumer, self.epoch,
                 self.cfg)
        self.meta = store.load_meta()
        self._pending_done = False
        self._outbox_clean = False
        self.flush()

    # -- outboxes ----------------------------------------------------------------------------

    def flush(self, committed: tuple[int, pa.Table] | None = None) -> None:
        """Write committed-but-unflushed offline batches and online updates (idempotent).

        ``committed``: the batch this processor has just committed, ``(commit_seq, accepted
        events)``. When every earlier outbox entry is known to be flushed, its offline file
        is written from memory (no read-back of the outbox blob it just sent); otherwise the
        outbox is scanned.
        """
        if committed is not None and self._outbox_clean:
            seq, events = committed
            self._outbox_clean = False  # until this entry is written and cleared
            if events.num_rows:
                if self.offline_log is not None:
                    self.offline_log.write(seq, events)
                _failpoint("after_offline_write", seq)
                self.store.outbox_done(seq)
            self._outbox_clean = True
        else:
            self._outbox_clean = False
            for seq, blob in self.store.outbox():
                if self.offline_log is not None:
                    self.offline_log.write(seq, ipc_to_table(blob))
                _failpoint("after_offline_write", seq)
                self.store.outbox_done(seq)
            self._outbox_clean = True
        for seq, user_ids in self.store.online_outbox():
            if self.online_sink is not None:
                self.online_sink(user_ids, self.store.sequences_for_read(user_ids))
            _failpoint("after_online_write", seq)
            self.store.online_done(seq)
        for seq, keys, watermark_ms in self.store.counter_outbox():
            if self.counter_sink is not None:  # the latest totals: idempotent
                for side, ids in keys.items():
                    if len(ids):
                        self.counter_sink(side, ids, self.store.load_counters(side, ids),
                                          watermark_ms)
            self.store.counter_done(seq)

    # -- one batch ---------------------------------------------------------------------------

    def plan(self, raw: RawBatch) -> tuple[CommitPlan, BatchResult]:
        """Everything ``raw`` changes, without writing (pure given the committed state)."""
        cfg = self.cfg
        n_msgs = len(raw)
        decoded = decode_batch(raw)
        events = decoded.events
        reason = np.full(n_msgs, -1, dtype=np.int8)  # index into REASONS, -1 = ok
        reason[decoded.malformed] = REASONS.index("malformed")

        ids = events.column("event_id").to_numpy()
        users = events.column("user_id").to_numpy()
        items = events.column("item_id").to_numpy()
        actions = events.column("action_type").to_numpy()
        ts = events.column("timestamp_ms").to_numpy()
        ev_reason = np.full(len(ids), -1, dtype=np.int8)

        def flag(mask: np.ndarray, name: str) -> None:
            ev_reason[(ev_reason < 0) & mask] = REASONS.index(name)

        ev_reason[:] = event_rejections(ids, users, items, actions, ts, cfg.max_future_ms)
        valid = ev_reason < 0

        # watermark before each event, in stream order (deterministic under any batching)
        wm0 = self.meta.watermark_ms
        vts = np.where(valid, ts, np.iinfo(np.int64).min)
        running = np.maximum.accumulate(np.concatenate([[wm0], vts]))
        before = running[:-1]
        if cfg.allowed_lateness_ms is not None:
            flag(valid & (before >= 0) & (ts < before - cfg.allowed_lateness_ms), "too late")
        candidate = ev_reason < 0
        new_wm = int(running[-1]) if len(running) else wm0

        # dedupe: within the batch (first occurrence) and against committed state
        bucket = ts // cfg.dedupe_bucket_ms
        cand_idx = np.flatnonzero(candidate)
        _, first = np.unique(ids[cand_idx], return_index=True)
        first_mask = np.zeros(len(ids), dtype=bool)
        first_mask[cand_idx[first]] = True
        dup = candidate & ~first_mask
        check = np.flatnonzero(first_mask)
        dup[check[self.store.seen(ids[check], bucket[check])]] = True
        accepted = candidate & ~dup

        # sequences of the touched users
        eng = accepted & is_engagement(actions)
        touched = np.unique(users[eng])
        state = self.store.load_sequences(touched)
        if len(touched):
            new_state, prepended = merge_sequences_prepended(
                state, np.searchsorted(touched, users[eng]), ts[eng], ids[eng], items[eng],
                actions[eng],
            )
            changed = (new_state != state).any(axis=1)
            touched, new_state = touched[changed], new_state[changed]
            prepended = prepended[changed]
        else:
            new_state = np.zeros((0, cfg.seq_len), dtype=SEQ_RECORD)
            prepended = np.zeros(0, dtype=np.int64)

        # engagement counters: every accepted event is an impression of its item and its user
        acc_actions = actions[accepted]
        item_keys, item_delta = count_events(items[accepted], acc_actions)
        user_keys, user_delta = count_events(users[accepted], acc_actions)
        item_totals = self.store.load_counters("item", item_keys) + item_delta
        user_totals = self.store.load_counters("user", user_keys) + user_delta

        # dedupe buckets that can no longer receive an accepted event
        live = sorted(set(self.meta.buckets) | set(np.unique(bucket[accepted]).tolist()))
        drop: list[int] = []
        if cfg.allowed_lateness_ms is not None and new_wm >= 0:
            horizon = new_wm - cfg.allowed_lateness_ms
            drop = [b for b in live if (b + 1) * cfg.dedupe_bucket_ms <= horizon]
        kept_buckets = sorted(set(live) - set(drop))

        reason[decoded.rows] = ev_reason
        dead_idx = np.flatnonzero(reason >= 0)
        dead = pa.table(
            {
                "message_id": [_as_str(raw.message_ids[i]) for i in dead_idx.tolist()],
                "reason": [REASONS[reason[i]] for i in dead_idx.tolist()],
                "payload": [raw.payloads[i] or b"" for i in dead_idx.tolist()],
                "surface": [(raw.surfaces[i] or b"").decode("utf-8", "replace")
                            for i in dead_idx.tolist()],
            },
            schema=DEAD_LETTER_SCHEMA,
        )
        dead_counts = {REASONS[r]: int(c) for r, c in
                       zip(*np.unique(reason[dead_idx], return_counts=True), strict=True)}
        result = BatchResult(
            messages=n_msgs,
            accepted=int(accepted.sum()),
            engagements=int(eng.sum()),
            duplicates=int(dup.sum()),
            dead=dead_counts,
            users_updated=len(touched),
        )
        counts = {
            "messages": n_msgs, "accepted": result.accepted, "engagements": result.engagements,
            "duplicates": result.duplicates,
            **{f"dead:{k}": v for k, v in dead_counts.items()},
        }
        meta = ProcessorMeta(watermark_ms=new_wm, commit_seq=self.meta.commit_seq + 1,
                             buckets=kept_buckets)
        plan = CommitPlan(
            message_ids=list(raw.message_ids),
            dead_letters=dead,
            user_ids=touched,
            sequences=new_state,
            dedupe_ids=ids[accepted],
            dedupe_buckets=bucket[accepted],
            drop_buckets=drop,
            meta=meta,
            accepted_events=events.filter(pa.array(accepted)),
            counts=counts,
            prepended=prepended,
            counter_item_ids=item_keys,
            item_counts=item_totals,
            counter_user_ids=user_keys,
            user_counts=user_totals,
        )
        return plan, result

    def process(self, raw: RawBatch) -> BatchResult:
        plan, result = self.plan(raw)
        _failpoint("before_commit", plan.meta.commit_seq)
        self.store.commit(plan)
        _failpoint("after_commit", plan.meta.commit_seq)
        self.meta = plan.meta
        self.flush(committed=(plan.meta.commit_seq, plan.accepted_events))
        return result

    def step(self) -> BatchResult | None:
        """Read and process one batch (pending messages first); ``None`` when idle."""
        if not self._pending_done:
            raw = self.store.read(self.cfg.batch_size, 0, pending=True)
            if len(raw) == 0:
                self._pending_done = True
        if self._pending_done:
            raw = self.store.read(self.cfg.batch_size, self.cfg.block_ms, pending=False)
        if len(raw) == 0:
            return None
        return self.process(raw)

    def run(
        self, until_idle: bool = True, max_batches: int | None = None, progress: bool = False
    ) -> BatchResult:
        """Process until the stream is drained (``until_idle``) or ``max_batches``; returns the
        summed counts. Without ``until_idle`` it runs until interrupted."""
        total = BatchResult()
        bar = task = None
        if progress:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task("processing stream", total=None)
        started = last_log = time.monotonic()
        try:
            n = 0
            while max_batches is None or n < max_batches:
                result = self.step()
                if result is None:
                    if until_idle:
                        break
                    continue
                n += 1
                log.debug("batch %d (commit %d): %d messages, %d accepted, %d engagements, "
                          "%d duplicates, %d users updated, dead letters %s", n,
                          self.meta.commit_seq, result.messages, result.accepted,
                          result.engagements, result.duplicates, result.users_updated,
                          result.dead or "none")
                if result.dead:
                    log.warning("dead-lettered %d messages: %s", sum(result.dead.values()),
                                result.dead)
                total.messages += result.messages
                total.accepted += result.accepted
                total.engagements += result.engagements
                total.duplicates += result.duplicates
                total.users_updated += result.users_updated
                for k, v in result.dead.items():
                    total.dead[k] = total.dead.get(k, 0) + v
                if bar is not None and task is not None:
                    bar.update(task, advance=result.messages,
                               description=f"processing stream: {total.messages} messages")
                now = time.monotonic()
                if now - last_log >= LOG_EVERY_S:
                    last_log = now
                    log.info("processed %d messages in %d batches (%.0f messages/s), "
                             "watermark %d", total.messages, n,
                             total.messages / max(now - started, 1e-9),
                             self.meta.watermark_ms)
        finally:
            if bar is not None:
                bar.stop()
            log.info("processor stopped: %d messages, %d accepted, %d engagements, "
                     "%d duplicates, %d dead letters, %d users updated", total.messages,
                     total.accepted, total.engagements, total.duplicates,
                     sum(total.dead.values()), total.users_updated)
        return total


# ------------------------------------------------------------------------------- wiring


def open_stream(profile: Any) -> Any:
    """The profile's event stream: :class:`~features.stream.RedisEventStream` (production) or
    :class:`~features.stream.SqliteEventQueue` (embedded)."""
    from features.stream import RedisEventStream, SqliteEventQueue

    if profile.kind == "production":
        return RedisEventStream(profile.redis_client(), profile.key_prefix)
    return SqliteEventQueue(profile.queue_path)


def open_processor(profile: Any, cfg: ProcessorConfig | None = None,
                   feast_online: bool = True) -> StreamProcessor:
    """A processor for ``profile``; ``feast_online=False`` (embedded) skips the Feast online
    writes (state, dead letters and offline log still committed)."""
    from features.state import RedisProcessorStore, SqliteProcessorStore
    from features.store import push_counters, push_sequences

    cfg = cfg or ProcessorConfig()
    stream = open_stream(profile)
    sink = counter_sink = None
    if profile.kind == "production":
        store: ProcessorStore = RedisProcessorStore(
            stream, profile.project, seq_len=cfg.seq_len, cache_users=cfg.state_cache_users)
    else:
        store = SqliteProcessorStore(stream, seq_len=cfg.seq_len)
        if feast_online:
            if not (profile.root / "registry.db").exists():
                raise UserError(
                    f"no Feast registry under {profile.root}: run `transact features apply "
                    f"--root {profile.root}` first (or process with --no-feast-online)")
            feast_store = profile.feature_store()

            def sink(user_ids: np.ndarray, sequences: np.ndarray) -> None:
                push_sequences(feast_store, user_ids, sequences)

            def counter_sink(side: str, ids: np.ndarray, totals: np.ndarray,
                             watermark_ms: int) -> None:
                push_counters(feast_store, side, ids, totals, watermark_ms)

    return StreamProcessor(store, OfflineLog(profile.offline_log_dir), cfg, online_sink=sink,
                           counter_sink=counter_sink)
