"""The ranking model: TransAct sequence encoder, Pinnability (DCN v2) ranker, loss, artifact.

This core package depends only on ``transact`` (schema, errors) and torch/numpy/pyarrow.
"""

from __future__ import annotations

from transact.model.artifact import ModelArtifact, load_model, save_model
from transact.model.config import EncoderConfig, LossConfig, ModelConfig, RankerConfig
from transact.model.encoder import SequenceEncoder
from transact.model.features import ExampleArrays, RankingBatch, collate, make_batch
from transact.model.loss import multitask_loss
from transact.model.ranker import Pinnability

__all__ = [
    "EncoderConfig",
    "ExampleArrays",
    "LossConfig",
    "ModelArtifact",
    "ModelConfig",
    "Pinnability",
    "RankerConfig",
    "RankingBatch",
    "SequenceEncoder",
    "collate",
    "load_model",
    "make_batch",
    "multitask_loss",
    "save_model",
]
