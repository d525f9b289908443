"""PinnerFormer-style daily batch user embeddings (arXiv 2205.04507, simplified for this platform).

One L2-normed ``out_dim`` (32) embedding per user per day, computed from the user's long
engagement history (the latest ``history_len`` = 256 clicks / saves / hides, longer than the
100-action realtime window) strictly before the start of the day. The model is trained with a
*dense all-action* objective: from the embedding at cut-off ``c`` (a UTC day start), predict every
positive (click / save) item of the user in ``[c, c + window_days)`` with a sampled softmax over
in-batch positives plus random items (see :mod:`features.pinnerformer_model`).

Daily job (:func:`run_daily_embeddings`)::

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
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from features.pinnerformer_data import (
    EngagementLog,
    concat_logs,
    count_before,
    engagement_log_from_events,
    history_at,
    positives_between,
    ranges_to_rows,
)
from features.pinnerformer_model import ModelConfig, PinnerFormerModel, dense_all_action_loss
from transact.data.dataset import (
    DatasetError,
    DatasetMeta,
    item_embedding_table,
    iter_event_parts,
    read_items,
)
from transact.errors import CorruptArtifact, UserError
from transact.schema import DAY_MS, USER_EMB_DIM

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
CHECKPOINT_NAME = "model.pt"
ITEM_EMB_NAME = "item_embeddings.parquet"
STATS_NAME = "stats.json"


@dataclass
class PinnerFormerConfig:
    """Everything the daily job needs.

    Data / objective:
        history_len: engagements per user fed to the encoder (newest ``history_len``).
        window_days: ``W``, the future window ``[c, c + W)`` whose positives are the targets.
        warmup_days: the first cut-off is this many days after the dataset's first day.
        train_fraction: without explicit ``days``, the first embedded day is at this fraction
            of the dataset's days (and at least ``warmup_days + window_days`` in).
        include_next_day: also write the day after the last event (tomorrow's embedding, which
            is what a production daily run produces).
    Training:
        train_steps, batch_size (users per step), lr, weight_decay.
        max_targets_per_user: future positives per user per step (sampled when more).
        n_random_negatives: uniform random items added to the in-batch candidates.
        logq_correction: subtract log(expected draws) from each candidate's logit.
        max_train_users: train on about this many users (a hash of seed and user id picks
            them part by part, so training memory is bounded by the sample; None = all).
    Inference / runtime:
        infer_batch_size, seed, num_threads (None = leave torch's setting).
    """

    history_len: int = 256
    window_days: int = 7
    warmup_days: int = 3
    train_fraction: float = 0.5
    include_next_day: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    train_steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_targets_per_user: int = 32
    n_random_negatives: int = 512
    logq_correction: bool = True
    max_train_users: int | None = None
    infer_batch_size: int = 512
    seed: int = 0
    num_threads: int | None = None

    def validate(self) -> PinnerFormerConfig:
        """Raise :class:`UserError` naming the first bad setting; return ``self``."""
        checks = [
            (self.history_len >= 1, f"history_len must be >= 1, got {self.history_len}"),
            (self.window_days >= 1, f"window_days must be >= 1, got {self.window_days}"),
            (self.warmup_days >= 0, f"warmup_days must be >= 0, got {self.warmup_days}"),
            (0.0 < self.train_fraction < 1.0,
             f"train_fraction must be in (0, 1), got {self.train_fraction}"),
            (self.train_steps >= 0, f"train_steps must be >= 0, got {self.train_steps}"),
            (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
            (self.max_targets_per_user >= 1, "max_targets_per_user must be >= 1"),
            (self.n_random_negatives >= 0, "n_random_negatives must be >= 0"),
            (self.infer_batch_size >= 1, "infer_batch_size must be >= 1"),
            (self.model.out_dim == USER_EMB_DIM,
             f"model.out_dim must be {USER_EMB_DIM} (the feature's width), got "
             f"{self.model.out_dim}"),
            (self.model.d_model % self.model.n_heads == 0,
             f"model.d_model ({self.model.d_model}) must be divisible by model.n_heads "
             f"({self.model.n_heads})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"PinnerFormer config: {message}")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PinnerFormerConfig:
        values = dict(values)
        model = values.pop("model", {}) or {}
        unknown = set(values) - set(cls.__dataclass_fields__)
        unknown |= {f"model.{k}" for k in set(model) - set(ModelConfig.__dataclass_fields__)}
        if unknown:
            raise UserError(f"unknown PinnerFormer config keys: {sorted(unknown)}")
        return cls(model=ModelConfig(**model), **values)


@dataclass
class TrainStats:
    """What training did (saved inside the checkpoint and in ``stats.json``)."""

    trained_until: str = ""
    cutoff_days: list[str] = field(default_factory=list)
    n_examples: int = 0
    n_train_users: int = 0
    steps: int = 0
    loss_first: float = float("nan")
    loss_last: float = float("nan")
    temperature: float = float("nan")
    elapsed_s: float = 0.0


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
# small helpers


def day_str(day_start_ms: int) -> str:
    return datetime.fromtimestamp(day_start_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def parse_day(day: date | datetime | str | int) -> int:
    """Start (ms, UTC) of a day given as ``date``, ``'YYYY-MM-DD'`` or a ms timestamp in it."""
    if isinstance(day, datetime):
        day = day.astimezone(UTC).date() if day.tzinfo else day.date()
    if isinstance(day, date):
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    if isinstance(day, str):
        try:
            parsed = datetime.strptime(day.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise UserError(f"day {day!r} is not a date; write it as YYYY-MM-DD")
        return int(parsed.timestamp() * 1000)
    if isinstance(day, int | np.integer) and not isinstance(day, bool):
        return int(day) // DAY_MS * DAY_MS
    raise UserError(f"day {day!r} is not a date; write it as YYYY-MM-DD")


@contextmanager
def _torch_session(cfg: PinnerFormerConfig) -> Iterator[None]:
    """Seeded RNG and thread count for the duration of a job, restored afterwards."""
    old_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)


class _Progress:
    """rich progress bars when enabled, no-ops otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.fields[info]}"))

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def task(self, description: str, total: int) -> int | None:
        return None if self.bar is None else self.bar.add_task(description, total=total, info="")

    def advance(self, task: int | None, info: str = "") -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, advance=1, info=info)


def _dataset_days(meta: DatasetMeta) -> tuple[int, int]:
    if meta.n_events <= 0 or meta.max_timestamp_ms <= 0:
        raise DatasetError("the dataset has no events: nothing to embed")
    return (meta.min_timestamp_ms // DAY_MS * DAY_MS, meta.max_timestamp_ms // DAY_MS * DAY_MS)


def _item_content(dataset_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(content table (max_id + 1, 32), known item ids (I,))`` from items.parquet."""
    items = read_items(dataset_dir)
    if items.num_rows == 0:
        raise DatasetError(f"{dataset_dir}/items.parquet holds no items")
    return item_embedding_table(items), np.sort(items.column("item_id").to_numpy())


# --------------------------------------------------------------------------------------------
# training


def _cap_targets(
    owner: np.ndarray, items: np.ndarray, cap: int, rng: np.random.Generator
) -> np.ndarray:
    """Boolean keep-mask: at most ``cap`` random rows per owner (owner sorted ascending)."""
    if len(owner) == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((rng.random(len(owner)), owner))
    sorted_owner = owner[order]
    first = np.searchsorted(sorted_owner, sorted_owner, side="left")
    rank = np.arange(len(owner)) - first
    keep = np.zeros(len(owner), dtype=bool)
    keep[order[rank < cap]] = True
    return keep


def _user_hash_unit(user_ids: np.ndarray, seed: int) -> np.ndarray:
    """``(N,)`` a deterministic pseudo-uniform number in [0, 1) per (seed, user id)."""
    with np.errstate(over="ignore"):  # splitmix64: wrap-around is the point
        mixed = user_ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        mixed = (mixed ^ (mixed >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
        mixed = (mixed ^ (mixed >> np.uint64(29))) * np.uint64(0x94D049BB133111EB)
        mixed = mixed ^ (mixed >> np.uint64(32))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def train_pinnerformer(
    dataset_dir: str | Path,
    until_ms: int,
    cfg: PinnerFormerConfig | None = None,
    progress: bool = False,
) -> tuple[PinnerFormerModel, TrainStats]:
    """Train the towers on events strictly before ``until_ms`` (a UTC day start).

    Training examples are ``(user, cut-off day c)`` with ``c + window_days <= until_ms``, at least
    one engagement before ``c`` and at least one positive in ``[c, c + window_days)``.
    """
    cfg = cfg or PinnerFormerConfig()
    cfg.validate()
    dataset_dir = Path(dataset_dir)
    started = time.perf_counter()
    meta = DatasetMeta.read(dataset_dir)
    min_day, _ = _dataset_days(meta)
    until_ms = parse_day(until_ms)
    first_cut = min_day + cfg.warmup_days * DAY_MS
    last_cut = until_ms - cfg.window_days * DAY_MS
    if last_cut < first_cut:
        raise UserError(
            f"no training cut-off fits before {day_str(until_ms)}: the first is "
            f"{day_str(first_cut)} (warmup_days={cfg.warmup_days}) and each needs "
            f"window_days={cfg.window_days} of future before the horizon; embed later days or "
            f"lower warmup_days / window_days")
    cutoffs = np.arange(first_cut, last_cut + 1, DAY_MS, dtype=np.int64)
    content, known_items = _item_content(dataset_dir)
    rng = np.random.default_rng(cfg.seed)

    # users are sampled part by part with a hash of (seed, user_id), so memory is bounded by
    # the sample and the choice does not depend on how the events are cut into parts
    share = 1.0
    if cfg.max_train_users is not None and meta.n_users > cfg.max_train_users:
        share = cfg.max_train_users / meta.n_users
    logs = []
    for part in iter_event_parts(dataset_dir):
        if share < 1.0:
            users = part.column("user_id").to_numpy()
            picked = _user_hash_unit(users, cfg.seed) < share
            part = part.filter(pa.array(picked))
        logs.append(engagement_log_from_events(part, until_ms))
    log = concat_logs(logs)
    train_users = np.arange(log.n_users, dtype=np.int64)

    # examples: (user row, cut-off, history end, positive range)
    ex_user, ex_cut, ex_end, ex_lo, ex_hi = [], [], [], [], []
    for cut in cutoffs:
        end = log.seg_start[train_users] + count_before(
            log.timestamps_ms, log.seg_start, log.seg_stop, int(cut))[train_users]
        lo, hi = positives_between(log, train_users, int(cut), int(cut) + cfg.window_days * DAY_MS)
        ok = (end > log.seg_start[train_users]) & (hi > lo)
        ex_user.append(train_users[ok])
        ex_cut.append(np.full(int(ok.sum()), cut, dtype=np.int64))
        ex_end.append(end[ok])
        ex_lo.append(lo[ok])
        ex_hi.append(hi[ok])
    ex_user_a, ex_cut_a, ex_end_a = (np.concatenate(v) for v in (ex_user, ex_cut, ex_end))
    ex_lo_a, ex_hi_a = np.concatenate(ex_lo), np.concatenate(ex_hi)
    n_examples = len(ex_user_a)
    if n_examples < 2:
        raise UserError(
            f"only {n_examples} training example(s) before {day_str(until_ms)} (a user with "
            f"history before a cut-off and a click/save in the {cfg.window_days} days after it); "
            f"embed later days or lower window_days / warmup_days")

    # popularity of positives before the horizon, for the log-Q correction (smoothed)
    n_table = content.shape[0]
    pop = np.bincount(log.pos_item_ids[log.pos_item_ids < n_table], minlength=n_table)
    pop_prob = (pop + 1.0) / (pop.sum() + n_table)

    model = PinnerFormerModel(cfg.model, torch.from_numpy(content))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stats = TrainStats(trained_until=day_str(until_ms),
                       cutoff_days=[day_str(int(c)) for c in cutoffs], n_examples=n_examples,
                       n_train_users=int(len(np.unique(ex_user_a))))
    model.train()
    order = rng.permutation(n_examples)
    cursor = 0
    losses: list[float] = []
    batch = min(cfg.batch_size, n_examples)
    with _Progress(progress) as bars:
        task = bars.task("PinnerFormer training", cfg.train_steps)
        for step in range(cfg.train_steps):
            if cursor + batch > n_examples:
                order = rng.permutation(n_examples)
                cursor = 0
            rows = order[cursor:cursor + batch]
            cursor += batch
            loss = _train_step(model, optimizer, log, rows, ex_user_a, ex_cut_a, ex_end_a,
                               ex_lo_a, ex_hi_a, known_items, pop_prob, cfg, rng)
            losses.append(loss)
            bars.advance(task, f"loss {loss:.3f}")
            if step == 0:
                stats.loss_first = loss
    model.eval()
    stats.steps = cfg.train_steps
    if losses:
        tail = losses[-max(1, len(losses) // 10):]
        stats.loss_last = float(np.mean(tail))
    stats.temperature = float(1.0 / model.inv_temperature.item())
    stats.elapsed_s = round(time.perf_counter() - started, 3)
    return model, stats


def _train_step(
    model: PinnerFormerModel,
    optimizer: torch.optim.Optimizer,
    log: EngagementLog,
    rows: np.ndarray,
    ex_user: np.ndarray,
    ex_cut: np.ndarray,
    ex_end: np.ndarray,
    ex_lo: np.ndarray,
    ex_hi: np.ndarray,
    known_items: np.ndarray,
    pop_prob: np.ndarray,
    cfg: PinnerFormerConfig,
    rng: np.random.Generator,
) -> float:
    """One optimisation step over the examples ``rows``; returns the loss."""
    users, cuts = ex_user[rows], ex_cut[rows]
    hist = history_at(log, users, cuts, cfg.history_len, hist_end=ex_end[rows])
    width = max(1, int(hist.lengths.max()))

    # targets: the user's unique future positives, at most max_targets_per_user of them
    owner, idx = ranges_to_rows(ex_lo[rows], ex_hi[rows])
    target_items = log.pos_item_ids[idx]
    key = np.unique(owner * (int(target_items.max()) + 1) + target_items)
    owner, target_items = key // (int(target_items.max()) + 1), key % (int(target_items.max()) + 1)
    keep = _cap_targets(owner, target_items, cfg.max_targets_per_user, rng)

    # candidates: unique batch positives + uniform random items (not positives of the batch)
    batch_pos = np.unique(target_items)
    random_items = known_items[rng.integers(0, len(known_items), cfg.n_random_negatives)]
    random_items = np.setdiff1d(random_items, batch_pos)
    cand = np.concatenate([batch_pos, random_items])
    cand_order = np.argsort(cand, kind="stable")
    cand_sorted = cand[cand_order]
    col_all = cand_order[np.searchsorted(cand_sorted, target_items)]

    user_pos_mask = torch.zeros(len(rows), len(cand), dtype=torch.bool)
    user_pos_mask[torch.from_numpy(owner), torch.from_numpy(col_all)] = True
    log_q = None
    if cfg.logq_correction:
        n_pairs = int(keep.sum())
        p = pop_prob[np.minimum(cand, len(pop_prob) - 1)]
        expected = n_pairs * p + len(random_items) / len(known_items)
        log_q = torch.from_numpy(np.log(expected).astype(np.float32))

    user_emb = model.encode_users(
        torch.from_numpy(hist.item_ids[:, :width]),
        torch.from_numpy(hist.actions[:, :width].astype(np.int64)),
        torch.from_numpy(hist.age_ms[:, :width]),
    )
    cand_emb = model.encode_items(torch.from_numpy(cand))
    loss = dense_all_action_loss(
        user_emb, cand_emb, torch.from_numpy(owner[keep]), torch.from_numpy(col_all[keep]),
        user_pos_mask, model.inv_temperature, log_q,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.item())


# --------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(
    path: str | Path, model: PinnerFormerModel, cfg: PinnerFormerConfig, stats: TrainStats,
    until_ms: int,
) -> None:
    """Weights + configs + the training horizon (``trained_until_ms``) in one torch file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "pinnerformer-v1",
        "config": json.dumps(asdict(cfg)),
        "train_stats": json.dumps(asdict(stats)),
        "trained_until_ms": int(until_ms),
        "state_dict": model.state_dict(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(
    path: str | Path, item_content: np.ndarray
) -> tuple[PinnerFormerModel, PinnerFormerConfig, TrainStats, int]:
    """``(model in eval mode, its config, its training stats, trained_until_ms)``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"PinnerFormer checkpoint {path} does not exist; run the daily job "
                        f"without a checkpoint to train one")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        cfg = PinnerFormerConfig.from_dict(json.loads(payload["config"]))
        stats = TrainStats(**json.loads(payload["train_stats"]))
        model = PinnerFormerModel(cfg.model, torch.from_numpy(item_content))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError, EOFError,
            pickle.UnpicklingError) as err:
        raise CorruptArtifact(f"{path} is not a readable PinnerFormer checkpoint ({err}); "
                              f"re-run the daily job to write a new one") from err
    model.eval()
    return model, cfg, stats, int(payload["trained_until_ms"])


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
    days: Sequence[date | datetime | str | int] | None,
    cfg: PinnerFormerConfig,
    min_day: int,
    max_day: int,
    trained_until_ms: int | None,
) -> list[int]:
    last = max_day + (DAY_MS if cfg.include_next_day else 0)
    if days is not None:
        resolved = sorted({parse_day(d) for d in days})
        if not resolved:
            raise UserError("days is empty: give at least one YYYY-MM-DD day to embed")
        outside = [day_str(d) for d in resolved if d <= min_day or d > max_day + DAY_MS]
        if outside:
            raise UserError(f"days {outside} are outside the dataset ({day_str(min_day)} .. "
                            f"{day_str(max_day)}; the day after the last is allowed)")
        return resolved
    if trained_until_ms is not None:
        first = max(trained_until_ms, min_day + DAY_MS)
    else:
        n_days = (max_day - min_day) // DAY_MS + 1
        offset = max(cfg.warmup_days + cfg.window_days, math.ceil(cfg.train_fraction * n_days))
        first = min_day + offset * DAY_MS
    if first > last:
        raise UserError(f"the dataset ({day_str(min_day)} .. {day_str(max_day)}) is too short "
                        f"to train before and embed after day {day_str(first)}; lower "
                        f"warmup_days / window_days or pass a trained checkpoint")
    return list(range(first, last + 1, DAY_MS))


def run_daily_embeddings(
    dataset_dir: str | Path,
    out_dir: str | Path,
    cfg: PinnerFormerConfig | None = None,
    days: Sequence[date | datetime | str | int] | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    created_at_ms: int | None = None,
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
        progress: show rich progress bars.
        checkpoint: a checkpoint from an earlier run to reuse instead of training; refused when
            it was trained on events on or after the first day to embed.
        created_at_ms: the ``created_timestamp`` to write (default: now).
    """
    cfg = cfg or PinnerFormerConfig()
    cfg.validate()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    started = time.perf_counter()
    meta = DatasetMeta.read(dataset_dir)
    min_day, max_day = _dataset_days(meta)
    content, known_items = _item_content(dataset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = DailyEmbeddingStats(output_dir=str(out_dir / USER_EMB_DIRNAME))

    with _torch_session(cfg):
        if checkpoint is not None:
            model, model_cfg, train_stats, until_ms = load_checkpoint(checkpoint, content)
            day_list = _resolve_days(days, cfg, min_day, max_day, until_ms)
            if until_ms > day_list[0]:
                raise UserError(
                    f"checkpoint {checkpoint} was trained on events up to {day_str(until_ms)}, "
                    f"after the first day to embed ({day_str(day_list[0])}): its embeddings "
                    f"would leak the future; embed later days or retrain")
            history_len = model_cfg.history_len
            stats.reused_checkpoint = True
            ckpt_path = Path(checkpoint)
            if ckpt_path.resolve() != (out_dir / CHECKPOINT_NAME).resolve():
                save_checkpoint(out_dir / CHECKPOINT_NAME, model, model_cfg, train_stats,
                                until_ms)
        else:
            day_list = _resolve_days(days, cfg, min_day, max_day, None)
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
        pq.write_table(item_tab, out_dir / ITEM_EMB_NAME)

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
        try:
            with _Progress(progress) as bars:
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
        except BaseException:
            for writer, tmp, _ in writers.values():
                writer.close()
                tmp.unlink(missing_ok=True)
            raise
        for writer, tmp, final in writers.values():
            writer.close()
            tmp.replace(final)

    stats.elapsed_s = round(time.perf_counter() - started, 3)
    (out_dir / STATS_NAME).write_text(json.dumps(asdict(stats), indent=2))
    return stats


# --------------------------------------------------------------------------------------------
# reading the output


def _embedding_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / USER_EMB_DIRNAME).is_dir():
        path = path / USER_EMB_DIRNAME
    return sorted(path.glob("date=*/part-*.parquet"))


def load_daily_embeddings(
    path: str | Path, days: Sequence[date | datetime | str | int] | None = None
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


# evaluation lives in its own module; re-exported here as part of the public API
from features.pinnerformer_eval import EvalReport, evaluate_pinnerformer  # noqa: E402

__all__ = [
    "EMBEDDING_SCHEMA",
    "DailyEmbeddingStats",
    "EvalReport",
    "ModelConfig",
    "PinnerFormerConfig",
    "TrainStats",
    "embed_users_at",
    "evaluate_pinnerformer",
    "load_checkpoint",
    "load_daily_embeddings",
    "run_daily_embeddings",
    "train_pinnerformer",
]
