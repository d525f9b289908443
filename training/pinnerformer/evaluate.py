"""Offline evaluation of the daily PinnerFormer embeddings: recall@k of next-window positives.

For every embedded day ``D`` whose whole window ``[D, D + window_days)`` lies inside the dataset,
and every user with a non-zero embedding for ``D`` (some engagement before ``D``) and at least one
positive (click / save) in the window, all items of ``items.parquet`` are ranked and

    recall@k(user, D) = |top-k items ∩ the user's positive items in the window| / |those items|

is averaged over the (user, day) pairs. Methods, all on the same pairs:

* ``pinnerformer``: dot product of the day-D user embedding with the learned item embeddings
  (``item_embeddings.parquet`` of the same run);
* ``pinnerformer+popularity``: the same logit (``u · v / tau``, the model's temperature) plus
  ``log(1 + positives of the item in [D - popularity_days, D))``: a model trained with the
  log-Q correction scores how much *more* than its popularity a user likes an item, so the
  popularity prior is added back when ranking for engagement (the ranker sees both);
* ``mean_past_positives``: cosine of the mean content embedding of the user's latest
  ``history_len`` positives before ``D`` with each item's content embedding (the platform's
  default batch embedding); users without a past positive fall back to popularity;
* ``popularity``: items ranked by their number of positives in ``[D - popularity_days, D)``
  over all users (ties by item id).

Every embedded day is after the model's training horizon, so all evaluated days are held out.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from training.pinnerformer.checkpoint import CHECKPOINT_NAME
from training.pinnerformer.config import PinnerFormerConfig
from training.pinnerformer.data import (
    count_before,
    day_str,
    engagement_log_from_events,
    parse_day,
    positives_between,
    ranges_to_rows,
)
from training.pinnerformer.fit import Progress
from training.pinnerformer.job import ITEM_EMB_NAME, load_daily_embeddings
from transact.data.dataset import DatasetMeta, item_embedding_table, iter_event_parts, read_items
from transact.errors import CorruptArtifact, UserError
from transact.schema import DAY_MS

METHODS: tuple[str, ...] = ("pinnerformer", "pinnerformer+popularity", "mean_past_positives",
                             "popularity")


@dataclass
class EvalReport:
    """Recall figures: ``recall[method]["recall@k"]``, averaged over ``n_user_days`` pairs."""

    ks: list[int] = field(default_factory=list)
    window_days: int = 0
    popularity_days: int = 0
    days: list[str] = field(default_factory=list)
    n_user_days: int = 0
    mean_targets: float = 0.0
    recall: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_markdown(self) -> str:
        head = "| method | " + " | ".join(f"recall@{k}" for k in self.ks) + " |"
        rule = "|---|" + "---:|" * len(self.ks)
        rows = [f"| {m} | " + " | ".join(f"{self.recall[m][f'recall@{k}']:.4f}" for k in self.ks)
                + " |" for m in self.recall]
        return "\n".join([head, rule, *rows])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _topk_hits(
    scores: torch.Tensor, target_cols: np.ndarray, target_owner: np.ndarray, ks: Sequence[int]
) -> np.ndarray:
    """``(n, len(ks))`` hit counts of each user's targets in the top-k columns of ``scores``.

    scores ``(n, I)``; targets are ``(owner, column)`` pairs (unique per owner).
    """
    n, n_cols = scores.shape
    k_max = min(max(ks), n_cols)
    top = torch.topk(scores, k_max, dim=1).indices.numpy()  # (n, k_max)
    is_target = np.zeros((n, n_cols), dtype=bool)
    is_target[target_owner, target_cols] = True
    hit = np.take_along_axis(is_target, top, axis=1)  # (n, k_max)
    cum = np.cumsum(hit, axis=1)
    return np.stack([cum[:, min(k, k_max) - 1] for k in ks], axis=1)


def evaluate_pinnerformer(
    dataset_dir: str | Path,
    out_dir: str | Path,
    ks: Sequence[int] = (10, 50),
    window_days: int | None = None,
    days: Sequence[date | datetime | str | int] | None = None,
    history_len: int | None = None,
    popularity_days: int = 7,
    user_batch: int = 512,
    progress: bool = False,
) -> EvalReport:
    """Recall@k of the embeddings written by ``run_daily_embeddings(dataset_dir, out_dir)``.

    Args:
        dataset_dir: the dataset the embeddings were computed from.
        out_dir: the job's output directory (daily embeddings, item embeddings, model.pt).
        ks: cut-offs of recall@k.
        window_days: the future window of positives (default: the model's ``window_days``).
        days: evaluate only these embedded days (default: all with a complete window).
        history_len: positives averaged by the mean baseline (default: the model's).
        popularity_days: trailing days counted by the popularity baseline.
        user_batch: users scored at once.
        progress: show a progress bar.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    if not ks or min(ks) < 1:
        raise UserError(f"ks must be positive integers, got {list(ks)}")
    ks = sorted(set(int(k) for k in ks))
    ckpt_path = out_dir / CHECKPOINT_NAME
    if not ckpt_path.is_file():
        raise UserError(
            f"{ckpt_path} does not exist: the evaluation reads the model's window, history "
            f"length and temperature from the job's checkpoint; point it at the output "
            f"directory of a finished PinnerFormer job")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model_cfg = PinnerFormerConfig.from_dict(json.loads(ckpt["config"]))
        inv_temp = float(torch.exp(ckpt["state_dict"]["log_inv_temp"]).clamp(max=100.0))
    except (KeyError, RuntimeError, ValueError, TypeError, EOFError,
            pickle.UnpicklingError) as err:
        raise CorruptArtifact(f"{ckpt_path} is not a readable PinnerFormer checkpoint "
                              f"({err}); re-run the daily job") from err
    window_days = window_days or model_cfg.window_days
    history_len = history_len or model_cfg.history_len
    item_path = out_dir / ITEM_EMB_NAME
    if not item_path.is_file():
        raise UserError(f"{item_path} does not exist; run the PinnerFormer job into {out_dir}")

    meta = DatasetMeta.read(dataset_dir)
    max_day = meta.max_timestamp_ms // DAY_MS * DAY_MS
    embeddings = load_daily_embeddings(out_dir)
    emb_day = embeddings.column("event_timestamp").cast(pa.int64()).to_numpy()
    eval_days = sorted(int(d) for d in np.unique(emb_day) if d + window_days * DAY_MS
                       <= max_day + DAY_MS)
    if days is not None:
        wanted = {parse_day(d) for d in days}
        eval_days = [d for d in eval_days if d in wanted]
    if not eval_days:
        raise UserError(f"no embedded day of {out_dir} has a complete {window_days}-day window "
                        f"of events after it; lower window_days or embed earlier days")

    items = read_items(dataset_dir)
    content = item_embedding_table(items)
    known = np.sort(items.column("item_id").to_numpy())
    item_tab = pq.read_table(item_path)
    learned_ids = item_tab.column("item_id").to_numpy()
    learned = np.asarray(item_tab.column("item_emb").combine_chunks().values, np.float32)
    learned = learned.reshape(len(learned_ids), -1)
    if not np.array_equal(np.sort(learned_ids), known):
        raise UserError(f"{item_path} does not cover the items of {dataset_dir}: re-run the job")
    learned = learned[np.argsort(learned_ids)]  # rows aligned with `known`
    content_known = content[known]
    content_unit = content_known / np.maximum(
        np.linalg.norm(content_known, axis=1, keepdims=True), 1e-12)

    # pass 1: popularity of positives in [D - popularity_days, D) per evaluated day
    popularity = {d: np.zeros(len(known), dtype=np.int64) for d in eval_days}
    for part in iter_event_parts(dataset_dir):
        log = engagement_log_from_events(part, until_ms=eval_days[-1])
        col = np.searchsorted(known, log.pos_item_ids)
        ok = (col < len(known)) & (known[np.minimum(col, len(known) - 1)] == log.pos_item_ids)
        for d in eval_days:
            inside = ok & (log.pos_timestamps_ms >= d - popularity_days * DAY_MS) & \
                (log.pos_timestamps_ms < d)
            popularity[d] += np.bincount(col[inside], minlength=len(known))
    log_pop = {d: torch.from_numpy(np.log1p(popularity[d]).astype(np.float32)) for d in eval_days}
    pop_rank = {d: torch.from_numpy(-np.lexsort((known, -popularity[d])).argsort()
                                    .astype(np.float32)) for d in eval_days}

    day_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for d in eval_days:
        sel = np.flatnonzero(emb_day == d)
        users = embeddings.column("user_id").to_numpy()[sel]
        vecs = np.asarray(embeddings.column("user_emb").combine_chunks().values, np.float32)
        vecs = vecs.reshape(embeddings.num_rows, -1)[sel]
        order = np.argsort(users)
        day_rows[d] = (users[order], vecs[order])

    hits = {m: np.zeros(len(ks)) for m in METHODS}
    n_pairs = 0
    n_targets = 0
    learned_t = torch.from_numpy(learned)
    content_t = torch.from_numpy(content_unit.astype(np.float32))
    with Progress(progress) as bars:
        task = bars.task("PinnerFormer evaluation", meta.n_parts or 0)
        for part in iter_event_parts(dataset_dir):
            log = engagement_log_from_events(part)
            all_users = np.arange(log.n_users, dtype=np.int64)
            for d in eval_days:
                day_users, day_vecs = day_rows[d]
                pos = np.searchsorted(day_users, log.user_ids)
                found = pos < len(day_users)
                found[found] = day_users[pos[found]] == log.user_ids[found]
                lo, hi = positives_between(log, all_users, d, d + window_days * DAY_MS)
                has_vec = np.zeros(log.n_users, dtype=bool)
                has_vec[found] = np.abs(day_vecs[pos[found]]).sum(axis=1) > 0
                users = np.flatnonzero(has_vec & (hi > lo))
                if len(users) == 0:
                    continue
                past_end = log.pos_seg_start + count_before(
                    log.pos_timestamps_ms, log.pos_seg_start, log.pos_seg_stop, d)
                for b0 in range(0, len(users), user_batch):
                    chunk = users[b0:b0 + user_batch]
                    # targets: unique (user, item) positives in the window
                    owner, idx = ranges_to_rows(lo[chunk], hi[chunk])
                    tgt = log.pos_item_ids[idx]
                    pairs = np.unique(np.stack([owner, tgt], axis=1), axis=0)
                    owner, tgt = pairs[:, 0], pairs[:, 1]
                    n_tgt = np.bincount(owner, minlength=len(chunk))
                    col = np.searchsorted(known, tgt)
                    ok = (col < len(known)) & (known[np.minimum(col, len(known) - 1)] == tgt)
                    owner_k, col_k = owner[ok], col[ok]

                    user_vec = torch.from_numpy(day_vecs[pos[chunk]])
                    logit = user_vec @ learned_t.T
                    scores = {
                        "pinnerformer": logit,
                        "pinnerformer+popularity": logit * inv_temp + log_pop[d],
                        "popularity": pop_rank[d].expand(len(chunk), -1),
                    }
                    # mean content of the latest history_len positives before D
                    h_lo = np.maximum(log.pos_seg_start[chunk], past_end[chunk] - history_len)
                    h_owner, h_idx = ranges_to_rows(h_lo, past_end[chunk])
                    sums = np.zeros((len(chunk), content.shape[1]), dtype=np.float64)
                    h_items = log.pos_item_ids[h_idx]
                    inside = h_items < content.shape[0]
                    np.add.at(sums, h_owner[inside], content[h_items[inside]])
                    has_past = np.bincount(h_owner, minlength=len(chunk)) > 0
                    mean_scores = torch.from_numpy(sums.astype(np.float32)) @ content_t.T
                    mean_scores[torch.from_numpy(~has_past)] = pop_rank[d]
                    scores["mean_past_positives"] = mean_scores
                    for method, method_scores in scores.items():
                        found_hits = _topk_hits(method_scores, col_k, owner_k, ks)
                        hits[method] += (found_hits / n_tgt[:, None]).sum(axis=0)
                    n_pairs += len(chunk)
                    n_targets += int(n_tgt.sum())
            bars.advance(task)
    if n_pairs == 0:
        raise UserError("no (user, day) pair to evaluate: no user with an embedding had a "
                        "click/save in the window after it")
    return EvalReport(
        ks=list(ks), window_days=window_days, popularity_days=popularity_days,
        days=[day_str(d) for d in eval_days], n_user_days=n_pairs,
        mean_targets=round(n_targets / n_pairs, 3),
        recall={m: {f"recall@{k}": float(hits[m][i] / n_pairs) for i, k in enumerate(ks)}
                for m in METHODS},
    )
