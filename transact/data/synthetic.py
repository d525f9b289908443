"""Generate a synthetic Pinterest-like world as a dataset directory (deterministic by seed).

``generate_world(out_dir, cfg)`` writes ``items.parquet``, ``meta.json`` (source
``"synthetic"``) and one ``events/part-NNNNN.parquet`` per chunk of ``cfg.users_per_chunk``
users. Each chunk is simulated vectorised over its users: Python loops run over days, session
slots and request slots only (at most ``n_days * max_sessions_per_day *
max_requests_per_session`` steps per chunk), never over users or events. Peak memory is set by
``users_per_chunk``; ``n_users`` only sets how many chunks are streamed.

The ground truth (topics, mixtures, the response model) is :class:`SyntheticWorld`; see
``docs/synthetic_world.md`` for the mechanics.

Ids: user ids are ``1..n_users``, item ids ``1..n_items``. ``event_id`` and ``request_id`` are
global counters that increase along (user, time), unique across chunks. All impressions of one
request share its ``request_id`` and ``timestamp_ms``; within a request event ids follow slate
order. The events depend on ``seed`` and ``users_per_chunk`` (a chunk draws from its own
generator); the ground truth of a user depends on ``seed`` and the user id only.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transact.data.dataset import DatasetMeta, EventPartWriter
from transact.data.synthetic_world import (
    SURFACE_NAMES,
    SyntheticWorld,
    UserParams,
    UserState,
    WorldConfig,
    topic_name,
)
from transact.errors import UserError
from transact.schema import DAY_MS, EVENT_SCHEMA, HEADS, ITEM_EMB_DIM, ITEM_SCHEMA

__all__ = ["SyntheticWorld", "UserParams", "UserState", "WorldConfig", "generate_world",
           "items_table", "ChunkEvents"]

#: The oracle's file (``truth/part-NNNNN.parquet``, one per events part): the true outcome
#: probabilities of every impression. Models never read it; the experiment runner scores it as
#: the ceiling ("oracle") beside every model.
TRUTH_SCHEMA = pa.schema(
    [pa.field("request_id", pa.int64(), nullable=False),
     pa.field("item_id", pa.int64(), nullable=False)]
    + [pa.field(f"p_{head}", pa.float32(), nullable=False) for head in HEADS])

#: Minimum pause between two sessions of a user (so sessions split cleanly at a 30 min gap).
SESSION_GAP_MS = 30 * 60 * 1000


@dataclass
class ChunkEvents:
    """Events of one chunk of users, sorted by (user, time, slate position); all arrays (N,)."""

    user_ids: np.ndarray  # int64
    item_ids: np.ndarray  # int64
    action_types: np.ndarray  # int8
    timestamps_ms: np.ndarray  # int64
    surface_codes: np.ndarray  # int8 index into SURFACE_NAMES
    request_index: np.ndarray  # int64 0-based request number within the chunk, in (user, time)
    #: (N, 3) float32 true probabilities of click, save, hide of each impression (the world's
    #: response model at the moment of the impression); ``None`` when not recorded
    true_probs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user_ids)

    def to_table(self, first_event_id: int, first_request_id: int) -> pa.Table:
        """Arrow table with :data:`EVENT_SCHEMA`, ids counted from the given offsets."""
        n_events = len(self)
        surfaces = pa.DictionaryArray.from_arrays(
            pa.array(self.surface_codes, pa.int8()), pa.array(list(SURFACE_NAMES), pa.string()))
        return pa.table({
            "event_id": pa.array(first_event_id + np.arange(n_events, dtype=np.int64)),
            "user_id": pa.array(self.user_ids),
            "item_id": pa.array(self.item_ids),
            "action_type": pa.array(self.action_types),
            "timestamp_ms": pa.array(self.timestamps_ms),
            "surface": surfaces.cast(pa.string()),
            "request_id": pa.array(first_request_id + self.request_index),
        }, schema=EVENT_SCHEMA)

    def truth_table(self, first_request_id: int) -> pa.Table:
        """The oracle's columns (:data:`TRUTH_SCHEMA`): true p_click / p_save / p_hide of every
        impression, keyed by ``(request_id, item_id)`` (a slate holds distinct items)."""
        if self.true_probs is None:
            raise ValueError("this chunk was simulated without recording the true probabilities")
        probs = self.true_probs
        return pa.table({
            "request_id": pa.array(first_request_id + self.request_index),
            "item_id": pa.array(self.item_ids),
            **{f"p_{head}": pa.array(probs[:, k]) for k, head in enumerate(HEADS)},
        }, schema=TRUTH_SCHEMA)


def items_table(world: SyntheticWorld) -> pa.Table:
    """``items.parquet`` content (ITEM_SCHEMA): ids 1..n_items, content vectors, topic, title."""
    n_items = world.cfg.n_items
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    emb = pa.FixedSizeListArray.from_arrays(
        pa.array(world.content_emb[1:].ravel(), pa.float32()), ITEM_EMB_DIM)
    topics = world.item_topic[1:]
    names = np.array([topic_name(t) for t in range(world.n_topics)], dtype=object)
    titles = names[topics] + " pin #" + item_ids.astype(str).astype(object)
    return pa.table({
        "item_id": pa.array(item_ids),
        "content_emb": emb,
        "topic": pa.array(topics.astype(np.int32)),
        "title": pa.array(titles, pa.string()),
    }, schema=ITEM_SCHEMA)


def simulate_chunk(world: SyntheticWorld, user_ids: np.ndarray,
                   rng: np.random.Generator, record_truth: bool = False) -> ChunkEvents:
    """Simulate ``n_days`` of sessions for ``user_ids`` (B,) with the logging policy.

    ``record_truth`` keeps each impression's true (click, save, hide) probabilities in
    :attr:`ChunkEvents.true_probs` (the draws, and so the events, are the same either way).

    Loops over days, session slots and request slots; each step is vectorised over the users
    active in it. Returns the chunk's events sorted by (user, time, slate position).
    """
    cfg = world.cfg
    n_users = len(user_ids)
    params = world.user_params(user_ids)
    state = world.new_state(user_ids, 0, params)
    last_time = np.full(n_users, np.iinfo(np.int64).min // 2, dtype=np.int64)
    slate = cfg.slate_size
    surface_cum = np.cumsum([1.0 - cfg.related_share - cfg.search_share, cfg.related_share])
    max_gap_ms = 20 * cfg.mean_request_gap_s * 1000

    step_rows: list[np.ndarray] = []
    step_times: list[np.ndarray] = []
    step_items: list[np.ndarray] = []
    step_actions: list[np.ndarray] = []
    step_surfaces: list[np.ndarray] = []
    step_probs: list[np.ndarray] = []
    for day in range(cfg.n_days):
        state.day[:] = day
        state.mixture = world.mixture_from_params(params, day)
        n_sessions = np.minimum(rng.poisson(cfg.sessions_per_day * params.activity),
                                cfg.max_sessions_per_day)
        starts = (cfg.start_ms + day * DAY_MS
                  + world.sample_session_starts(rng, n_sessions, cfg.max_sessions_per_day))
        for slot in range(cfg.max_sessions_per_day):
            rows = np.flatnonzero(n_sessions > slot)
            if rows.size == 0:
                break
            session = state.take(rows)
            world.start_session(session, rng)
            n_requests = np.minimum(1 + rng.poisson(cfg.requests_per_session - 1, rows.size),
                                    cfg.max_requests_per_session)
            now = np.maximum(starts[rows, slot], last_time[rows] + SESSION_GAP_MS)
            for request in range(cfg.max_requests_per_session):
                active = np.flatnonzero(n_requests > request)
                if active.size == 0:
                    break
                whole = active.size == rows.size
                part = session if whole else session.take(active)
                items = world.logging_slate(part, rng)
                probs = world.engagement_probs(part, items)
                actions = world.respond(part, items, rng, probs)
                if record_truth:
                    step_probs.append(probs[..., 1:].astype(np.float32))
                world.observe(part, items, actions)
                if not whole:
                    session.put(active, part)
                step_rows.append(rows[active])
                step_times.append(now[active].copy())
                step_items.append(items)
                step_actions.append(actions)
                step_surfaces.append(np.searchsorted(
                    surface_cum, rng.random(active.size), side="right").astype(np.int8))
                last_time[rows[active]] = now[active]
                gaps = cfg.min_request_gap_s * 1000 + np.minimum(
                    rng.exponential(cfg.mean_request_gap_s * 1000, active.size), max_gap_ms)
                now[active] += gaps.astype(np.int64)
            state.put(rows, session)

    if not step_rows:
        empty = np.empty(0, dtype=np.int64)
        return ChunkEvents(empty, empty, empty.astype(np.int8), empty, empty.astype(np.int8),
                           empty, np.zeros((0, 3), np.float32) if record_truth else None)
    request_rows = np.concatenate(step_rows)  # (R,) in step order = time order per user
    request_times = np.concatenate(step_times)
    request_surfaces = np.concatenate(step_surfaces)
    items = np.concatenate(step_items)  # (R, S)
    actions = np.concatenate(step_actions)
    del step_items, step_actions
    order = np.argsort(request_rows, kind="stable")  # (user, time)
    true_probs = (np.concatenate(step_probs)[order].reshape(-1, 3) if record_truth else None)
    return ChunkEvents(
        user_ids=np.repeat(user_ids[request_rows[order]], slate),
        item_ids=items[order].ravel(),
        action_types=actions[order].ravel(),
        timestamps_ms=np.repeat(request_times[order], slate),
        surface_codes=np.repeat(request_surfaces[order], slate),
        request_index=np.repeat(np.arange(len(order), dtype=np.int64), slate),
        true_probs=true_probs,
    )


def generate_world(out_dir: Path | str, cfg: WorldConfig | None = None,
                   progress: bool = False) -> DatasetMeta:
    """Write the world of ``cfg`` to ``out_dir`` (a dataset directory) and return its meta.

    Streams ``ceil(n_users / users_per_chunk)`` chunks, one events part each; memory is bounded
    by ``users_per_chunk``. Existing event parts in ``out_dir`` are replaced. With
    ``cfg.record_truth`` each events part gets a ``truth/part-NNNNN.parquet`` twin holding the
    impressions' true probabilities (:data:`TRUTH_SCHEMA`), the oracle of the experiment tables.
    """
    cfg = (cfg or WorldConfig()).validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} exists and is not a directory; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    world = SyntheticWorld(cfg)
    pq.write_table(items_table(world), out_dir / "items.parquet", compression="zstd")
    writer = EventPartWriter(out_dir)
    truth_dir = out_dir / "truth"
    shutil.rmtree(truth_dir, ignore_errors=True)
    if cfg.record_truth:
        truth_dir.mkdir()
    n_chunks = -(-cfg.n_users // cfg.users_per_chunk)
    next_event_id, next_request_id, users_with_events = 1, 1, 0

    progress_bar = None
    task = None
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        progress_bar = Progress(TextColumn("synthetic world"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("users"), TimeRemainingColumn())
        progress_bar.start()
        task = progress_bar.add_task("users", total=cfg.n_users)
    try:
        for chunk in range(n_chunks):
            first = 1 + chunk * cfg.users_per_chunk
            user_ids = np.arange(first, min(first + cfg.users_per_chunk, cfg.n_users + 1),
                                 dtype=np.int64)
            rng = np.random.default_rng([cfg.seed, 2, chunk])
            events = simulate_chunk(world, user_ids, rng, record_truth=cfg.record_truth)
            n_requests = int(events.request_index[-1]) + 1 if len(events) else 0
            if cfg.record_truth and len(events):
                pq.write_table(events.truth_table(next_request_id),
                               truth_dir / f"part-{writer.n_parts:05d}.parquet",
                               compression="zstd")
            writer.write(events.to_table(next_event_id, next_request_id))
            next_event_id += len(events)
            next_request_id += n_requests
            if len(events):
                users_with_events += int(np.count_nonzero(np.diff(events.user_ids))) + 1
            del events
            if progress_bar is not None and task is not None:
                progress_bar.advance(task, len(user_ids))
    finally:
        if progress_bar is not None:
            progress_bar.stop()

    meta = DatasetMeta(
        source="synthetic",
        n_users=users_with_events,
        n_items=cfg.n_items,
        n_events=writer.n_events,
        n_parts=writer.n_parts,
        min_timestamp_ms=writer.min_ts or 0,
        max_timestamp_ms=writer.max_ts or 0,
        seed=cfg.seed,
        params=asdict(cfg),
        cleaning={"users_without_sessions": cfg.n_users - users_with_events},
        request_grouping="request_id: the items of one logged slate (one request)",
    )
    meta.write(out_dir)
    return meta
