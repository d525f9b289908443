"""The ranking service without Ray: request validation, online reads with a degraded mode,
scoring and ordering, event ingestion. :mod:`serving.app` is a thin Ray Serve wrapper of it.

``POST /rank`` body (JSON object)::

    {"user_id": 42, "candidates": [3, 17, ...], "request_time_ms": 1767225600000,
     "surface": "homefeed", "top_k": 50}

(``request_time_ms``, ``surface`` and ``top_k`` optional). ``POST /events`` body::

    {"events": [{"event_id": 1, "user_id": 42, "item_id": 3, "action_type": "save",
                 "timestamp_ms": 1767225600000, "surface": "homefeed", "request_id": 7}]}

Every malformed input raises :class:`BadRequest` (an HTTP 4xx with a one-line message).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from serving.config import ServingConfig
from serving.engine import RequestInputs
from serving.model_source import ServedModel
from transact.schema import (
    EVENT_SCHEMA,
    MIN_TIMESTAMP_MS,
    SEQ_LEN,
    SURFACES,
    USER_EMB_DIM,
    ActionType,
)

log = logging.getLogger("transact.serving")

_INT64_MAX = 2**63 - 1
RANK_FIELDS = ("user_id", "candidates", "request_time_ms", "surface", "top_k")
EVENT_FIELDS = ("event_id", "user_id", "item_id", "action_type", "timestamp_ms", "surface",
                "request_id")


class BadRequest(Exception):
    """A client error: ``status`` (400, 413, 422) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class RankRequest:
    """A validated ``POST /rank`` (``candidates`` ``(C,)`` int64, unique)."""

    user_id: int
    candidates: np.ndarray
    request_time_ms: int
    surface_id: int
    top_k: int | None


def parse_json(body: bytes, max_bytes: int) -> Any:
    """Bytes -> JSON value; 413 when too large, 400 when not JSON."""
    if len(body) > max_bytes:
        raise BadRequest(413, f"body is {len(body)} bytes; the limit is {max_bytes}")
    if not body:
        raise BadRequest(400, "empty body: send a JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"body is not valid JSON: {err}") from err


def _int(value: Any, name: str, low: int = 1, high: int = _INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(422, f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise BadRequest(422, f"{name} must be in [{low}, {high}], got {value}")
    return value


def _object(body: Any, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(422, f"{what} must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise BadRequest(422, f"unknown field(s) {unknown} in {what}; allowed: {list(allowed)}")
    return body


def parse_rank_request(body: Any, cfg: ServingConfig, now_ms: int | None = None) -> RankRequest:
    """Validate a ``POST /rank`` JSON body (see the module docstring)."""
    body = _object(body, RANK_FIELDS, "the request")
    for name in ("user_id", "candidates"):
        if name not in body:
            raise BadRequest(422, f"missing field {name!r}")
    user_id = _int(body["user_id"], "user_id")
    cands = body["candidates"]
    if not isinstance(cands, list):
        raise BadRequest(422, f"candidates must be a list of item ids, got "
                              f"{type(cands).__name__}")
    if not cands:
        raise BadRequest(422, "candidates is empty: send at least one item id")
    if len(cands) > cfg.max_candidates:
        raise BadRequest(422, f"{len(cands)} candidates; the limit is {cfg.max_candidates}")
    if any(isinstance(c, bool) or not isinstance(c, int) for c in cands):
        bad = next(c for c in cands if isinstance(c, bool) or not isinstance(c, int))
        raise BadRequest(422, f"candidates must be integers; got {bad!r}")
    if min(cands) < 1 or max(cands) > _INT64_MAX:
        raise BadRequest(422, "candidate ids must be in [1, 2**63 - 1]")
    ids = np.asarray(cands, dtype=np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise BadRequest(422, f"duplicate candidates {unique[counts > 1][:10].tolist()}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    request_time = body.get("request_time_ms")
    if request_time is None:
        request_time = now
    request_time = _int(request_time, "request_time_ms", 0, _INT64_MAX)
    if request_time < MIN_TIMESTAMP_MS:
        raise BadRequest(422, f"request_time_ms {request_time} is before {MIN_TIMESTAMP_MS} "
                              f"(1995): send milliseconds since the epoch")
    if request_time > now + cfg.max_future_ms:
        raise BadRequest(422, f"request_time_ms {request_time} is more than "
                              f"{cfg.max_future_ms} ms in the future")
    surface = body.get("surface", "homefeed")
    if not isinstance(surface, str) or surface not in SURFACES:
        raise BadRequest(422, f"surface must be one of {list(SURFACES)}, got {surface!r}")
    top_k = body.get("top_k")
    if top_k is not None:
        top_k = _int(top_k, "top_k", 1, cfg.max_candidates)
    return RankRequest(user_id=user_id, candidates=ids, request_time_ms=request_time,
                       surface_id=SURFACES.index(surface), top_k=top_k)


_ACTION_NAMES = {a.name.lower(): int(a) for a in ActionType if a != ActionType.PAD}


def parse_events(body: Any, cfg: ServingConfig, now_ms: int | None = None) -> pa.Table:
    """Validate a ``POST /events`` body into an EVENT_SCHEMA table: types here, then the
    processor's own per-event checks (:func:`features.processor.event_rejections`)."""
    from features.processor import REASONS, event_rejections

    body = _object(body, ("events",), "the request")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise BadRequest(422, "events must be a non-empty list of event objects")
    if len(events) > cfg.max_events:
        raise BadRequest(422, f"{len(events)} events; the limit is {cfg.max_events}")
    columns: dict[str, list[Any]] = {name: [] for name in EVENT_FIELDS}
    for i, event in enumerate(events):
        event = _object(event, EVENT_FIELDS, f"events[{i}]")
        missing = [n for n in EVENT_FIELDS if n not in event and n != "surface"]
        if missing:
            raise BadRequest(422, f"events[{i}] lacks {missing}")
        action = event["action_type"]
        if isinstance(action, str):
            if action.lower() not in _ACTION_NAMES:
                raise BadRequest(422, f"events[{i}].action_type {action!r} is not one of "
                                      f"{sorted(_ACTION_NAMES)}")
            action = _ACTION_NAMES[action.lower()]
        columns["action_type"].append(_int(action, f"events[{i}].action_type", -128, 127))
        for name in ("event_id", "user_id", "item_id", "timestamp_ms", "request_id"):
            columns[name].append(_int(event[name], f"events[{i}].{name}", -_INT64_MAX,
                                      _INT64_MAX))
        surface = event.get("surface", "homefeed")
        if not isinstance(surface, str) or surface not in SURFACES:
            raise BadRequest(422, f"events[{i}].surface must be one of {list(SURFACES)}")
        columns["surface"].append(surface)
    arrays = {name: np.asarray(columns[name], dtype=np.int64) for name in
              ("event_id", "user_id", "item_id", "timestamp_ms", "request_id")}
    actions = np.asarray(columns["action_type"], dtype=np.int8)
    reasons = event_rejections(arrays["event_id"], arrays["user_id"], arrays["item_id"],
                               actions, arrays["timestamp_ms"], cfg.max_future_ms, now_ms)
    if (reasons >= 0).any():
        bad = np.flatnonzero(reasons >= 0)[:5]
        detail = "; ".join(f"events[{i}]: {REASONS[reasons[i]]}" for i in bad.tolist())
        raise BadRequest(422, f"{int((reasons >= 0).sum())} invalid event(s), none appended: "
                              f"{detail}")
    return pa.table({**{k: pa.array(v, pa.int64()) for k, v in arrays.items()},
                     "action_type": pa.array(actions, pa.int8()),
                     "surface": pa.array(columns["surface"], pa.string())}
                    ).select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)


# ----------------------------------------------------------------------------- online reads
@dataclass
class UserFeatures:
    """The user part of a request: sequence ``(S,)`` arrays, the batch embedding ``(U,)``, the
    user's engagement counters ``(4,)`` and, for a model that reads them, the candidates'
    ``item_counts`` ``(C, 4)`` (``None``: not read)."""

    seq_item_ids: np.ndarray
    seq_action_types: np.ndarray
    seq_timestamps_ms: np.ndarray
    user_emb: np.ndarray
    found: bool
    user_counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    item_counts: np.ndarray | None = None

    @classmethod
    def cold_start(cls) -> UserFeatures:
        """An unknown user (or the store unreachable): empty sequence, default embedding."""
        zeros = np.zeros(SEQ_LEN, np.int64)
        return cls(zeros, zeros.copy(), zeros.copy(), np.zeros(USER_EMB_DIM, np.float32), False)


@dataclass
class UserFeatureSource:
    """Reads user features from the online store; never raises.

    A failed read (store down, timeout) answers a cold start flagged ``degraded`` and opens a
    breaker: for ``retry_after_s`` no read is attempted (no storm of timeouts), then the next
    request tries again, so the service recovers by itself when the store returns.
    """

    cfg: ServingConfig
    reader: Any = None
    open_failed_at: float = -1.0
    last_error: str = ""
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _open(self) -> Any:
        from features.online import open_reader
        from features.store import load_profile

        profile = load_profile(self.cfg.profile, self.cfg.features_root,
                               redis_port=self.cfg.redis_port)
        reader = open_reader(profile)
        if profile.kind == "production":  # bounded waits instead of the client's defaults
            import redis

            reader.client = redis.Redis(
                host=profile.redis_host, port=profile.redis_port, db=profile.redis_db,
                socket_timeout=self.cfg.store_timeout_s,
                socket_connect_timeout=self.cfg.store_timeout_s)
        return reader

    def _unavailable(self) -> str | None:
        """The degraded reason while the breaker is open, else ``None``."""
        now = time.monotonic()
        with self.lock:
            waiting = now - self.open_failed_at < self.cfg.store_retry_after_s
            if self.open_failed_at >= 0 and waiting:
                return f"online store unavailable: {self.last_error}"
        return None

    def _failed(self, err: Exception) -> str:
        with self.lock:
            self.open_failed_at = time.monotonic()
            self.failures += 1
            self.last_error = f"{type(err).__name__}: {err}"[:200]
        log.warning("online store read failed: %s", self.last_error)
        return f"online store unavailable: {self.last_error}"

    def read(self, user_id: int, candidates: np.ndarray | None = None
             ) -> tuple[UserFeatures, str | None]:
        """``(features, degraded reason or None)``; with ``candidates`` ``(C,)`` also their
        engagement counters (for a model that reads them)."""
        reason = self._unavailable()
        if reason is not None:
            return UserFeatures.cold_start(), reason
        try:
            if self.reader is None:
                self.reader = self._open()
            # one round trip: the user's features and, if asked, the candidates' counters
            got = self.reader.get_ranking_features(
                user_id, [] if candidates is None else candidates, item_embeddings=False)
            item_counts = None if candidates is None else got.item_counts
        except Exception as err:  # noqa: BLE001 - any store failure degrades, never a 500
            return UserFeatures.cold_start(), self._failed(err)
        with self.lock:
            self.open_failed_at = -1.0
        seq_len = int(got.seq_len)
        found = seq_len > 0 or bool(got.user_emb_found)
        return UserFeatures(np.asarray(got.seq_item_ids, np.int64),
                            np.asarray(got.seq_action_types, np.int64),
                            np.asarray(got.seq_timestamps_ms, np.int64),
                            np.asarray(got.user_emb, np.float32), found,
                            np.asarray(got.user_counts, np.int64), item_counts), None


# ----------------------------------------------------------------------------------- ranking
def utility_weights(heads: list[str], utility: dict[str, float]) -> np.ndarray:
    unknown = sorted(set(utility) - set(heads))
    if unknown:
        raise BadRequest(422, f"utility names unknown heads {unknown}; heads are {heads}")
    return np.array([float(utility.get(h, 0.0)) for h in heads], np.float32)


def rank_response(model: ServedModel, req: RankRequest, user: UserFeatures, scores: np.ndarray,
                  weights: np.ndarray, degraded: list[str]) -> dict[str, Any]:
    """The JSON answer: candidates by descending utility, per-head scores, model version."""
    utility = scores @ weights
    order = np.argsort(-utility, kind="stable")
    if req.top_k is not None:
        order = order[: req.top_k]
    heads = model.heads
    items = [{"item_id": int(req.candidates[i]), "utility": float(utility[i]),
              "scores": {h: float(scores[i, j]) for j, h in enumerate(heads)}}
             for i in order.tolist()]
    return {"user_id": req.user_id, "model_version": model.version,
            "request_time_ms": req.request_time_ms, "cold_start": not user.found,
            "sequence_length": int((user.seq_action_types > 0).sum()),
            "degraded": bool(degraded), "degraded_reasons": degraded, "items": items}


def check_known(model: ServedModel, req: RankRequest) -> None:
    known = model.known(req.candidates)
    if not known.all():
        unknown = req.candidates[~known]
        raise BadRequest(422, f"{len(unknown)} unknown item id(s) (no item vector): "
                              f"{unknown[:10].tolist()}")


def score_requests(model: ServedModel, reqs: list[RankRequest], users: list[UserFeatures],
                   ) -> list[np.ndarray]:
    """Probabilities ``(C_r, H)`` per request (one engine pass per request)."""
    inputs = [RequestInputs(seq_item_ids=u.seq_item_ids, seq_action_types=u.seq_action_types,
                            seq_timestamps_ms=u.seq_timestamps_ms,
                            request_time_ms=r.request_time_ms, user_emb=u.user_emb,
                            candidate_item_ids=r.candidates, surface_id=r.surface_id,
                            item_counts=u.item_counts, user_counts=u.user_counts)
              for r, u in zip(reqs, users, strict=True)]
    return model.engine.score_many(inputs)


def warm_up(model: ServedModel, n_candidates: int = 64) -> None:
    """Score one synthetic request (full sequence of known items) so that the first real
    request does not pay for lazy initialisation (allocator, kernels, thread pools)."""
    known = np.flatnonzero(model.known_items)
    if not len(known):
        return
    now = int(time.time() * 1000)
    seq = np.resize(known, SEQ_LEN).astype(np.int64)
    model.engine.score(RequestInputs(
        seq_item_ids=seq, seq_action_types=np.full(SEQ_LEN, int(ActionType.CLICK), np.int64),
        seq_timestamps_ms=now - 1000 * (1 + np.arange(SEQ_LEN, dtype=np.int64)),
        request_time_ms=now, user_emb=np.zeros(USER_EMB_DIM, np.float32),
        candidate_item_ids=np.resize(known, min(n_candidates, len(known))).astype(np.int64)))
