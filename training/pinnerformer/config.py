"""The PinnerFormer stage's settings: one dataclass, the single source of its defaults.

``transact train pinnerformer --config FILE`` reads it as JSON or YAML (the architecture nested
under ``model:``) through :func:`transact.config.resolve_config`: the dataclass's defaults, then
the file, then the command-line options. The checkpoint stores it, so a reused checkpoint brings
its architecture and ``history_len`` along.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transact.errors import UserError
from transact.model.pinnerformer import PinnerFormerModelConfig
from transact.schema import USER_EMB_DIM

__all__ = ["PinnerFormerConfig", "PinnerFormerModelConfig"]


@dataclass
class PinnerFormerConfig:
    """Everything the daily job needs.

    Data / objective:
        history_len: engagements per user fed to the encoder (newest ``history_len``).
        window_days: ``W``, the future window ``[c, c + W)`` whose positives are the targets.
        warmup_days: the first cut-off is this many days after the dataset's first day.
        train_fraction: without explicit ``days``, the first embedded day is at this fraction
            of the dataset's days (and at least ``warmup_days + window_days`` in).
        include_next_day: also write the day after the last event (tomorrow's embedding, which
            is what a production daily run produces).
    Training:
        train_steps, batch_size (users per step), lr, weight_decay.
        max_targets_per_user: future positives per user per step (sampled when more).
        n_random_negatives: uniform random items added to the in-batch candidates.
        logq_correction: subtract log(expected draws) from each candidate's logit.
        max_train_users: train on about this many users (a hash of seed and user id picks
            them part by part, so training memory is bounded by the sample; None = all).
    Inference / runtime:
        infer_batch_size, seed, num_threads (None = leave torch's setting).
    """

    history_len: int = 256
    window_days: int = 7
    warmup_days: int = 3
    train_fraction: float = 0.5
    include_next_day: bool = True
    model: PinnerFormerModelConfig = field(default_factory=PinnerFormerModelConfig)
    train_steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_targets_per_user: int = 32
    n_random_negatives: int = 512
    logq_correction: bool = True
    max_train_users: int | None = None
    infer_batch_size: int = 512
    seed: int = 0
    num_threads: int | None = None

    def validate(self) -> PinnerFormerConfig:
        """Raise :class:`UserError` naming the first bad setting; return ``self``."""
        checks = [
            (self.history_len >= 1, f"history_len must be >= 1, got {self.history_len}"),
            (self.window_days >= 1, f"window_days must be >= 1, got {self.window_days}"),
            (self.warmup_days >= 0, f"warmup_days must be >= 0, got {self.warmup_days}"),
            (0.0 < self.train_fraction < 1.0,
             f"train_fraction must be in (0, 1), got {self.train_fraction}"),
            (self.train_steps >= 0, f"train_steps must be >= 0, got {self.train_steps}"),
            (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
            (self.max_targets_per_user >= 1, "max_targets_per_user must be >= 1"),
            (self.n_random_negatives >= 0, "n_random_negatives must be >= 0"),
            (self.infer_batch_size >= 1, "infer_batch_size must be >= 1"),
            (self.model.out_dim == USER_EMB_DIM,
             f"model.out_dim must be {USER_EMB_DIM} (the feature's width), got "
             f"{self.model.out_dim}"),
            (self.model.d_model % self.model.n_heads == 0,
             f"model.d_model ({self.model.d_model}) must be divisible by model.n_heads "
             f"({self.model.n_heads})"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"PinnerFormer config: {message}")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PinnerFormerConfig:
        """The config of a checkpoint's JSON (flat keys + a nested ``model`` mapping).

        Files given to the CLI go through :func:`transact.config.resolve_config` instead (type
        checks, dotted overrides); both refuse unknown keys.
        """
        values = dict(values)
        model = values.pop("model", {}) or {}
        unknown = set(values) - set(cls.__dataclass_fields__)
        model_keys = set(PinnerFormerModelConfig.__dataclass_fields__)
        unknown |= {f"model.{k}" for k in set(model) - model_keys}
        if unknown:
            raise UserError(f"unknown PinnerFormer config keys: {sorted(unknown)}")
        return cls(model=PinnerFormerModelConfig(**model), **values)

