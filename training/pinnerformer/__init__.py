"""The PinnerFormer stage: the daily batch user-embedding job (arXiv 2205.04507, simplified).

Modules:

* :mod:`~training.pinnerformer.config` - :class:`PinnerFormerConfig` (nested
  :class:`~transact.model.pinnerformer.PinnerFormerModelConfig`), the one source of defaults;
* :mod:`~training.pinnerformer.data` - days, item content, vectorised history gathering;
* :mod:`~training.pinnerformer.fit` - the training loop (:func:`train_pinnerformer`);
* :mod:`~training.pinnerformer.checkpoint` - ``model.pt`` with the training horizon;
* :mod:`~training.pinnerformer.job` - :func:`run_daily_embeddings`, the daily job a DAG calls
  (CLI: ``transact train pinnerformer DATASET_DIR OUT_DIR``), and :func:`load_daily_embeddings`;
* :mod:`~training.pinnerformer.evaluate` - recall@k against popularity and content baselines.

The network and its loss are core (:mod:`transact.model.pinnerformer`); staging the written
embeddings into Feast and materialising them is the feature platform's
(:func:`features.store.materialize_user_embeddings`, ``transact features
materialize-embeddings``).
"""

from __future__ import annotations

from training.pinnerformer.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from training.pinnerformer.config import PinnerFormerConfig
from training.pinnerformer.data import day_str, parse_day
from training.pinnerformer.evaluate import EvalReport, evaluate_pinnerformer
from training.pinnerformer.fit import TrainStats, train_pinnerformer
from training.pinnerformer.job import (
    EMBEDDING_SCHEMA,
    ITEM_EMB_NAME,
    ITEM_EMBEDDING_SCHEMA,
    USER_EMB_DIRNAME,
    DailyEmbeddingStats,
    embed_users_at,
    load_daily_embeddings,
    run_daily_embeddings,
)
from transact.model.pinnerformer import PinnerFormerModel, PinnerFormerModelConfig

__all__ = [
    "CHECKPOINT_NAME",
    "EMBEDDING_SCHEMA",
    "ITEM_EMBEDDING_SCHEMA",
    "ITEM_EMB_NAME",
    "USER_EMB_DIRNAME",
    "DailyEmbeddingStats",
    "EvalReport",
    "PinnerFormerConfig",
    "PinnerFormerModel",
    "PinnerFormerModelConfig",
    "TrainStats",
    "day_str",
    "embed_users_at",
    "evaluate_pinnerformer",
    "load_checkpoint",
    "load_daily_embeddings",
    "parse_day",
    "run_daily_embeddings",
    "save_checkpoint",
    "train_pinnerformer",
]
