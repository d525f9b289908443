"""Training-example builder: impressions joined with the user's sequence as of request time.

For every impression at request time ``t`` (an event row), the example carries the user's latest
``seq_len`` engagements (click / save / hide) with ``timestamp_ms < t`` *strictly*, newest first,
zero-padded. Equal timestamps are ordered by ``event_id`` (higher = later), so the newest-first
order among ties is by descending ``event_id``; actions at exactly ``t`` (the other outcomes of
the same request, for example) are never visible.

The batch user embedding of an example is the one valid at the start of the request's UTC day:
either read from a daily embedding table (the output of the PinnerFormer stage,
``transact train pinnerformer``: ``user_id``, ``event_timestamp`` = the day it is valid for,
``user_emb``), or, by default, the mean content embedding of the user's positive items before
that day (zeros when there are none).

Everything is vectorised: per events part the engagements are located with ``searchsorted`` over
a packed (user rank, time) key and gathered as ``(N, S)`` index matrices; memory is bounded by
``rows_per_chunk`` examples plus one events part.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transact.data.counters import EngagementCounters
from transact.data.dataset import (
    DatasetError,
    DatasetMeta,
    event_parts,
    is_event_order,
    item_embedding_table,
    read_items,
    read_parquet_checked,
)
from transact.errors import UserError
from transact.schema import (
    DAY_MS,
    EVENT_SCHEMA,
    HEAD_ACTIONS,
    SEQ_LEN,
    SEQUENCE_ACTIONS,
    USER_EMB_DIM,
    ActionType,
    example_schema,
    surface_id,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_TIME_BITS = 40  # 2**40 ms ≈ 34 years of span inside one events part


#: the batch (PinnerFormer) job's learned item vectors, copied next to the examples
PINNERFORMER_ITEMS = "pinnerformer_items.parquet"


#: the item-vector modes the builder makes itself (``learned`` is the separate job)
BUILDER_ITEM_GRAPH_MODES = ("propagated", "spectral", "spectral_propagated", "clustered",
                            "none")


@dataclass
class ExampleConfig:
    """How examples are built.

    ``test_days`` / ``val_days``: the latest UTC days go to test, the ones before to validation,
    the rest to train. ``test_fraction`` / ``val_fraction``, when set, choose those day
    boundaries instead so that test (validation) holds about that fraction of the events, for
    sources whose activity is uneven over time (MovieLens). ``skip_keep_rate`` down-samples
    impressions that got no engagement (the paper down-samples negatives); the choice is a
    deterministic hash of ``event_id`` and the number dropped is counted. ``user_emb_path``: a
    daily user-embedding Parquet (file or directory) to use instead of the mean-positive default.
    ``start_ms``: no examples for requests before it (their events still form later histories;
    the number skipped is counted), e.g. the first day a daily user embedding exists.
    ``item_graph_mode``: the item vectors of ``item_representation="graph"`` written next to
    the examples (``item_graph.parquet``) from the *training window* (events before the
    validation start) — with ``refit_item_graph`` also the same from the window through the
    test start (``item_graph_refit.parquet``, read only by a model refitted on train +
    validation with ``TrainConfig.refit_item_vectors``): ``clustered`` (the default since
    session 8: a one-hot k-means cluster of the items — topic-like, purity 0.90 on the demo world — beside a soft residue of the
    ``spectral_propagated`` vectors; measured better on the synthetic world, worse on
    MovieLens, whose demo asks for ``spectral_propagated``), ``spectral_propagated`` (half
    the dimensions the spectral factors of the window's user x item impression matrix, half
    the content vectors propagated over its co-engagement graph), ``propagated``,
    ``spectral`` or ``none``; seconds, no training; see :mod:`transact.model.item_graph` and
    docs/model.md; the spectral modes hold the window's (user, item) ids in memory, 16 bytes
    per impression (24 with ``refit_item_graph``: the time too). The learned variant is the separate job
    ``transact train item-embeddings --mode learned``. ``engagement_counters``: also write the
    point-in-time ``item_counts`` / ``user_counts`` columns (:mod:`transact.data.counters`;
    about 50 bytes per event of memory for the item and user sides together, built before the
    first part).
    """

    seq_len: int = SEQ_LEN
    test_days: int = 2
    val_days: int = 1
    test_fraction: float | None = None
    val_fraction: float | None = None
    skip_keep_rate: float = 1.0
    user_emb_path: str | None = None
    start_ms: int | None = None
    rows_per_chunk: int = 100_000
    item_graph_mode: str = "clustered"
    engagement_counters: bool = True
    refit_item_graph: bool = False

    def validate(self) -> ExampleConfig:
        """Raise :class:`UserError` naming the first bad setting; return ``self``."""
        if not 1 <= self.seq_len <= 1000:
            raise UserError(f"seq_len must be in [1, 1000], got {self.seq_len}")
        if self.test_days < 1 or self.val_days < 0:
            raise UserError("test_days must be >= 1 and val_days >= 0")
        if not 0.0 < self.skip_keep_rate <= 1.0:
            raise UserError(f"skip_keep_rate must be in (0, 1], got {self.skip_keep_rate}")
        for name in ("test_fraction", "val_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 0.5:
                raise UserError(f"{name} must be in (0, 0.5), got {value}")
        if (self.test_fraction is None) != (self.val_fraction is None):
            raise UserError("set both test_fraction and val_fraction, or neither")
        if self.rows_per_chunk < 1:
            raise UserError("rows_per_chunk must be >= 1")
        if self.item_graph_mode not in BUILDER_ITEM_GRAPH_MODES:
            raise UserError(f"item_graph_mode must be one of {BUILDER_ITEM_GRAPH_MODES}, got "
                            f"{self.item_graph_mode!r}")
        return self


@dataclass
class ExampleStats:
    """What the builder wrote (also saved as ``stats.json``)."""

    examples: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    positives: dict[str, dict[str, int]] = field(default_factory=dict)
    split_boundaries_ms: dict[str, int] = field(default_factory=dict)
    skips_dropped: int = 0
    examples_before_start: int = 0
    examples_without_history: int = 0
    users_without_user_emb: int = 0
    seq_len_mean: float = 0.0
    elapsed_s: float = 0.0
    source: str = ""

    @property
    def total(self) -> int:
        return sum(self.examples.values())


def split_boundaries(max_timestamp_ms: int, test_days: int, val_days: int) -> tuple[int, int]:
    """``(val_start_ms, test_start_ms)``: UTC-day boundaries of the validation and test spans."""
    last_day_start = (max_timestamp_ms // DAY_MS) * DAY_MS
    test_start = last_day_start - (test_days - 1) * DAY_MS
    val_start = test_start - val_days * DAY_MS
    return val_start, test_start


def fraction_boundaries(
    dataset_dir: Path, test_fraction: float, val_fraction: float
) -> tuple[int, int]:
    """UTC-day boundaries with about ``test_fraction`` of the events on or after ``test_start``
    and ``val_fraction`` in ``[val_start, test_start)``. Reads only the timestamp column."""
    days = np.concatenate([
        pq.read_table(path, columns=["timestamp_ms"]).column("timestamp_ms").to_numpy() // DAY_MS
        for path in event_parts(dataset_dir)
    ])
    unique_days, counts = np.unique(days, return_counts=True)
    tail = np.cumsum(counts[::-1])[::-1] / counts.sum()  # share of events on or after each day
    test_idx = int(np.nonzero(tail >= test_fraction)[0][-1])
    val_idx = int(np.nonzero(tail >= test_fraction + val_fraction)[0][-1])
    val_idx = min(val_idx, max(test_idx - 1, 0))
    return int(unique_days[val_idx]) * DAY_MS, int(unique_days[test_idx]) * DAY_MS


def _packed_key(user_rank: np.ndarray, rel_time: np.ndarray) -> np.ndarray:
    return (user_rank.astype(np.int64) << _TIME_BITS) | rel_time.astype(np.int64)


class _DailyEmbeddings:
    """As-of lookup in a daily user-embedding table: latest row with day <= request's day."""

    def __init__(self, path: str) -> None:
        src = Path(path)
        if not src.exists():
            raise UserError(f"user embedding table {src} does not exist")
        import pyarrow.dataset as pads

        table = pq.read_table(src) if src.is_file() else pads.dataset(src).to_table()
        missing = {"user_id", "event_timestamp", "user_emb"} - set(table.column_names)
        if missing:
            raise UserError(f"user embedding table {src} lacks columns {sorted(missing)}")
        ts = table.column("event_timestamp")
        if pa.types.is_timestamp(ts.type):
            ts = pc.cast(pc.cast(ts, pa.timestamp("ms")), pa.int64())
        users = table.column("user_id").to_numpy().astype(np.int64)
        days = np.asarray(ts.to_numpy(zero_copy_only=False), dtype=np.int64) // DAY_MS
        emb = np.asarray(table.column("user_emb").combine_chunks().values, dtype=np.float32)
        emb = emb.reshape(len(users), -1)
        order = np.lexsort((days, users))
        self.users, self.days, self.emb = users[order], days[order], emb[order]
        # exact integer (user, day) keys: dense user rank * day span + day offset (a float key
        # such as ``user * 1e6 + day`` loses the day for user ids above ~2**33)
        self._unique_users, rank = np.unique(self.users, return_inverse=True)
        self._day0 = int(self.days.min()) - 1 if len(self.days) else 0
        self._span = int(self.days.max()) - self._day0 + 1 if len(self.days) else 1
        if len(self._unique_users) * self._span >= 1 << 62:
            raise UserError(f"user embedding table {src} spans too many users x days to index")
        self._keys = rank.astype(np.int64) * self._span + (self.days - self._day0)

    def lookup(
        self, user_ids: np.ndarray, request_day: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(emb (N, U), found (N,) bool)`` for each (user, day)."""
        users = np.asarray(user_ids, dtype=np.int64)
        days = np.asarray(request_day, dtype=np.int64)
        rank = np.searchsorted(self._unique_users, users)
        known = rank < len(self._unique_users)
        known[known] = self._unique_users[rank[known]] == users[known]
        # the latest row with (user, day) <= the query: clipping the day keeps the key inside
        # the user's block (offset 0 sorts before every row of the user: not found)
        offset = np.clip(days - self._day0, 0, self._span - 1)
        key = rank.astype(np.int64) * self._span + offset
        pos = np.searchsorted(self._keys, key, side="right") - 1
        found = known & (pos >= 0)
        found[found] = self.users[pos[found]] == users[found]
        out = np.zeros((len(user_ids), self.emb.shape[1]), dtype=np.float32)
        out[found] = self.emb[pos[found]]
        return out, found


def iter_example_chunks(
    events: pa.Table,
    item_emb: np.ndarray,
    cfg: ExampleConfig,
    daily_emb: _DailyEmbeddings | None = None,
    counters: tuple[EngagementCounters, EngagementCounters] | None = None,
) -> Iterator[pa.Table]:
    """Examples for one events table whose users are complete (all their events are in it).

    Args:
        events: rows in :data:`EVENT_SCHEMA`, any order.
        item_emb: ``(n_items + 1, E)`` content-embedding lookup (row 0 = padding).
        counters: ``(per item, per user)`` engagement counters over *all* events (the item
            side needs every user's); ``None`` with ``cfg.engagement_counters`` counts the
            events of this table only.
    Yields:
        tables in :func:`example_schema` of at most ``cfg.rows_per_chunk`` rows, one row per
        event, in (user, time, event_id) order.
    """
    seq_len, rows_per_chunk = cfg.seq_len, cfg.rows_per_chunk
    if not is_event_order(events):
        events = events.sort_by([("user_id", "ascending"), ("timestamp_ms", "ascending"),
                                 ("event_id", "ascending")])
    users = events.column("user_id").to_numpy()
    ts = events.column("timestamp_ms").to_numpy()
    items = events.column("item_id").to_numpy()
    actions = events.column("action_type").to_numpy().astype(np.int8)
    n = len(users)
    if n == 0:
        return
    if item_emb.shape[0] <= int(items.max()):
        raise DatasetError(f"events reference item {int(items.max())} which items.parquet lacks")

    # dense user rank (users are sorted) and time relative to the part's start
    user_rank = np.concatenate([[0], np.cumsum(users[1:] != users[:-1])])
    t0 = int(ts.min())
    rel = ts - t0
    if int(rel.max()) >= 1 << _TIME_BITS:
        raise DatasetError("an events part spans more than 34 years of timestamps")
    key = _packed_key(user_rank, rel)
    user_start_key = _packed_key(user_rank, np.zeros_like(rel))

    # engagements (the sequence vocabulary), already in (user, ts, event_id) order
    is_eng = np.isin(actions, np.array([int(a) for a in SEQUENCE_ACTIONS], dtype=np.int8))
    eng_key = key[is_eng]
    eng_items, eng_actions, eng_ts = items[is_eng], actions[is_eng], ts[is_eng]
    end = np.searchsorted(eng_key, key, side="left")  # first engagement at or after t
    start = np.searchsorted(eng_key, user_start_key, side="left")

    # batch user embedding valid at the start of the request's UTC day
    day_start = (ts // DAY_MS) * DAY_MS
    if daily_emb is not None:
        user_batch_emb, _found = daily_emb.lookup(users, ts // DAY_MS)
    else:
        is_pos = (actions == ActionType.CLICK) | (actions == ActionType.SAVE)
        pos_key = key[is_pos]
        pos_emb = item_emb[items[is_pos]].astype(np.float64)
        cum = np.zeros((len(pos_key) + 1, item_emb.shape[1]), dtype=np.float64)
        np.cumsum(pos_emb, axis=0, out=cum[1:])
        day_key = _packed_key(user_rank, np.maximum(day_start - t0, 0))
        p_end = np.searchsorted(pos_key, day_key, side="left")
        p_start = np.searchsorted(pos_key, user_start_key, side="left")
        count = (p_end - p_start)[:, None]
        user_batch_emb = ((cum[p_end] - cum[p_start]) / np.maximum(count, 1)).astype(np.float32)
        if user_batch_emb.shape[1] != USER_EMB_DIM:
            raise DatasetError(f"item embeddings are {user_batch_emb.shape[1]}-d; the default "
                               f"batch user embedding needs {USER_EMB_DIM}-d")

    surfaces = events.column("surface").combine_chunks().dictionary_encode()
    surface_codes = np.array([surface_id(name) for name in surfaces.dictionary.to_pylist()],
                             dtype=np.int8)
    surface_ids = surface_codes[surfaces.indices.to_numpy(zero_copy_only=False)]
    request_ids = events.column("request_id").to_numpy()
    schema = example_schema(seq_len, user_batch_emb.shape[1], counters=cfg.engagement_counters)
    if cfg.engagement_counters and counters is None:
        counters = (EngagementCounters(items, ts, actions), EngagementCounters(users, ts, actions))

    def fixed(flat: np.ndarray, width: int, typ: pa.DataType) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=typ), width)

    # gather the (rows, seq_len) sequences a chunk of rows at a time: bounded memory
    offsets = np.arange(seq_len)[None, :]
    for lo in range(0, n, rows_per_chunk):
        hi = min(n, lo + rows_per_chunk)
        idx = end[lo:hi, None] - 1 - offsets  # newest first
        valid = idx >= start[lo:hi, None]
        idx = np.where(valid, idx, 0)
        if len(eng_key) == 0:
            seq_items = np.zeros(idx.shape, np.int64)
            seq_actions = np.zeros(idx.shape, np.int8)
            seq_ts = np.zeros(idx.shape, np.int64)
        else:
            seq_items = np.where(valid, eng_items[idx], 0)
            seq_actions = np.where(valid, eng_actions[idx], 0).astype(np.int8)
            seq_ts = np.where(valid, eng_ts[idx], 0)
        chunk_actions = actions[lo:hi]
        columns = {
            "request_id": pa.array(request_ids[lo:hi]),
            "user_id": pa.array(users[lo:hi]),
            "item_id": pa.array(items[lo:hi]),
            "request_time_ms": pa.array(ts[lo:hi]),
            "surface_id": pa.array(surface_ids[lo:hi]),
            "outcome": pa.array(chunk_actions),
            **{f"label_{a.name.lower()}": pa.array((chunk_actions == a).astype(np.int8))
               for a in HEAD_ACTIONS},
            "seq_len": pa.array(valid.sum(axis=1).astype(np.int16)),
            "seq_item_ids": fixed(seq_items, seq_len, pa.int64()),
            "seq_action_types": fixed(seq_actions, seq_len, pa.int8()),
            "seq_timestamps_ms": fixed(seq_ts, seq_len, pa.int64()),
            "user_batch_emb": fixed(user_batch_emb[lo:hi], user_batch_emb.shape[1], pa.float32()),
        }
        if counters is not None and cfg.engagement_counters:
            columns["item_counts"] = fixed(counters[0].lookup(items[lo:hi], ts[lo:hi]), 4,
                                           pa.int32())
            columns["user_counts"] = fixed(counters[1].lookup(users[lo:hi], ts[lo:hi]), 4,
                                           pa.int32())
        yield pa.table([columns[f.name] for f in schema], schema=schema)


def build_examples_from_events(
    events: pa.Table,
    item_emb: np.ndarray,
    cfg: ExampleConfig,
    daily_emb: _DailyEmbeddings | None = None,
) -> pa.Table:
    """All examples of an events table whose users are complete, as one table (small data)."""
    chunks = list(iter_example_chunks(events, item_emb, cfg, daily_emb))
    if not chunks:
        return example_schema(cfg.seq_len, counters=cfg.engagement_counters).empty_table()
    return pa.concat_tables(chunks)


def _keep_mask(events: pa.Table, keep_rate: float) -> np.ndarray:
    actions = events.column("action_type").to_numpy()
    if keep_rate >= 1.0:
        return np.ones(len(actions), dtype=bool)
    ids = events.column("event_id").to_numpy().astype(np.uint64)
    # splitmix64-style hash: deterministic, independent of order and chunking
    h = (ids + np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(31)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return (actions != ActionType.SKIP) | (u < keep_rate)


def build_examples(
    dataset_dir: str | Path,
    out_dir: str | Path,
    cfg: ExampleConfig | None = None,
    progress: bool = False,
) -> ExampleStats:
    """Build ``out_dir/{train,val,test}/part-NNNNN.parquet`` from a dataset directory.

    One events part at a time (a user never spans two parts), rows in chunks of
    ``cfg.rows_per_chunk``: memory stays bounded whatever the dataset size. Also copies
    ``items.parquet`` and writes ``stats.json``.
    """
    cfg = cfg or ExampleConfig()
    cfg.validate()
    started = time.perf_counter()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    meta = DatasetMeta.read(dataset_dir)
    parts = event_parts(dataset_dir)
    items = read_items(dataset_dir)
    item_emb = item_embedding_table(items)
    daily = _DailyEmbeddings(cfg.user_emb_path) if cfg.user_emb_path else None
    # counted before skips are down-sampled: an impression counts whether or not it is kept
    counters = ((EngagementCounters.from_event_parts(parts, "item_id"),
                 EngagementCounters.from_event_parts(parts, "user_id"))
                if cfg.engagement_counters else None)
    if cfg.test_fraction is not None and cfg.val_fraction is not None:
        val_start, test_start = fraction_boundaries(dataset_dir, cfg.test_fraction,
                                                    cfg.val_fraction)
        if test_start <= meta.min_timestamp_ms or val_start <= meta.min_timestamp_ms:
            raise UserError("the dataset spans too few days for a fraction-based split")
    else:
        val_start, test_start = split_boundaries(meta.max_timestamp_ms, cfg.test_days,
                                                 cfg.val_days)
        if test_start <= meta.min_timestamp_ms:
            raise UserError(f"the dataset spans too few days for {cfg.test_days} test and "
                            f"{cfg.val_days} validation days")

    if out_dir.exists():
        for split in SPLITS:
            shutil.rmtree(out_dir / split, ignore_errors=True)
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dataset_dir / "items.parquet", out_dir / "items.parquet")
    # the batch job's item vectors (the space its user embeddings live in), next to the
    # examples so that a ranker can use them (``item_representation="pinnerformer"``)
    (out_dir / PINNERFORMER_ITEMS).unlink(missing_ok=True)
    if cfg.user_emb_path:
        batch_items = Path(cfg.user_emb_path).parent / "item_embeddings.parquet"
        if batch_items.exists():
            shutil.copyfile(batch_items, out_dir / PINNERFORMER_ITEMS)
    # the synthetic world's oracle (true outcome probabilities); models never read it
    shutil.rmtree(out_dir / "truth", ignore_errors=True)
    if (dataset_dir / "truth").is_dir():
        shutil.copytree(dataset_dir / "truth", out_dir / "truth")

    stats = ExampleStats(source=meta.source)
    stats.split_boundaries_ms = {"val_start": val_start, "test_start": test_start}
    stats.positives = {s: {a.name.lower(): 0 for a in HEAD_ACTIONS} for s in SPLITS}
    seq_len_sum = 0
    part_counter = dict.fromkeys(SPLITS, 0)
    # the training window's engagements for the item vectors (``item_graph_mode``), and for
    # the spectral modes the (user, item) ids of every impression of the window
    from transact.model.item_graph import IMPRESSION_MODES

    window_events: dict[str, list[np.ndarray]] = {
        k: [] for k in ("user_id", "item_id", "action_type", "timestamp_ms")}
    # (the impressions' times only to cut the training window out of the refit window)
    impression_columns = ("user_id", "item_id") + (
        ("timestamp_ms",) if cfg.refit_item_graph else ())
    window_impressions: dict[str, list[np.ndarray]] | None = (
        {k: [] for k in impression_columns}
        if cfg.item_graph_mode in IMPRESSION_MODES else None)

    progress_bar = None
    task = None
    if progress:
        from rich.progress import Progress

        progress_bar = Progress()
        progress_bar.start()
        task = progress_bar.add_task("building examples", total=meta.n_events or None)
    try:
        for path in parts:
            events = read_parquet_checked(path, EVENT_SCHEMA)
            if cfg.item_graph_mode != "none":
                # with ``refit_item_graph`` through the test start: the training window
                # (``timestamp_ms < val_start``) is then cut from the refit window
                window_end = test_start if cfg.refit_item_graph else val_start
                early = events.column("timestamp_ms").to_numpy() < window_end
                if window_impressions is not None:
                    for name, values in window_impressions.items():
                        values.append(events.column(name).to_numpy()[early])
                early &= np.isin(events.column("action_type").to_numpy(),
                                 (int(ActionType.CLICK), int(ActionType.SAVE)))
                for name, values in window_events.items():
                    values.append(events.column(name).to_numpy()[early])
            # Skips never enter sequences nor the default user embedding, so down-sampling
            # them before the build is exact.
            keep = _keep_mask(events, cfg.skip_keep_rate)
            stats.skips_dropped += int((~keep).sum())
            if not keep.all():
                events = events.filter(pa.array(keep))
            for examples in iter_example_chunks(events, item_emb, cfg, daily, counters):
                if cfg.start_ms is not None:
                    early = examples.column("request_time_ms").to_numpy() < cfg.start_ms
                    stats.examples_before_start += int(early.sum())
                    examples = examples.filter(pa.array(~early))
                req_ts = examples.column("request_time_ms").to_numpy()
                split_of = np.where(req_ts >= test_start, 2, np.where(req_ts >= val_start, 1, 0))
                seq_lengths = examples.column("seq_len").to_numpy()
                seq_len_sum += int(seq_lengths.sum())
                stats.examples_without_history += int((seq_lengths == 0).sum())
                for code, split in enumerate(SPLITS):
                    chunk = examples.filter(pa.array(split_of == code))
                    if chunk.num_rows == 0:
                        continue
                    name = f"part-{part_counter[split]:05d}.parquet"
                    pq.write_table(chunk, out_dir / split / name, compression="zstd")
                    part_counter[split] += 1
                    stats.examples[split] += chunk.num_rows
                    for action in HEAD_ACTIONS:
                        label = action.name.lower()
                        stats.positives[split][label] += int(
                            pc.sum(chunk.column(f"label_{label}")).as_py() or 0)
            if progress_bar is not None:
                progress_bar.update(task, advance=events.num_rows)
    finally:
        if progress_bar is not None:
            progress_bar.stop()

    stats.seq_len_mean = seq_len_sum / max(stats.total, 1)
    _write_item_graph(out_dir, item_emb, window_events, window_impressions,
                      cfg.item_graph_mode, val_start,
                      test_start if cfg.refit_item_graph else None)
    stats.elapsed_s = time.perf_counter() - started
    (out_dir / "stats.json").write_text(json.dumps(asdict(stats), indent=2))
    return stats


def _write_item_graph(out_dir: Path, content: np.ndarray,
                      window_events: dict[str, list[np.ndarray]],
                      window_impressions: dict[str, list[np.ndarray]] | None, mode: str,
                      window_end_ms: int, refit_window_end_ms: int | None) -> None:
    """The ``graph`` item vectors of the examples (see :class:`ExampleConfig`): those of the
    training window (events before ``window_end_ms``, the validation start) and, for a model
    refitted on train + validation, those of the window through ``refit_window_end_ms`` (the
    test start; ``None``: not written). ``window_*`` hold the events before the later end."""
    from transact.model.item_graph import (
        GRAPH_FILE,
        GRAPH_REFIT_FILE,
        GRAPH_REFIT_SUMMARY_FILE,
        GRAPH_SUMMARY_FILE,
        ItemGraphConfig,
        item_vectors_from_events,
        write_item_graph,
    )

    for name in (GRAPH_FILE, GRAPH_SUMMARY_FILE, GRAPH_REFIT_FILE, GRAPH_REFIT_SUMMARY_FILE):
        (out_dir / name).unlink(missing_ok=True)
    if mode == "none":
        return

    def joined(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) if v else np.empty(0, np.int64) for k, v in parts.items()}

    events = joined(window_events)
    shown = None if window_impressions is None else joined(window_impressions)
    cfg = ItemGraphConfig(mode=mode)
    windows = [(window_end_ms, False)]
    if refit_window_end_ms is not None:
        windows.append((refit_window_end_ms, True))
    for end_ms, refit in windows:
        started = time.perf_counter()
        keep = events["timestamp_ms"] < end_ms
        columns = {k: v[keep] for k, v in events.items()}
        impressions = None
        if shown is not None:
            keep_shown = (shown["timestamp_ms"] < end_ms if "timestamp_ms" in shown
                          else slice(None))  # without times: the training window only
            impressions = (shown["user_id"][keep_shown], shown["item_id"][keep_shown])
        result = item_vectors_from_events(
            content, columns["user_id"], columns["item_id"], columns["action_type"],
            columns["timestamp_ms"], cfg, impressions=impressions)
        write_item_graph(out_dir, result, cfg, {
            "window_end_ms": int(end_ms),
            "events_read": int(len(columns["item_id"] if impressions is None
                                   else impressions[1])),
            "seconds": time.perf_counter() - started, "made_by": "build_examples"},
            refit=refit)


def read_examples(examples_dir: str | Path, split: str) -> pa.Table:
    """All examples of one split (``train``, ``val`` or ``test``) as one table."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {SPLITS}")
    files = sorted((Path(examples_dir) / split).glob("part-*.parquet"))
    if not files:
        raise DatasetError(
            f"{examples_dir}/{split} holds no examples; run `transact data examples`")
    return pa.concat_tables([read_parquet_checked(f) for f in files])
