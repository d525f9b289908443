"""PinnerFormer checkpoints: weights, config and the training horizon in one torch file.

``trained_until_ms`` (a UTC day start) is the horizon: the model saw only events strictly before
it, so the job refuses to reuse it for an earlier day. The item content table is not saved (a
non-persistent buffer): :func:`load_checkpoint` attaches the current ``items.parquet``'s.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from training.pinnerformer.config import PinnerFormerConfig
from training.pinnerformer.fit import TrainStats
from transact.errors import CorruptArtifact, UserError
from transact.model.pinnerformer import PinnerFormerModel

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint"]

#: the checkpoint's file name inside the job's output directory
CHECKPOINT_NAME = "model.pt"
CHECKPOINT_FORMAT = "pinnerformer-v1"


def save_checkpoint(
    path: str | Path, model: PinnerFormerModel, cfg: PinnerFormerConfig, stats: TrainStats,
    until_ms: int,
) -> None:
    """Weights + configs + the training horizon (``trained_until_ms``) in one torch file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(asdict(cfg)),
        "train_stats": json.dumps(asdict(stats)),
        "trained_until_ms": int(until_ms),
        "state_dict": model.state_dict(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(
    path: str | Path, item_content: np.ndarray
) -> tuple[PinnerFormerModel, PinnerFormerConfig, TrainStats, int]:
    """``(model in eval mode, its config, its training stats, trained_until_ms)``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"PinnerFormer checkpoint {path} does not exist; run the daily job "
                        f"without a checkpoint to train one")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        cfg = PinnerFormerConfig.from_dict(json.loads(payload["config"]))
        stats = TrainStats(**json.loads(payload["train_stats"]))
        model = PinnerFormerModel(cfg.model, torch.from_numpy(item_content))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError, EOFError,
            pickle.UnpicklingError) as err:
        raise CorruptArtifact(f"{path} is not a readable PinnerFormer checkpoint ({err}); "
                              f"re-run the daily job to write a new one") from err
    model.eval()
    return model, cfg, stats, int(payload["trained_until_ms"])

