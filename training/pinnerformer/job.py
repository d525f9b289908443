"""PinnerFormer-style daily batch user embeddings (arXiv 2205.04507, simplified for this platform).

One L2-normed ``out_dim`` (32) embedding per user per day, computed from the user's long
engagement history (the latest ``history_len`` = 256 clicks / saves / hides, longer than the
100-action realtime window) strictly before the start of the day. The model is trained with a
*dense all-action* objective: from the embedding at cut-off ``c`` (a UTC day start), predict every
positive (click / save) item of the user in ``[c, c + window_days)`` with a sampled softmax over
in-batch positives plus random items (see :mod:`transact.model.pinnerformer`).

Daily job (:func:`run_daily_embeddings`, CLI ``transact train pinnerformer``)::

    train on cut-offs c with  min_day + warmup_days <= c  and  c + window_days <= first_day
    (or reuse a checkpoint trained before first_day), then for each day D >= first_day:
        embed every user seen before D from the engagements with timestamp < D
        write  <out_dir>/user_embeddings/date=YYYY-MM-DD/part-0.parquet

Output columns (:data:`EMBEDDING_SCHEMA`, one file per day, one row group per events part):
``user_id`` int64, ``event_timestamp`` timestamp[ms, UTC] = start of the day the embedding is valid
for, ``user_emb`` fixed_size_list<float32>[32], ``created_timestamp`` timestamp[ms, UTC] = when the
job wrote it. A user with events before D but no engagement gets a zero vector (counted); a user
with no event at all before D gets no row (counted) - readers treat a missing row as zeros.

No leakage: the model only sees events before ``first_day`` (the checkpoint records that horizon and
a reused checkpoint trained past the first day to embed is refused), and the day-D embedding only
reads events with ``timestamp_ms < D``.

The job streams over events parts (a user never spans two parts): one part's engagements are in
memory at a time during inference; training holds the engagements before ``first_day`` of the users
it samples (``max_train_users``, about that many, hashed by user id).

Idempotent: each day's file is written to ``part-0.parquet.tmp`` and renamed over the previous
one, so re-running a day replaces that day's output (and only it); ``model.pt``,
``item_embeddings.parquet`` and ``stats.json`` describe the latest run. Progress goes to the
``training.pinnerformer`` loggers (one line per phase, per training tenth and per day).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from training.pinnerformer.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from training.pinnerformer.config import PinnerFormerConfig
from training.pinnerformer.data import (
    EngagementLog,
    count_before,
    dataset_days,
    day_str,
    engagement_log_from_events,
    history_at,
    item_content,
    parse_day,
)
from training.pinnerformer.fit import Progress, TrainStats, torch_session, train_pinnerformer
from transact.data.dataset import DatasetMeta, iter_event_parts
from transact.errors import UserError
from transact.model.pinnerformer import PinnerFormerModel
from transact.schema import DAY_MS, USER_EMB_DIM

__all__ = ["EMBEDDING_SCHEMA", "ITEM_EMBEDDING_SCHEMA", "DailyEmbeddingStats", "DayArg",
           "embed_users_at", "item_embeddings", "load_daily_embeddings", "run_daily_embeddings"]

logger = logging.getLogger(__name__)

#: a day as the job takes it: a date, ``'YYYY-MM-DD'`` or an epoch-ms timestamp inside it
DayArg = date | datetime | str | int

EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("event_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("user_emb", pa.list_(pa.float32(), USER_EMB_DIM), nullable=False),
        pa.field("created_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
ITEM_EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("item_emb", pa.list_(pa.float32(), USER_EMB_DIM), nullable=False),
    ]
)
USER_EMB_DIRNAME = "user_embeddings"
ITEM_EMB_NAME = "item_embeddings.parquet"
STATS_NAME = "stats.json"


@dataclass
class DailyEmbeddingStats:
    """What :func:`run_daily_embeddings` wrote (also ``<out_dir>/stats.json``)."""

    days: list[str] = field(default_factory=list)
    rows_per_day: dict[str, int] = field(default_factory=dict)
    #: users seen before the day but with no engagement: written as zero vectors
    zero_history_per_day: dict[str, int] = field(default_factory=dict)
    #: users of the dataset with no event at all before the day: no row written
    unseen_users_per_day: dict[str, int] = field(default_factory=dict)
    #: engagements on items missing from items.parquet (embedded with zero content)
    unknown_item_engagements: int = 0
    trained_until: str = ""
    checkpoint: str = ""
    reused_checkpoint: bool = False
    train: TrainStats | None = None
    output_dir: str = ""
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------------------------
# inference


@torch.inference_mode()
def embed_users_at(
    model: PinnerFormerModel,
    log: EngagementLog,
    users: np.ndarray,
    cutoff_ms: int,
    history_len: int,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (U, D) float32, has_history (U,) bool)`` from engagements before the cut-off.

    Users without any engagement before ``cutoff_ms`` get zero vectors.
    """
    out = np.zeros((len(users), model.cfg.out_dim), dtype=np.float32)
    end = log.seg_start[users] + count_before(
        log.timestamps_ms, log.seg_start, log.seg_stop, cutoff_ms)[users]
    has_history = end > log.seg_start[users]
    todo = np.flatnonzero(has_history)
    for lo in range(0, len(todo), batch_size):
        rows = todo[lo:lo + batch_size]
        hist = history_at(log, users[rows], cutoff_ms, history_len, hist_end=end[rows])
        width = int(hist.lengths.max())
        emb = model.encode_users(
            torch.from_numpy(hist.item_ids[:, :width]),
            torch.from_numpy(hist.actions[:, :width].astype(np.int64)),
            torch.from_numpy(hist.age_ms[:, :width]),
        )
        out[rows] = emb.numpy()
    return out, has_history


@torch.inference_mode()
def item_embeddings(model: PinnerFormerModel, item_ids: np.ndarray) -> np.ndarray:
    """``(I, D)`` float32 learned item embeddings of ``item_ids`` ``(I,)``."""
    return model.encode_items(torch.from_numpy(np.asarray(item_ids, dtype=np.int64))).numpy()


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _resolve_days(
    days: Sequence[DayArg] | None,
    first_day: DayArg | None,
    last_day: DayArg | None,
    cfg: PinnerFormerConfig,
    min_day: int,
    max_day: int,
    trained_until_ms: int | None,
) -> list[int]:
    """The day starts (ms, ascending) to embed: ``days``, or the range ``first_day .. last_day``
    whose missing ends default to the config's (``train_fraction`` or the checkpoint's horizon;
    the last event day, +1 with ``include_next_day``)."""
    if days is not None and (first_day is not None or last_day is not None):
        raise UserError("give the days to embed either as a list (days / --day) or as a range "
                        "(first_day / last_day), not both")

    def check_inside(resolved: list[int], what: str) -> None:
        outside = [day_str(d) for d in resolved if d <= min_day or d > max_day + DAY_MS]
        if outside:
            raise UserError(f"{what} {outside} are outside the dataset ({day_str(min_day)} .. "
                            f"{day_str(max_day)}; the day after the last is allowed)")

    if days is not None:
        resolved = sorted({parse_day(d) for d in days})
        if not resolved:
            raise UserError("days is empty: give at least one YYYY-MM-DD day to embed")
        check_inside(resolved, "days")
        return resolved
    last = max_day + (DAY_MS if cfg.include_next_day else 0)
    if trained_until_ms is not None:
        first = max(trained_until_ms, min_day + DAY_MS)
    else:
        n_days = (max_day - min_day) // DAY_MS + 1
        offset = max(cfg.warmup_days + cfg.window_days, math.ceil(cfg.train_fraction * n_days))
        first = min_day + offset * DAY_MS
    if first_day is not None:
        first = parse_day(first_day)
        check_inside([first], "first_day")
    if last_day is not None:
        last = parse_day(last_day)
        check_inside([last], "last_day")
    if first > last:
        if first_day is not None or last_day is not None:
            raise UserError(f"the first day to embed ({day_str(first)}) is after the last "
                            f"({day_str(last)})")
        raise UserError(f"the dataset ({day_str(min_day)} .. {day_str(max_day)}) is too short "
                        f"to train before and embed after day {day_str(first)}; lower "
                        f"warmup_days / window_days or pass a trained checkpoint")
    return list(range(first, last + 1, DAY_MS))


def run_daily_embeddings(
    dataset_dir: str | Path,
    out_dir: str | Path,
    cfg: PinnerFormerConfig | None = None,
    days: Sequence[DayArg] | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    created_at_ms: int | None = None,
    *,
    first_day: DayArg | None = None,
    last_day: DayArg | None = None,
) -> DailyEmbeddingStats:
    """The daily job: train (or load ``checkpoint``) before the first day, embed every day.

    Args:
        dataset_dir: a dataset directory (shared format).
        out_dir: receives ``user_embeddings/date=YYYY-MM-DD/part-0.parquet`` per day,
            ``model.pt`` (the checkpoint used), ``item_embeddings.parquet`` (learned item
            tower output, for retrieval and evaluation) and ``stats.json``.
        cfg: the configuration (defaults when None). With a checkpoint, the architecture and
            ``history_len`` come from the checkpoint; the rest from ``cfg``.
        days: days to embed (``date`` / ``'YYYY-MM-DD'``); default: from the day at
            ``train_fraction`` of the dataset (or the checkpoint's horizon) to the last day (+1
            with ``include_next_day``). Training uses only events before the first of them.
        progress: show rich progress bars (the log lines are written either way).
        checkpoint: a checkpoint from an earlier run to reuse instead of training; refused when
            it was trained on events on or after the first day to embed.
        created_at_ms: the ``created_timestamp`` to write (default: now).
        first_day / last_day: instead of ``days``, the inclusive range to embed; a missing end
            takes its default (a daily run passes ``first_day=last_day=today``).

    Returns: what was written (also ``out_dir/stats.json``). Re-running a day overwrites that
    day's file and nothing else of ``user_embeddings/``.
    """
    cfg = cfg or PinnerFormerConfig()
    cfg.validate()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    started = time.perf_counter()
    meta = DatasetMeta.read(dataset_dir)
    min_day, max_day = dataset_days(meta)
    content, known_items = item_content(dataset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = DailyEmbeddingStats(output_dir=str(out_dir / USER_EMB_DIRNAME))

    with torch_session(cfg):
        if checkpoint is not None:
            model, model_cfg, train_stats, until_ms = load_checkpoint(checkpoint, content)
            day_list = _resolve_days(days, first_day, last_day, cfg, min_day, max_day,
                                     until_ms)
            if until_ms > day_list[0]:
                raise UserError(
                    f"checkpoint {checkpoint} was trained on events up to {day_str(until_ms)}, "
                    f"after the first day to embed ({day_str(day_list[0])}): its embeddings "
                    f"would leak the future; embed later days or retrain")
            history_len = model_cfg.history_len
            stats.reused_checkpoint = True
            logger.info("PinnerFormer job: reusing checkpoint %s (trained on events before %s)",
                        checkpoint, day_str(until_ms))
            ckpt_path = Path(checkpoint)
            if ckpt_path.resolve() != (out_dir / CHECKPOINT_NAME).resolve():
                save_checkpoint(out_dir / CHECKPOINT_NAME, model, model_cfg, train_stats,
                                until_ms)
        else:
            day_list = _resolve_days(days, first_day, last_day, cfg, min_day, max_day, None)
            logger.info("PinnerFormer job: training on events before %s", day_str(day_list[0]))
            until_ms = day_list[0]
            model, train_stats = train_pinnerformer(dataset_dir, until_ms, cfg, progress)
            history_len = cfg.history_len
            save_checkpoint(out_dir / CHECKPOINT_NAME, model, cfg, train_stats, until_ms)
            stats.train = train_stats
        stats.trained_until = day_str(until_ms)
        stats.checkpoint = str(out_dir / CHECKPOINT_NAME)
        stats.days = [day_str(d) for d in day_list]

        item_tab = pa.table({"item_id": pa.array(known_items, pa.int64()),
                             "item_emb": _fixed_list(item_embeddings(model, known_items))},
                            schema=ITEM_EMBEDDING_SCHEMA)
        _write_atomically(item_tab, out_dir / ITEM_EMB_NAME)
        logger.info("PinnerFormer job: embedding %d day(s) %s .. %s over %d events part(s)",
                    len(day_list), stats.days[0], stats.days[-1], meta.n_parts)

        created = int(time.time() * 1000) if created_at_ms is None else int(created_at_ms)
        created_arr = pa.scalar(created, pa.timestamp("ms", tz="UTC"))
        writers: dict[int, tuple[pq.ParquetWriter, Path, Path]] = {}
        for day in day_list:
            final = out_dir / USER_EMB_DIRNAME / f"date={day_str(day)}" / "part-0.parquet"
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name("part-0.parquet.tmp")
            writers[day] = (pq.ParquetWriter(tmp, EMBEDDING_SCHEMA, compression="zstd"), tmp,
                            final)
            stats.rows_per_day[day_str(day)] = 0
            stats.zero_history_per_day[day_str(day)] = 0
            stats.unseen_users_per_day[day_str(day)] = 0
        last_needed = day_list[-1]
        parts_done = 0
        try:
            with Progress(progress) as bars:
                task = bars.task("PinnerFormer daily embeddings", meta.n_parts or 0)
                for part in iter_event_parts(dataset_dir):
                    log = engagement_log_from_events(part, until_ms=last_needed)
                    unknown = ~np.isin(log.item_ids, known_items)
                    stats.unknown_item_engagements += int(unknown.sum())
                    for day in day_list:
                        seen = np.flatnonzero(log.first_seen_ms < day)
                        key = day_str(day)
                        stats.unseen_users_per_day[key] += int(log.n_users - len(seen))
                        emb, has_history = embed_users_at(model, log, seen, day, history_len,
                                                          cfg.infer_batch_size)
                        stats.rows_per_day[key] += len(seen)
                        stats.zero_history_per_day[key] += int((~has_history).sum())
                        if len(seen) == 0:
                            continue
                        table = pa.table(
                            {
                                "user_id": pa.array(log.user_ids[seen], pa.int64()),
                                "event_timestamp": pa.array(
                                    np.full(len(seen), day, dtype=np.int64),
                                    pa.timestamp("ms", tz="UTC")),
                                "user_emb": _fixed_list(emb),
                                "created_timestamp": pa.array(
                                    np.full(len(seen), created_arr.value, dtype=np.int64),
                                    pa.timestamp("ms", tz="UTC")),
                            },
                            schema=EMBEDDING_SCHEMA,
                        )
                        writers[day][0].write_table(table)
                    bars.advance(task, f"{log.n_users} users")
                    parts_done += 1
                    logger.info("PinnerFormer job: events part %d/%d embedded (%d users)",
                                parts_done, meta.n_parts, log.n_users)
        except BaseException:
            for writer, tmp, _ in writers.values():
                writer.close()
                tmp.unlink(missing_ok=True)
            raise
        for day, (writer, tmp, final) in writers.items():
            writer.close()
            tmp.replace(final)
            logger.info("PinnerFormer job: wrote %s (%d rows)", final, stats.rows_per_day[
                day_str(day)])

    stats.elapsed_s = round(time.perf_counter() - started, 3)
    stats_tmp = out_dir / f"{STATS_NAME}.tmp"
    stats_tmp.write_text(json.dumps(asdict(stats), indent=2))
    stats_tmp.replace(out_dir / STATS_NAME)
    logger.info("PinnerFormer job: done in %.1f s", stats.elapsed_s)
    return stats


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# reading the output


def _embedding_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / USER_EMB_DIRNAME).is_dir():
        path = path / USER_EMB_DIRNAME
    return sorted(path.glob("date=*/part-*.parquet"))


def load_daily_embeddings(
    path: str | Path, days: Sequence[DayArg] | None = None
) -> pa.Table:
    """All daily embeddings under ``path`` as one table (:data:`EMBEDDING_SCHEMA`).

    ``path``: a job's ``out_dir``, its ``user_embeddings`` directory, or one day's file.
    ``days``: only these days. Rows are sorted by ``(event_timestamp, user_id)``.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"daily embeddings {path} do not exist; run the PinnerFormer job first")
    files = _embedding_files(path)
    if days is not None:
        wanted = {day_str(parse_day(d)) for d in days}
        files = [f for f in files if f.parent.name.removeprefix("date=") in wanted
                 or (path.is_file() and f == path)]
    if not files:
        raise UserError(f"{path} holds no user_embeddings/date=YYYY-MM-DD/part-*.parquet files")
    tables = []
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"{file} is malformed or truncated: {err}") from err
        missing = [n for n in EMBEDDING_SCHEMA.names if n not in table.column_names]
        if missing:
            raise UserError(f"{file} lacks columns {missing}: not a PinnerFormer output")
        tables.append(table.select(EMBEDDING_SCHEMA.names).cast(EMBEDDING_SCHEMA))
    table = pa.concat_tables(tables)
    if days is not None and path.is_file():
        wanted_ms = np.array(sorted(parse_day(d) for d in days), dtype=np.int64)
        ts = table.column("event_timestamp").cast(pa.int64()).to_numpy()
        table = table.filter(pa.array(np.isin(ts, wanted_ms)))
    return table.sort_by([("event_timestamp", "ascending"), ("user_id", "ascending")])


