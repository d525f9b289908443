"""Online reads for serving: one call returns everything a ranking request needs.

:meth:`OnlineReader.get_ranking_features` ``(user_id, candidate_item_ids)`` returns the user's
realtime sequence, the batch user embedding and the candidates' content embeddings as numpy
arrays (shapes in :class:`RankingFeatures`), ready for ``torch.from_numpy``.

Two implementations read the *same* online data:

* :class:`FeastReader` — ``FeatureStore.get_online_features`` (any profile; the reference);
* :class:`RedisDirectReader` — production only: one pipelined round trip (``HMGET`` of the
  user's hash, ``HMGET`` per candidate) over Feast's own Redis layout
  (``features.feast_layout``), candidate embeddings decoded with one ``np.frombuffer``.
  ``bench/bench_online_read.py`` measures both; the direct reader is what serving uses
  when the profile is production (see ``docs/features.md`` for the figures).

Semantics match Feast's: a missing user gives an empty (all-padding) sequence and a zero batch
embedding with ``user_emb_found = False``; an unknown candidate gives a zero embedding with
``item_found = False``. Feast's online store does not apply the view TTL on reads (TTL is applied
when materialising); ``user_emb_timestamp_ms`` lets the caller judge staleness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from features.feast_layout import (
    FeastRedisLayout,
    ValueProto,
    decode_float_lists,
    decode_int_list,
)
from features.names import (
    ITEM_COUNTS_FEATURE,
    ITEM_COUNTS_VIEW,
    ITEM_EMB_FEATURE,
    ITEM_VIEW,
    SEQUENCE_VIEW,
    USER_COUNTS_FEATURE,
    USER_COUNTS_VIEW,
    USER_EMB_FEATURE,
    USER_EMB_VIEW,
)
from features.store import FeatureProfile
from transact.data.counters import COUNTER_NAMES
from transact.errors import UserError
from transact.schema import ITEM_EMB_DIM, SEQ_LEN, USER_EMB_DIM

_N_COUNTS = len(COUNTER_NAMES)


@dataclass
class RankingFeatures:
    """Features of one ranking request.

    ``seq_item_ids`` ``(L,)`` int64, ``seq_action_types`` ``(L,)`` int8,
    ``seq_timestamps_ms`` ``(L,)`` int64 (newest first, zero-padded), ``seq_len`` int,
    ``user_emb`` ``(USER_EMB_DIM,)`` float32, ``user_emb_found`` bool,
    ``user_emb_timestamp_ms`` int (-1 if missing), ``candidate_item_ids`` ``(C,)`` int64,
    ``item_emb`` ``(C, ITEM_EMB_DIM)`` float32, ``item_found`` ``(C,)`` bool;
    ``user_counts`` ``(4,)`` and ``item_counts`` ``(C, 4)`` int64: the stream processor's
    engagement counters (impressions, clicks, saves, hides so far; zeros when none).
    """

    user_id: int
    seq_item_ids: np.ndarray
    seq_action_types: np.ndarray
    seq_timestamps_ms: np.ndarray
    seq_len: int
    user_emb: np.ndarray
    user_emb_found: bool
    user_emb_timestamp_ms: int
    candidate_item_ids: np.ndarray
    item_emb: np.ndarray
    item_found: np.ndarray
    user_counts: np.ndarray
    item_counts: np.ndarray


def _counts(values: list[Any]) -> np.ndarray:
    """Counter lists as read (``None`` when missing) -> ``(K, 4)`` int64, zeros if missing."""
    out = np.zeros((len(values), _N_COUNTS), dtype=np.int64)
    for i, value in enumerate(values):
        if value is not None and len(value):
            out[i, : min(len(value), _N_COUNTS)] = np.asarray(value, np.int64)[:_N_COUNTS]
    return out


def _fit(values: np.ndarray | None, length: int, dtype: Any) -> np.ndarray:
    out = np.zeros(length, dtype=dtype)
    if values is not None:
        n = min(length, len(values))
        out[:n] = values[:n]
    return out


class OnlineReader(Protocol):
    def get_ranking_features(self, user_id: int, candidate_item_ids: Any,
                             item_embeddings: bool = True) -> RankingFeatures: ...

    def get_item_counts(self, item_ids: Any) -> np.ndarray: ...


_SEQ_REFS = [f"{SEQUENCE_VIEW}:{f}" for f in
             ("seq_item_ids", "seq_action_types", "seq_timestamps_ms", "seq_len")]
_ITEM_COUNTS_REF = f"{ITEM_COUNTS_VIEW}:{ITEM_COUNTS_FEATURE}"


class FeastReader:
    """Reads through ``FeatureStore.get_online_features`` (two calls: user, candidates)."""

    def __init__(self, profile: FeatureProfile, seq_len: int = SEQ_LEN) -> None:
        self.store = profile.feature_store()
        self.seq_len = seq_len

    def get_ranking_features(self, user_id: int, candidate_item_ids: Any,
                             item_embeddings: bool = True) -> RankingFeatures:
        cands = np.asarray(candidate_item_ids, dtype=np.int64)
        user = self.store.get_online_features(
            features=[*_SEQ_REFS, f"{USER_EMB_VIEW}:{USER_EMB_FEATURE}",
                      f"{USER_COUNTS_VIEW}:{USER_COUNTS_FEATURE}"],
            entity_rows=[{"user_id": int(user_id)}],
        ).to_dict()
        emb_list: list = []
        count_list: list = []
        if len(cands):
            refs = [f"{ITEM_VIEW}:{ITEM_EMB_FEATURE}"] if item_embeddings else []
            got = self.store.get_online_features(
                features=[*refs, _ITEM_COUNTS_REF], entity_rows={"item_id": cands.tolist()},
            ).to_dict()
            emb_list = got.get(ITEM_EMB_FEATURE, [None] * len(cands))
            count_list = got[ITEM_COUNTS_FEATURE]
        found = np.array([e is not None for e in emb_list], dtype=bool)
        item_emb = np.zeros((len(cands), ITEM_EMB_DIM), dtype=np.float32)
        if found.any():
            item_emb[found] = np.asarray([e for e in emb_list if e is not None],
                                         dtype=np.float32)
        user_emb = user[USER_EMB_FEATURE][0]
        seq_items = user["seq_item_ids"][0]
        return RankingFeatures(
            user_id=int(user_id),
            seq_item_ids=_fit(None if seq_items is None else np.asarray(seq_items),
                              self.seq_len, np.int64),
            seq_action_types=_fit(None if user["seq_action_types"][0] is None
                                  else np.asarray(user["seq_action_types"][0]),
                                  self.seq_len, np.int8),
            seq_timestamps_ms=_fit(None if user["seq_timestamps_ms"][0] is None
                                   else np.asarray(user["seq_timestamps_ms"][0]),
                                   self.seq_len, np.int64),
            seq_len=int(user["seq_len"][0] or 0),
            user_emb=_fit(None if user_emb is None else np.asarray(user_emb, np.float32),
                          USER_EMB_DIM, np.float32),
            user_emb_found=user_emb is not None,
            user_emb_timestamp_ms=-1,
            candidate_item_ids=cands,
            item_emb=item_emb,
            item_found=found,
            user_counts=_counts(user[USER_COUNTS_FEATURE])[0],
            item_counts=_counts(count_list),
        )

    def get_item_counts(self, item_ids: Any) -> np.ndarray:
        """``(C, 4)`` int64 engagement counters of ``item_ids`` (zeros for unseen items)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if not len(ids):
            return _counts([])
        return _counts(self.store.get_online_features(
            features=[_ITEM_COUNTS_REF], entity_rows={"item_id": ids.tolist()},
        ).to_dict()[ITEM_COUNTS_FEATURE])


#: HGET one field from many hashes in one command: a single reply instead of one per key
#: (the pipeline of per-key HMGETs spent most of its time packing and parsing 500 replies).
_HGET_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, ARGV[1])
end
return out
"""


class RedisDirectReader:
    """Production fast path: decodes Feast's Redis layout directly (one round trip: the
    user's ``HMGET`` and one script call that ``HGET``s every candidate's embedding)."""

    def __init__(self, profile: FeatureProfile, seq_len: int = SEQ_LEN) -> None:
        if profile.kind != "production":
            raise UserError("the direct Redis reader needs the production profile; use "
                            "FeastReader (or open_reader) for the embedded profile")
        self.client = profile.redis_client()
        self.layout = FeastRedisLayout(profile.project)
        self.seq_len = seq_len
        f = FeastRedisLayout.field
        self.user_fields = [
            f(SEQUENCE_VIEW, "seq_item_ids"), f(SEQUENCE_VIEW, "seq_action_types"),
            f(SEQUENCE_VIEW, "seq_timestamps_ms"), f(SEQUENCE_VIEW, "seq_len"),
            f(USER_EMB_VIEW, USER_EMB_FEATURE), FeastRedisLayout.ts_field(USER_EMB_VIEW),
            f(USER_COUNTS_VIEW, USER_COUNTS_FEATURE),
        ]
        self.item_field = f(ITEM_VIEW, ITEM_EMB_FEATURE)
        self.item_counts_field = f(ITEM_COUNTS_VIEW, ITEM_COUNTS_FEATURE)
        self._hget_many = self.client.register_script(_HGET_MANY)

    def get_ranking_features(self, user_id: int, candidate_item_ids: Any,
                             item_embeddings: bool = True) -> RankingFeatures:
        """One round trip; ``item_embeddings=False`` skips the candidates' content vectors
        (serving has its own item table) and reads only their counters."""
        cands = np.asarray(candidate_item_ids, dtype=np.int64)
        user_key = self.layout.entity_key_fast("user_id", int(user_id))
        item_blobs: list[bytes | None] = []
        count_blobs: list[bytes | None] = []
        if len(cands):
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(user_key, self.user_fields)
            item_keys = self.layout.entity_keys("item_id", cands)
            if item_embeddings:
                self._hget_many(keys=item_keys, args=[self.item_field], client=pipe)
            self._hget_many(keys=item_keys, args=[self.item_counts_field], client=pipe)
            replies = pipe.execute()
            count_blobs = list(replies[-1])
            if item_embeddings:
                item_blobs = list(replies[1])
        else:  # user features only: one plain HMGET, no pipeline object
            replies = [self.client.hmget(user_key, self.user_fields)]
        (seq_items, seq_actions, seq_ts, seq_len, user_emb_blob, user_ts_blob,
         user_counts_blob) = replies[0]
        item_blobs += [None] * (len(cands) - len(item_blobs))  # trailing nils are trimmed
        item_emb, found = decode_float_lists(item_blobs, ITEM_EMB_DIM)
        user_emb, user_found = decode_float_lists([user_emb_blob], USER_EMB_DIM)
        stamp = -1
        if user_ts_blob is not None:
            ts = Timestamp.FromString(user_ts_blob)
            stamp = ts.seconds * 1000 + ts.nanos // 1_000_000
        return RankingFeatures(
            user_id=int(user_id),
            seq_item_ids=_fit(decode_int_list(seq_items), self.seq_len, np.int64),
            seq_action_types=_fit(decode_int_list(seq_actions), self.seq_len, np.int8),
            seq_timestamps_ms=_fit(decode_int_list(seq_ts), self.seq_len, np.int64),
            seq_len=0 if seq_len is None else int(ValueProto.FromString(seq_len).int64_val),
            user_emb=user_emb[0],
            user_emb_found=bool(user_found[0]),
            user_emb_timestamp_ms=stamp,
            candidate_item_ids=cands,
            item_emb=item_emb,
            item_found=found,
            user_counts=_counts([decode_int_list(user_counts_blob)])[0],
            item_counts=self._decode_counts(count_blobs, len(cands)),
        )

    @staticmethod
    def _decode_counts(blobs: list[bytes | None], n: int) -> np.ndarray:
        blobs = blobs + [None] * (n - len(blobs))  # trailing nils are trimmed
        return _counts([decode_int_list(b) for b in blobs])

    def get_item_counts(self, item_ids: Any) -> np.ndarray:
        """``(C, 4)`` int64 engagement counters of ``item_ids``: one script call."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if not len(ids):
            return _counts([])
        blobs = self._hget_many(keys=self.layout.entity_keys("item_id", ids),
                                args=[self.item_counts_field])
        return self._decode_counts(list(blobs), len(ids))


def freeze_startup_heap() -> int:
    """Move every object alive now out of the garbage collector's view (``gc.freeze()``) and
    return how many. Call it once in a serving replica after start-up (imports, model, reader
    opened): full collections then no longer walk the start-up heap (300k+ objects once
    ``feast``/``torch`` are imported), which is what made the direct read's p99 jump from
    ~0.3 ms to several ms (``bench/bench_online_read.py`` measures both)."""
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def open_reader(profile: FeatureProfile, mode: str = "auto") -> OnlineReader:
    """``mode``: ``"feast"``, ``"direct"`` (production only) or ``"auto"`` (direct when the
    profile is production, else Feast)."""
    if mode not in ("auto", "feast", "direct"):
        raise UserError(f"unknown read mode {mode!r}; use auto, feast or direct")
    if mode == "direct" or (mode == "auto" and profile.kind == "production"):
        return RedisDirectReader(profile)
    return FeastReader(profile)


def get_ranking_features(
    profile: FeatureProfile, user_id: int, candidate_item_ids: Any, mode: str = "auto"
) -> RankingFeatures:
    """One-shot convenience (opens a reader each call; keep a reader for serving)."""
    return open_reader(profile, mode).get_ranking_features(user_id, candidate_item_ids)
