"""Offline ranking metrics: HIT@3 per label (grouped by request), AUC and log loss per head.

HIT@k, as used throughout this project (the paper's metric, made exact):

* Candidates are grouped by ``request_id`` and ranked by one *ranking score* per candidate:
  the utility ``sum_h u_h * p_h`` of the head probabilities, by default
  ``p_click + p_save - p_hide`` (:data:`DEFAULT_UTILITY`). The paper ranks by the model's
  ranking score and reports, per head, how many of that head's positives reach the top; so a
  good model puts saves in the top 3 (higher is better) and keeps hides out (lower is better).
  Ties are broken by input order (stable).
* A request counts for label ``l`` if it has at least ``min_candidates`` (default 4)
  candidates - with 3 or fewer every candidate is in the top 3 and the request says nothing -
  and at least one positive of ``l``.
* Its hit is ``(#positives of l in the top k) / min(k, #positives of l)``, in ``[0, 1]``: 1 when
  the top ``k`` holds as many positives as it can. HIT@k of ``l`` is the mean over counted
  requests.

``rank_by="head"`` ranks by each label's own head probability instead (a per-head ranking
metric; for hide it measures how well the hide head *finds* hides, so higher is better there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from transact.schema import HEADS

#: Utility weights of the ranking score, in HEADS order (click, save, hide).
DEFAULT_UTILITY: tuple[float, ...] = (1.0, 1.0, -1.0)


@dataclass
class HitAtK:
    """HIT@k of one label: ``value`` (mean), and the per-request hits behind it."""

    value: float
    n_requests: int
    request_ids: np.ndarray  # (R,) counted requests, ascending
    per_request: np.ndarray  # (R,) hit of each counted request


def utility_score(probs: np.ndarray, utility: tuple[float, ...] = DEFAULT_UTILITY) -> np.ndarray:
    """Ranking score ``(N,)`` from head probabilities ``(N, H)``."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(utility, dtype=np.float64)


def hit_at_k(
    request_id: np.ndarray,
    scores: np.ndarray,
    positives: np.ndarray,
    k: int = 3,
    min_candidates: int = 4,
) -> HitAtK:
    """HIT@k of one label. ``request_id (N,)``, ``scores (N,)`` (higher = ranked first),
    ``positives (N,)`` 0/1. Vectorised: one lexsort and a few bincounts."""
    request_id = np.asarray(request_id)
    n = len(request_id)
    if n == 0:
        return HitAtK(float("nan"), 0, np.zeros(0, np.int64), np.zeros(0))
    order = np.lexsort((np.arange(n), -np.asarray(scores, dtype=np.float64), request_id))
    rid = request_id[order]
    new_group = np.r_[True, rid[1:] != rid[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    rank = np.arange(n) - starts[group]
    size = np.diff(np.r_[starts, n])
    pos = np.asarray(positives, dtype=np.float64)[order]
    n_pos = np.bincount(group, weights=pos, minlength=len(starts))
    hits = np.bincount(group, weights=pos * (rank < k), minlength=len(starts))
    counted = (size >= min_candidates) & (n_pos >= 1)
    per_request = hits[counted] / np.minimum(k, n_pos[counted])
    value = float(per_request.mean()) if counted.any() else float("nan")
    return HitAtK(value, int(counted.sum()), rid[starts][counted], per_request)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    labels = np.asarray(labels)
    if labels.min(initial=0) == labels.max(initial=0):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)).mean()) if len(y) else float("nan")


def ranking_metrics(
    request_id: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    utility: tuple[float, ...] = DEFAULT_UTILITY,
    k: int = 3,
    min_candidates: int = 4,
    rank_by: str = "utility",
) -> dict[str, float]:
    """All metrics of predictions ``probs (N, H)`` against ``labels (N, H)`` (HEADS order).

    Keys: ``hit{k}_{head}``, ``requests_{head}``, ``auc_{head}``, ``logloss_{head}``.
    """
    metrics, _ = ranking_metrics_detail(request_id, probs, labels, utility, k, min_candidates,
                                        rank_by)
    return metrics


def ranking_metrics_detail(
    request_id: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    utility: tuple[float, ...] = DEFAULT_UTILITY,
    k: int = 3,
    min_candidates: int = 4,
    rank_by: str = "utility",
) -> tuple[dict[str, float], dict[str, HitAtK]]:
    """:func:`ranking_metrics` plus the per-request hits of every head (for significance)."""
    if rank_by not in ("utility", "head"):
        raise ValueError(f"rank_by must be 'utility' or 'head', got {rank_by!r}")
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    score = utility_score(probs, utility) if rank_by == "utility" else None
    metrics: dict[str, float] = {}
    detail: dict[str, HitAtK] = {}
    for h, head in enumerate(HEADS):
        head_score = score if score is not None else probs[:, h]
        hit = hit_at_k(request_id, head_score, labels[:, h], k, min_candidates)
        detail[head] = hit
        metrics[f"hit{k}_{head}"] = hit.value
        metrics[f"requests_{head}"] = float(hit.n_requests)
        metrics[f"auc_{head}"] = auc(labels[:, h], probs[:, h])
        metrics[f"logloss_{head}"] = logloss(labels[:, h], probs[:, h])
    return metrics, detail
