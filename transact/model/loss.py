"""Point-wise multi-task loss with a label-weight matrix ``M`` and per-user weights ``w_u``.

How ``M`` (heads x labels, ``H x L``, entries >= 0) enters, for row ``b`` with labels
``y[b, l]`` in {0, 1}:

* head ``h``'s target is 1 iff some present label ``l`` has ``M[h, l] > 0``;
* a positive target is weighted by ``max_l y[b, l] * M[h, l]`` (the strongest present label);
* a negative target is weighted by 1.

So the identity ``M`` is plain per-head BCE; ``M[click, save] = 0.5`` additionally teaches the
click head that a save is a (half-weight) click positive. The per-row loss is the sum over heads
of ``weight * BCE(logit, target)``, multiplied by the row's user weight ``w_u``; the batch loss is
the mean over rows (divided by ``B``, not by the sum of weights).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def head_targets(labels: torch.Tensor, label_weights: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels (B, L)``, ``label_weights M (H, L)`` -> ``(targets (B, H), weights (B, H))``."""
    strength = (labels[:, None, :] * label_weights[None, :, :]).amax(dim=2)
    targets = (strength > 0).to(labels.dtype)
    weights = torch.where(strength > 0, strength, torch.ones_like(strength))
    return targets, weights


def multitask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_weights: torch.Tensor,
    user_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar loss. ``logits (B, H)``, ``labels (B, L)``, ``M (H, L)``, ``user_weight (B,)``."""
    targets, weights = head_targets(labels, label_weights)
    per_head = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights
    per_row = per_head.sum(dim=1)
    if user_weight is not None:
        per_row = per_row * user_weight
    return per_row.mean()


def user_weights(user_id: np.ndarray, scheme: str) -> np.ndarray:
    """``(N,)`` float32 per-row user weights ``w_u`` for training rows with ``user_id (N,)``.

    ``uniform``: all 1. ``inverse_sqrt_activity``: ``1 / sqrt(n_u)`` with ``n_u`` the user's
    number of rows, rescaled so that the mean over rows is 1.
    """
    if scheme == "uniform" or len(user_id) == 0:
        return np.ones(len(user_id), dtype=np.float32)
    if scheme == "inverse_sqrt_activity":
        _, inverse, counts = np.unique(user_id, return_inverse=True, return_counts=True)
        weight = 1.0 / np.sqrt(counts[inverse].astype(np.float64))
        return (weight / weight.mean()).astype(np.float32)
    raise ValueError(f"unknown user weighting {scheme!r}")
