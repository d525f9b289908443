"""The promotion gate: does a candidate beat the champion on the latest held-out window?

Both models score the *same* requests (the newest window of examples); per request we know
each model's HIT@3 of every head (:class:`transact.metrics.HitAtK`). A paired bootstrap over
requests (resample request ids with replacement, both models' hits move together) gives the
distribution of the relative change ``(candidate - champion) / champion`` of each head's mean
hit. The rule (:class:`GateConfig`):

* every positive head (click, save): the ``1 - confidence`` quantile of the relative change
  is above ``margin`` — the candidate is better by at least the margin with that confidence;
* hide (lower is better): the ``confidence`` quantile of the relative change is at most
  ``hide_tolerance`` — it is not worse than the tolerance with that confidence.

**Bootstrap rule for the first model** (no champion yet): the reference is a *random ranking*
of the same requests, whose expected HIT@3 per request is exact
(:func:`random_ranking_hits`), and the same rule applies. A
model that learned nothing (e.g. trained on shuffled labels) cannot pass it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from transact.errors import UserError
from transact.metrics import HitAtK
from transact.schema import HEADS


@dataclass
class GateConfig:
    """Promotion rule; see the module docstring."""

    positive_heads: list[str] = field(default_factory=lambda: ["click", "save"])
    #: required relative HIT@3 gain of every positive head (0.0: better at all)
    margin: float = 0.0
    #: tolerated relative increase of hide HIT@3 (0.05: up to 5 % worse)
    hide_tolerance: float = 0.05
    #: one-sided confidence of both tests
    confidence: float = 0.9
    n_boot: int = 2000
    seed: int = 0

    def validate(self) -> GateConfig:
        unknown = [h for h in self.positive_heads if h not in HEADS or h == "hide"]
        if unknown or not self.positive_heads:
            raise UserError(f"gate.positive_heads must be a non-empty subset of "
                            f"{[h for h in HEADS if h != 'hide']}, got {self.positive_heads}")
        if not 0.5 <= self.confidence < 1.0:
            raise UserError(f"gate.confidence must be in [0.5, 1), got {self.confidence}")
        if self.n_boot < 100:
            raise UserError(f"gate.n_boot must be >= 100, got {self.n_boot}")
        if self.hide_tolerance < 0:
            raise UserError(f"gate.hide_tolerance must be >= 0, got {self.hide_tolerance}")
        return self


@dataclass
class HeadComparison:
    head: str
    candidate: float
    reference: float
    relative_change: float
    ci_low: float
    ci_high: float
    n_requests: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a head without evidence has no change or interval (``None``, not NaN)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


@dataclass
class GateDecision:
    promote: bool
    reference: str  # "champion vN" or "random ranking"
    reason: str
    heads: list[HeadComparison]

    def to_tags(self) -> dict[str, str]:
        tags = {"gate.decision": "promote" if self.promote else "reject",
                "gate.reference": self.reference, "gate.reason": self.reason[:4000]}
        for h in self.heads:
            tags[f"gate.{h.head}"] = (f"cand={h.candidate:.4f} ref={h.reference:.4f} "
                                      f"rel={h.relative_change:+.4f} "
                                      f"ci=[{h.ci_low:+.4f},{h.ci_high:+.4f}] "
                                      f"n={h.n_requests} passed={h.passed}")
        return tags

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "heads": [h.to_dict() for h in self.heads]}


def random_ranking_hits(request_id: np.ndarray, positives: np.ndarray, k: int = 3,
                        min_candidates: int = 4) -> HitAtK:
    """Expected per-request HIT@k of a uniformly random order of the same requests, counted
    as :func:`transact.metrics.hit_at_k` counts them: ``E[#positives in the top k] /
    min(k, m) = min(k, n) m / n / min(k, m)`` for ``n`` candidates and ``m`` positives.
    ``request_id (N,)``, ``positives (N,)`` 0/1."""
    ids, group = np.unique(np.asarray(request_id), return_inverse=True)
    size = np.bincount(group, minlength=len(ids)).astype(np.float64)
    n_pos = np.bincount(group, weights=np.asarray(positives, np.float64), minlength=len(ids))
    counted = (size >= min_candidates) & (n_pos >= 1)
    size, n_pos = size[counted], n_pos[counted]
    expected = np.minimum(k, size) * n_pos / size / np.minimum(k, n_pos)
    return HitAtK(float(expected.mean()) if len(expected) else float("nan"),
                  int(counted.sum()), ids[counted], expected)


def paired_relative_change(candidate: HitAtK, reference: HitAtK, n_boot: int, seed: int
                           ) -> tuple[float, np.ndarray]:
    """Relative change of the mean hit and its ``(n_boot,)`` bootstrap draws (paired over
    the requests both count)."""
    common, ci, ri = np.intersect1d(candidate.request_ids, reference.request_ids,
                                    return_indices=True)
    if not len(common):
        raise UserError("the candidate and the reference share no counted request: they were "
                        "not evaluated on the same window")
    cand, ref = candidate.per_request[ci], reference.per_request[ri]
    point = (cand.mean() - ref.mean()) / max(ref.mean(), 1e-12)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for start in range(0, n_boot, 200):  # bounded memory: 200 resamples at a time
        size = min(200, n_boot - start)
        idx = rng.integers(0, len(common), size=(size, len(common)))
        ref_means = ref[idx].mean(axis=1)
        draws[start:start + size] = (cand[idx].mean(axis=1) - ref_means) / np.maximum(
            ref_means, 1e-12)
    return float(point), draws


def decide(candidate: dict[str, HitAtK], reference: dict[str, HitAtK], reference_name: str,
           cfg: GateConfig) -> GateDecision:
    """Apply the rule to per-head hits of the candidate and the reference."""
    cfg.validate()
    alpha = 1.0 - cfg.confidence
    rows, failures = [], []
    for head in [*cfg.positive_heads, "hide"]:
        if not candidate[head].n_requests and not reference[head].n_requests:
            # the window holds no request with a positive of this head: no evidence either way
            # (a short window may see no hide at all); disjoint counted requests still raise.
            # A margin below -100 % is an open gate: no relative change can fall below it.
            passed = head == "hide" or cfg.margin < -1.0
            if not passed:
                failures.append(f"no {head} positive in the evaluation window: a gain on "
                                f"{head} HIT@3 cannot be shown")
            rows.append(HeadComparison(head, candidate[head].value, reference[head].value,
                                       float("nan"), float("nan"), float("nan"), 0, passed))
            continue
        point, draws = paired_relative_change(candidate[head], reference[head], cfg.n_boot,
                                              cfg.seed)
        low, high = (float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha)))
        if head == "hide":
            passed = high <= cfg.hide_tolerance
            if not passed:
                failures.append(f"hide HIT@3 may be worse by {high:+.1%} "
                                f"(tolerance {cfg.hide_tolerance:+.1%})")
        else:
            passed = low > cfg.margin
            if not passed:
                failures.append(f"{head} HIT@3 change {point:+.1%} is not above the margin "
                                f"{cfg.margin:+.1%} with {cfg.confidence:.0%} confidence "
                                f"(lower bound {low:+.1%})")
        rows.append(HeadComparison(head, candidate[head].value, reference[head].value, point,
                                   low, high, len(np.intersect1d(candidate[head].request_ids,
                                                                 reference[head].request_ids)),
                                   passed))
    promote = not failures
    reason = (f"beats {reference_name} on every rule" if promote
              else "; ".join(failures))
    return GateDecision(promote=promote, reference=reference_name, reason=reason, heads=rows)
