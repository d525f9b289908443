"""Monitoring metrics: pure functions over the joined serving log (:func:`monitoring.logs.
join_actions`: one row per shown candidate with ``clicked``, ``saved``, ``hidden``).

Engagement (per window and model version):

* per impression: ``click_rate``, ``save_rate``, ``hide_rate`` = shown rows with that action /
  shown rows; ``engagement_rate`` = rows clicked or saved / shown rows;
* per request: ``click_per_request`` ... = requests with at least one such action / requests;
  ``engaged_request_rate`` = requests with a click or save / requests.

Decay: the same rates by model age (days since the version's promotion to ``champion``,
bucketed), and each bucket relative to the version's first bucket.

Diversity (of what was recommended; item vectors ``(n_items + 1, E)`` indexed by item id):

* ``intra_list_diversity``: per slate the mean over item pairs of ``1 - cos``, then the mean
  over slates;
* ``topic_entropy``: entropy in bits of the topic histogram of all impressions of the window;
* ``catalogue_coverage``: distinct items shown / catalogue size;
* ``rabbit_hole_similarity``: per slate the mean cosine between its items and the items of the
  user's latest ``N`` positive actions (click / save) before the request, then the mean over
  slates that have any (higher = users are shown more of what they just did).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from transact.schema import DAY_MS, ActionType

__all__ = ["ENGAGEMENT_METRICS", "catalogue_coverage", "decay_curve", "diversity_by_window",
           "engagement_by_window", "intra_list_diversity", "latest_positive_items",
           "model_age_days", "promotion_times", "rabbit_hole_similarity", "slates",
           "topic_entropy", "window_start"]

ENGAGEMENT_METRICS: tuple[str, ...] = (
    "click_rate", "save_rate", "hide_rate", "engagement_rate",
    "click_per_request", "save_per_request", "hide_per_request", "engaged_request_rate")


def window_start(times_ms: np.ndarray | pd.Series, window_ms: int, origin_ms: int = 0
                 ) -> np.ndarray:
    """``(N,)`` start of the window each time falls in (windows ``[origin + k·w, +w)``)."""
    t = np.asarray(times_ms, np.int64)
    return origin_ms + (t - origin_ms) // window_ms * window_ms


def _engagement(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = frame.assign(engaged=frame["clicked"] | frame["saved"])
    per_row = df.groupby(keys).agg(
        impressions=("item_id", "size"), click_rate=("clicked", "mean"),
        save_rate=("saved", "mean"), hide_rate=("hidden", "mean"),
        engagement_rate=("engaged", "mean"))
    per_request = df.groupby([*keys, "request_id"])[["clicked", "saved", "hidden",
                                                      "engaged"]].any()
    per_request = per_request.groupby(level=list(range(len(keys)))).agg(
        requests=("clicked", "size"), click_per_request=("clicked", "mean"),
        save_per_request=("saved", "mean"), hide_per_request=("hidden", "mean"),
        engaged_request_rate=("engaged", "mean"))
    out = per_row.join(per_request).reset_index()
    return out


def engagement_by_window(joined: pd.DataFrame, window_ms: int, origin_ms: int = 0
                         ) -> pd.DataFrame:
    """One row per (``window_start_ms``, ``model_version``): ``impressions``, ``requests`` and
    :data:`ENGAGEMENT_METRICS`."""
    if len(joined) == 0:
        return pd.DataFrame(columns=["window_start_ms", "model_version", "impressions",
                                     "requests", *ENGAGEMENT_METRICS])
    frame = joined.assign(window_start_ms=window_start(joined["request_time_ms"], window_ms,
                                                       origin_ms))
    return _engagement(frame, ["window_start_ms", "model_version"])


def promotion_times(alias_history: Iterable[object], alias: str = "champion"
                    ) -> dict[str, int]:
    """``version -> ms`` of its first promotion to ``alias``, from
    :meth:`transact.registry.ModelRegistry.alias_history` events (``alias``, ``version``,
    ``at_ms``)."""
    out: dict[str, int] = {}
    for event in sorted(alias_history, key=lambda e: e.at_ms):  # type: ignore[attr-defined]
        if event.alias == alias and event.version is not None:  # type: ignore[attr-defined]
            out.setdefault(str(event.version), int(event.at_ms))  # type: ignore[attr-defined]
    return out


def model_age_days(joined: pd.DataFrame, promoted_at_ms: Mapping[str, int]) -> np.ndarray:
    """``(N,)`` float days between each row's request and its version's promotion (NaN for a
    version with no known promotion)."""
    promoted = joined["model_version"].map(lambda v: promoted_at_ms.get(str(v), np.nan))
    return (joined["request_time_ms"].to_numpy(np.float64)
            - promoted.to_numpy(np.float64)) / DAY_MS


def decay_curve(joined: pd.DataFrame, promoted_at_ms: Mapping[str, int],
                bucket_days: float = 1.0) -> pd.DataFrame:
    """Engagement by (``model_version``, ``age_days``: bucket start) with ``*_rel`` columns:
    each rate divided by the version's first (youngest) bucket's. Rows of versions without a
    promotion time, or served before it, are left out."""
    age = model_age_days(joined, promoted_at_ms)
    keep = np.isfinite(age) & (age >= 0)
    frame = joined[keep].assign(age_days=np.floor(age[keep] / bucket_days) * bucket_days)
    if len(frame) == 0:
        return pd.DataFrame(columns=["model_version", "age_days", "impressions", "requests",
                                     *ENGAGEMENT_METRICS])
    out = _engagement(frame, ["model_version", "age_days"]).sort_values(
        ["model_version", "age_days"])
    for name in ENGAGEMENT_METRICS:
        first = out.groupby("model_version")[name].transform("first")
        out[f"{name}_rel"] = np.where(first > 0, out[name] / first.where(first > 0, 1.0), np.nan)
    return out.reset_index(drop=True)


# ------------------------------------------------------------------------------- diversity
def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def intra_list_diversity(slate_vectors: np.ndarray, valid: np.ndarray | None = None
                         ) -> np.ndarray:
    """``(R,)`` mean pairwise ``1 - cos`` within each slate of ``slate_vectors`` ``(R, S, E)``
    (``valid`` ``(R, S)`` bool marks real slots; slates with < 2 items give NaN)."""
    unit = _unit(np.asarray(slate_vectors, np.float64))
    r, s, _ = unit.shape
    valid = np.ones((r, s), bool) if valid is None else np.asarray(valid, bool)
    sims = np.einsum("rse,rte->rst", unit, unit)
    pair = valid[:, :, None] & valid[:, None, :] & ~np.eye(s, dtype=bool)[None]
    n_pairs = pair.sum(axis=(1, 2))
    dist = np.where(pair, 1.0 - sims, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pairs > 0, dist / np.maximum(n_pairs, 1), np.nan)


def topic_entropy(topics: np.ndarray) -> float:
    """Entropy in bits of the histogram of ``topics`` ``(N,)`` (0 for one topic or none)."""
    topics = np.asarray(topics)
    if topics.size == 0:
        return 0.0
    _, counts = np.unique(topics, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def catalogue_coverage(item_ids: np.ndarray, catalogue_size: int) -> float:
    """Distinct ``item_ids`` / ``catalogue_size``."""
    if catalogue_size <= 0:
        raise ValueError("catalogue_size must be > 0")
    return float(len(np.unique(np.asarray(item_ids)))) / catalogue_size


def rabbit_hole_similarity(slate_vectors: np.ndarray, recent_vectors: np.ndarray,
                           slate_valid: np.ndarray | None = None,
                           recent_valid: np.ndarray | None = None) -> np.ndarray:
    """``(R,)`` mean cosine between the items of each slate ``(R, S, E)`` and the user's
    latest actions ``(R, N, E)``; NaN where a slate or its recent actions are empty."""
    a = _unit(np.asarray(slate_vectors, np.float64))
    b = _unit(np.asarray(recent_vectors, np.float64))
    va = (np.ones(a.shape[:2], bool) if slate_valid is None else np.asarray(slate_valid, bool))
    vb = (np.ones(b.shape[:2], bool) if recent_valid is None else np.asarray(recent_valid, bool))
    sims = np.einsum("rse,rne->rsn", a, b)
    pair = va[:, :, None] & vb[:, None, :]
    n = pair.sum(axis=(1, 2))
    total = np.where(pair, sims, 0.0).sum(axis=(1, 2))
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def slates(joined: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Requests of the log as padded slates: ``(requests, item_ids (R, S), valid (R, S))``;
    ``requests`` has one row per request (``request_id, user_id, request_time_ms,
    model_version``) in the order of the arrays, items in position order."""
    df = joined.sort_values(["request_id", "position"])
    req = df.groupby("request_id", sort=True).agg(
        user_id=("user_id", "first"), request_time_ms=("request_time_ms", "first"),
        model_version=("model_version", "first"), n=("item_id", "size")).reset_index()
    width = int(req["n"].max()) if len(req) else 0
    items = np.zeros((len(req), width), np.int64)
    valid = np.zeros((len(req), width), bool)
    row = np.repeat(np.arange(len(req)), req["n"].to_numpy())
    slot = np.arange(len(df)) - np.repeat(np.cumsum(req["n"].to_numpy()) - req["n"].to_numpy(),
                                          req["n"].to_numpy())
    items[row, slot] = df["item_id"].to_numpy(np.int64)
    valid[row, slot] = True
    return req, items, valid


def latest_positive_items(events: pd.DataFrame, user_ids: np.ndarray, times_ms: np.ndarray,
                          n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each (user, time) the item ids of the user's latest ``n`` click / save actions
    strictly before ``time``, newest first: ``(items (R, n), valid (R, n))``."""
    r = len(user_ids)
    items = np.zeros((r, n), np.int64)
    valid = np.zeros((r, n), bool)
    if len(events) == 0 or r == 0:
        return items, valid
    pos = events[events["action_type"].isin([int(ActionType.CLICK), int(ActionType.SAVE)])]
    pos = pos.sort_values(["user_id", "timestamp_ms"], kind="stable")
    grouped = {int(u): (g["timestamp_ms"].to_numpy(np.int64), g["item_id"].to_numpy(np.int64))
               for u, g in pos.groupby("user_id")}
    for i, (user, t) in enumerate(zip(np.asarray(user_ids), np.asarray(times_ms), strict=True)):
        got = grouped.get(int(user))
        if got is None:
            continue
        ts, its = got
        end = int(np.searchsorted(ts, int(t), side="left"))
        take = its[max(0, end - n):end][::-1]
        items[i, :len(take)] = take
        valid[i, :len(take)] = True
    return items, valid


def diversity_by_window(joined: pd.DataFrame, item_vectors: np.ndarray,
                        item_topics: np.ndarray | None, catalogue_size: int, window_ms: int,
                        events: pd.DataFrame | None = None, rabbit_hole_actions: int = 10,
                        origin_ms: int = 0) -> pd.DataFrame:
    """One row per (``window_start_ms``, ``model_version``): ``intra_list_diversity``,
    ``topic_entropy`` (NaN without ``item_topics``), ``catalogue_coverage`` and
    ``rabbit_hole_similarity`` (NaN without ``events``)."""
    cols = ["window_start_ms", "model_version", "intra_list_diversity", "topic_entropy",
            "catalogue_coverage", "rabbit_hole_similarity"]
    if len(joined) == 0:
        return pd.DataFrame(columns=cols)
    req, items, valid = slates(joined)
    ild = intra_list_diversity(item_vectors[items], valid)
    if events is not None and len(events):
        recent, recent_valid = latest_positive_items(
            events, req["user_id"].to_numpy(), req["request_time_ms"].to_numpy(),
            rabbit_hole_actions)
        rabbit = rabbit_hole_similarity(item_vectors[items], item_vectors[recent], valid,
                                        recent_valid)
    else:
        rabbit = np.full(len(req), np.nan)
    req = req.assign(window_start_ms=window_start(req["request_time_ms"], window_ms, origin_ms),
                     ild=ild, rabbit=rabbit)
    out = []
    for (start, version), group in req.groupby(["window_start_ms", "model_version"]):
        idx = group.index.to_numpy()
        shown = items[idx][valid[idx]]
        out.append({
            "window_start_ms": int(start), "model_version": version,
            "intra_list_diversity": float(np.nanmean(group["ild"])) if group["ild"].notna().any()
            else np.nan,
            "topic_entropy": (topic_entropy(np.asarray(item_topics)[shown])
                              if item_topics is not None else np.nan),
            "catalogue_coverage": catalogue_coverage(shown, catalogue_size),
            "rabbit_hole_similarity": float(np.nanmean(group["rabbit"]))
            if group["rabbit"].notna().any() else np.nan,
        })
    return pd.DataFrame(out, columns=cols)
