"""Self-describing model artifact: ``model.json`` (config + metadata) + ``weights.safetensors``.

No pickled code: the config is JSON and the weights are a safetensors file of the state dict, so
loading an artifact never executes anything from it. :func:`load_model` rebuilds the model from
the config and loads the weights strictly (missing or unexpected tensors are an error).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from transact.errors import CorruptArtifact, UserError
from transact.model.config import ModelConfig
from transact.model.ranker import Pinnability

FORMAT = "transact-model"
FORMAT_VERSION = 1
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


class ArtifactError(UserError):
    """A model artifact directory is missing, incomplete or from an unknown format (the
    user pointed at the wrong place: exit code 2)."""


class CorruptModelArtifact(CorruptArtifact):
    """An artifact whose files exist but cannot be read back (broken JSON, weights that do
    not match the config): the platform's own output is damaged (exit code 3)."""


@dataclass
class ModelArtifact:
    """A loaded artifact: the model (in eval mode), its config and free-form metadata."""

    model: Pinnability
    config: ModelConfig
    metadata: dict[str, Any] = field(default_factory=dict)


def save_model(model: Pinnability, config: ModelConfig, out_dir: Path | str,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/model.json`` and ``out_dir/weights.safetensors``; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in
             model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "torch_version": torch.__version__,
        "config": config.to_dict(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "metadata": metadata or {},
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(doc, indent=2, default=str))
    return out_dir


def load_model(path: Path | str) -> ModelArtifact:
    """Rebuild a model saved by :func:`save_model` (returned in eval mode)."""
    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.exists() or not weights_path.exists():
        raise ArtifactError(f"{path} is not a model artifact: expected {CONFIG_FILE} and "
                            f"{WEIGHTS_FILE} (train one with `transact train fit`)")
    try:
        doc = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CorruptModelArtifact(f"{config_path} is not valid JSON: {err}") from err
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{config_path} is format {doc.get('format')!r} version "
                            f"{doc.get('format_version')!r}; this code reads {FORMAT!r} version "
                            f"{FORMAT_VERSION}")
    config = ModelConfig.from_dict(doc["config"])
    model = Pinnability(config.ranker)
    try:
        model.load_state_dict(load_file(str(weights_path)), strict=True)
    except (RuntimeError, OSError) as err:
        raise CorruptModelArtifact(f"{weights_path} does not match its config: {err}") from err
    model.eval()
    return ModelArtifact(model=model, config=config, metadata=doc.get("metadata", {}))
