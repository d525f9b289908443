"""The PinnerFormer training loop: dense all-action objective over daily cut-offs.

Examples are ``(user, cut-off day c)`` with ``min_day + warmup_days <= c`` and
``c + window_days <= until`` (the training horizon), at least one engagement before ``c`` and
at least one click / save in ``[c, c + window_days)``. Each step samples a batch of examples,
gathers the latest ``history_len`` engagements before each cut-off (``(B, L)`` matrices,
:func:`training.pinnerformer.data.history_at`), and scores every future positive against the
batch's positives plus uniformly drawn items
(:func:`transact.model.pinnerformer.dense_all_action_loss`).
Only events strictly before ``until`` are read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from training.pinnerformer.config import PinnerFormerConfig
from training.pinnerformer.data import (
    EngagementLog,
    concat_logs,
    count_before,
    dataset_days,
    day_str,
    engagement_log_from_events,
    history_at,
    item_content,
    parse_day,
    positives_between,
    ranges_to_rows,
)
from transact.data.dataset import DatasetMeta, iter_event_parts
from transact.errors import UserError
from transact.model.pinnerformer import PinnerFormerModel, dense_all_action_loss
from transact.schema import DAY_MS

__all__ = ["Progress", "TrainStats", "torch_session", "train_pinnerformer"]

logger = logging.getLogger(__name__)


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



@contextmanager
def torch_session(cfg: PinnerFormerConfig) -> Iterator[None]:
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


class Progress:
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

    def __enter__(self) -> Progress:
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
    min_day, _ = dataset_days(meta)
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
    content, known_items = item_content(dataset_dir)
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
    logger.info("PinnerFormer training: %d examples of %d users, cut-offs %s .. %s, "
                "%d steps of %d", n_examples, stats.n_train_users, stats.cutoff_days[0],
                stats.cutoff_days[-1], cfg.train_steps, min(cfg.batch_size, n_examples))
    report_every = max(1, cfg.train_steps // 10)
    model.train()
    order = rng.permutation(n_examples)
    cursor = 0
    losses: list[float] = []
    batch = min(cfg.batch_size, n_examples)
    with Progress(progress) as bars:
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
            if (step + 1) % report_every == 0 or step + 1 == cfg.train_steps:
                logger.info("PinnerFormer training: step %d/%d, loss %.4f (%.0f s)", step + 1,
                            cfg.train_steps, loss, time.perf_counter() - started)
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

