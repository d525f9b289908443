"""Turning training-example columns into model tensors.

:class:`ExampleArrays` holds one split of examples as numpy arrays (read once with pyarrow, no
per-row Python); :func:`collate` gathers a batch of rows into a :class:`RankingBatch`, looking the
item content embeddings up in a dense ``(max_item_id + 1, E)`` table
(:func:`transact.data.dataset.item_embedding_table`). The same :func:`make_batch` turns serving
requests (one user, many candidates) into a batch.

Derived features (all computed here, vectorised):

* ``hour_of_day`` - UTC hour of ``request_time_ms``, a categorical 0..23.
* ``numeric`` ``(B, 6)`` - normalised features of the usable sequence (real actions strictly
  before the request): ``log1p(n_actions)``, ``log1p(hours since the newest action)`` (0 when
  there is none), ``log1p(#click)``, ``log1p(#save)``, ``log1p(#hide)`` - each divided by
  ``log1p`` of its typical maximum so that they lie in about ``[0, 1]`` - and ``has_history``
  (0/1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from transact.data.counters import counter_features
from transact.errors import UserError
from transact.schema import COUNTER_COLUMNS, HEADS, HOUR_MS, ActionType, example_schema

NUMERIC_FEATURES: tuple[str, ...] = (
    "log_n_actions", "log_hours_since_last", "log_n_click", "log_n_save", "log_n_hide",
    "has_history",
)
_NUMERIC_SCALE = np.array(
    [np.log1p(100.0), np.log1p(24.0 * 30), np.log1p(100.0), np.log1p(100.0), np.log1p(100.0), 1.0],
    dtype=np.float32,
)


class ExamplesError(UserError):
    """An examples directory is missing or does not hold the training-example schema."""


@dataclass
class ExampleArrays:
    """One split of training examples as numpy arrays (``N`` rows, ``S`` sequence slots)."""

    request_id: np.ndarray  # (N,) int64
    user_id: np.ndarray  # (N,) int64
    item_id: np.ndarray  # (N,) int64
    request_time_ms: np.ndarray  # (N,) int64
    surface_id: np.ndarray  # (N,) int64
    labels: np.ndarray  # (N, H) float32, HEADS order
    seq_item_ids: np.ndarray  # (N, S) int64
    seq_action_types: np.ndarray  # (N, S) int64
    seq_timestamps_ms: np.ndarray  # (N, S) int64
    user_batch_emb: np.ndarray  # (N, U) float32
    user_weight: np.ndarray  # (N,) float32, 1 unless set by the trainer
    #: (N, H) float32 true outcome probabilities where the data source knows them (the
    #: synthetic world's oracle), NaN elsewhere. Never a model input: evaluation only.
    oracle_probs: np.ndarray | None = None
    #: (N, 4) int32 point-in-time engagement counters of the candidate item / of the user
    #: (:mod:`transact.data.counters`); -1 where the examples do not carry them
    item_counts: np.ndarray | None = None
    user_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.request_id)
        if self.oracle_probs is None:
            self.oracle_probs = np.full((n, len(HEADS)), np.nan, np.float32)
        if self.item_counts is None:
            self.item_counts = np.full((n, 4), -1, np.int32)
        if self.user_counts is None:
            self.user_counts = np.full((n, 4), -1, np.int32)

    def __len__(self) -> int:
        return len(self.request_id)

    def take(self, idx: np.ndarray) -> ExampleArrays:
        """Rows ``idx`` (any int index array) as a new :class:`ExampleArrays`."""
        return ExampleArrays(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[ExampleArrays]) -> ExampleArrays:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})


def _fixed_list(table: pa.Table, name: str, dtype: np.dtype) -> np.ndarray:
    column = table.column(name).combine_chunks()
    width = column.type.list_size
    return np.asarray(column.values.to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)


def examples_from_table(table: pa.Table) -> ExampleArrays:
    """Convert an Arrow table with :func:`transact.schema.example_schema` columns."""
    missing = [n for n in example_schema().names if n not in table.column_names]
    if missing:
        raise ExamplesError(f"examples lack columns {missing}; build them with "
                            f"`transact data examples`")

    def col(name: str, dtype: type) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype)

    labels = np.stack([col(f"label_{h}", np.float32) for h in HEADS], axis=1)
    return ExampleArrays(
        request_id=col("request_id", np.int64),
        user_id=col("user_id", np.int64),
        item_id=col("item_id", np.int64),
        request_time_ms=col("request_time_ms", np.int64),
        surface_id=col("surface_id", np.int64),
        labels=labels.reshape(-1, len(HEADS)),
        seq_item_ids=_fixed_list(table, "seq_item_ids", np.int64),
        seq_action_types=_fixed_list(table, "seq_action_types", np.int64),
        seq_timestamps_ms=_fixed_list(table, "seq_timestamps_ms", np.int64),
        user_batch_emb=_fixed_list(table, "user_batch_emb", np.float32),
        user_weight=np.ones(table.num_rows, dtype=np.float32),
        **{name: _fixed_list(table, name, np.int32) for name in COUNTER_COLUMNS
           if name in table.column_names},
    )


def read_examples(split_dir: Path | str) -> ExampleArrays:
    """Read every ``part-*.parquet`` of one split directory (``examples/train`` ...)."""
    split_dir = Path(split_dir)
    parts = sorted(split_dir.glob("part-*.parquet"))
    if not parts:
        raise ExamplesError(f"{split_dir} holds no part-*.parquet example files; build examples "
                            f"with `transact data examples`")
    try:
        tables = [pq.read_table(p) for p in parts]
    except (pa.ArrowInvalid, OSError) as err:
        raise ExamplesError(f"examples under {split_dir} are unreadable: {err}") from err
    return examples_from_table(pa.concat_tables(tables, promote_options="default"))


def hash_item_ids(item_id: np.ndarray, buckets: int) -> np.ndarray:
    """Multiplicative hash of raw item ids into ``[0, buckets)`` (stable across runs)."""
    mixed = (item_id.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return (mixed % np.uint64(buckets)).astype(np.int64)


def sequence_numeric_features(
    seq_action_types: np.ndarray, seq_timestamps_ms: np.ndarray, request_time_ms: np.ndarray
) -> np.ndarray:
    """``(B, 6)`` float32 normalised features (see the module docstring) of ``(B, S)`` sequences.

    Only real actions strictly before ``request_time_ms`` count (defensive against bad data).
    """
    usable = (seq_action_types > 0) & (seq_timestamps_ms < request_time_ms[:, None])
    n_actions = usable.sum(axis=1)
    counts = [((seq_action_types == int(a)) & usable).sum(axis=1)
              for a in (ActionType.CLICK, ActionType.SAVE, ActionType.HIDE)]
    newest_ts = np.where(usable, seq_timestamps_ms, np.iinfo(np.int64).min).max(axis=1)
    has = n_actions > 0
    hours = np.where(has, (request_time_ms - np.where(has, newest_ts, 0)) / HOUR_MS, 0.0)
    raw = np.stack(
        [np.log1p(n_actions), np.log1p(np.maximum(hours, 0.0)), *[np.log1p(c) for c in counts],
         has.astype(np.float64)],
        axis=1,
    ).astype(np.float32)
    return raw / _NUMERIC_SCALE


@dataclass
class RankingBatch:
    """Model inputs for ``B`` (user, candidate) rows; ``S`` sequence slots, newest first.

    ``labels`` / ``user_weight`` / ``request_id`` are only used by training and evaluation.
    """

    seq_action_types: torch.Tensor  # (B, S) int64, 0 = padding
    seq_item_emb: torch.Tensor  # (B, S, E) float32, frozen content embeddings
    seq_timestamps_ms: torch.Tensor  # (B, S) int64
    request_time_ms: torch.Tensor  # (B,) int64
    cand_item_emb: torch.Tensor  # (B, E) float32
    cand_item_bucket: torch.Tensor  # (B,) int64, hashed item id
    surface_id: torch.Tensor  # (B,) int64
    hour_of_day: torch.Tensor  # (B,) int64
    numeric: torch.Tensor  # (B, F) float32
    user_batch_emb: torch.Tensor  # (B, U) float32
    #: (B, 8) float32 engagement-counter features (:func:`counter_features`); None when the
    #: inputs carry no counters
    counters: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # (B, H) float32
    user_weight: torch.Tensor | None = None  # (B,) float32
    request_id: torch.Tensor | None = None  # (B,) int64

    def __len__(self) -> int:
        return int(self.request_time_ms.shape[0])

    def to(self, device: torch.device | str) -> RankingBatch:
        return RankingBatch(**{
            f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
            for f in fields(self)
        })


def _lookup(item_table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Content embeddings of ``ids`` (any shape); unknown ids (beyond the table) get zeros."""
    safe = np.where((ids >= 0) & (ids < len(item_table)), ids, 0)
    return item_table[safe]


def make_batch(
    *,
    item_table: np.ndarray,
    item_id: np.ndarray,
    request_time_ms: np.ndarray,
    surface_id: np.ndarray,
    seq_item_ids: np.ndarray,
    seq_action_types: np.ndarray,
    seq_timestamps_ms: np.ndarray,
    user_batch_emb: np.ndarray,
    item_id_buckets: int,
    labels: np.ndarray | None = None,
    user_weight: np.ndarray | None = None,
    request_id: np.ndarray | None = None,
    item_counts: np.ndarray | None = None,
    user_counts: np.ndarray | None = None,
) -> RankingBatch:
    """Build a :class:`RankingBatch` from numpy arrays (shapes as in :class:`ExampleArrays`).

    ``item_counts`` / ``user_counts`` ``(B, 4)``: the engagement counters; the batch's
    ``counters`` is None unless both are given and known (no -1 entry).
    """
    counters = None
    if (item_counts is not None and user_counts is not None
            and (np.asarray(item_counts) >= 0).all() and (np.asarray(user_counts) >= 0).all()):
        counters = torch.from_numpy(counter_features(item_counts, user_counts))
    seq_action_types = seq_action_types.astype(np.int64)
    request_time_ms = request_time_ms.astype(np.int64)
    return RankingBatch(
        seq_action_types=torch.from_numpy(seq_action_types),
        seq_item_emb=torch.from_numpy(_lookup(item_table, seq_item_ids)),
        seq_timestamps_ms=torch.from_numpy(seq_timestamps_ms.astype(np.int64)),
        request_time_ms=torch.from_numpy(request_time_ms),
        cand_item_emb=torch.from_numpy(_lookup(item_table, item_id)),
        cand_item_bucket=torch.from_numpy(hash_item_ids(item_id, item_id_buckets)),
        surface_id=torch.from_numpy(surface_id.astype(np.int64)),
        hour_of_day=torch.from_numpy((request_time_ms // HOUR_MS) % 24),
        numeric=torch.from_numpy(sequence_numeric_features(
            seq_action_types, seq_timestamps_ms, request_time_ms)),
        user_batch_emb=torch.from_numpy(np.ascontiguousarray(user_batch_emb, dtype=np.float32)),
        counters=counters,
        labels=None if labels is None else torch.from_numpy(labels.astype(np.float32)),
        user_weight=None if user_weight is None else torch.from_numpy(
            user_weight.astype(np.float32)),
        request_id=None if request_id is None else torch.from_numpy(request_id.astype(np.int64)),
    )


def collate(
    examples: ExampleArrays, idx: np.ndarray, item_table: np.ndarray, item_id_buckets: int
) -> RankingBatch:
    """Rows ``idx`` of ``examples`` as a :class:`RankingBatch` (vectorised gathers)."""
    return make_batch(
        item_table=item_table,
        item_id=examples.item_id[idx],
        request_time_ms=examples.request_time_ms[idx],
        surface_id=examples.surface_id[idx],
        seq_item_ids=examples.seq_item_ids[idx],
        seq_action_types=examples.seq_action_types[idx],
        seq_timestamps_ms=examples.seq_timestamps_ms[idx],
        user_batch_emb=examples.user_batch_emb[idx],
        item_id_buckets=item_id_buckets,
        labels=examples.labels[idx],
        user_weight=examples.user_weight[idx],
        request_id=examples.request_id[idx],
        item_counts=examples.item_counts[idx],
        user_counts=examples.user_counts[idx],
    )
