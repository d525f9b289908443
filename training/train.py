"""A plain PyTorch training loop: ``train_model(cfg, data) -> TrainResult``.

A pure function of its config and data (no globals read, no files written), so that a Ray Train
worker can call it unchanged. Seeded: the same ``TrainConfig.seed`` on the same data and thread
count gives the same weights and metrics (parameter init and dropout via ``torch.manual_seed``,
the epoch order via a numpy ``Generator``, the time-window mask via its own ``torch.Generator``).

Data: example splits as written by :func:`transact.data.examples.build_examples`
(``examples/{train,val,test}/part-*.parquet`` + ``examples/items.parquet``), read once with
pyarrow into numpy (:class:`transact.model.features.ExampleArrays`); batches are gathered
with vectorised numpy indexing.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transact.data.dataset import item_embedding_table, read_items
from transact.data.examples import PINNERFORMER_ITEMS
from transact.errors import UserError
from transact.metrics import DEFAULT_UTILITY, HitAtK, ranking_metrics_detail
from transact.model.config import ITEM_REPRESENTATIONS, ConfigError, ModelConfig
from transact.model.features import ExampleArrays, RankingBatch, collate, read_examples
from transact.model.loss import multitask_loss, user_weights
from transact.model.ranker import Pinnability
from transact.schema import HEADS


@dataclass
class TrainConfig:
    """Optimisation budget and seeds. ``max_steps`` caps the total number of Adam steps
    (``None``: ``max_epochs`` full passes). Early stopping: evaluate the validation loss every
    ``eval_every_steps`` (``None``: once per epoch) and stop after ``patience`` evaluations
    without improvement; the best weights are kept."""

    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    batch_size: int = 256
    eval_batch_size: int = 2048
    lr: float = 3e-3
    weight_decay: float = 0.0
    max_epochs: int = 1
    max_steps: int | None = None
    eval_every_steps: int | None = 300
    patience: int = 3
    #: what early stopping watches on the validation split: ``auc`` (mean AUC over heads,
    #: higher is better; robust to negative down-sampling, which biases the loss) or ``loss``
    early_stopping: str = "auc"
    #: keep each training row without any positive label with this probability (the paper
    #: down-samples negatives); seeded, applied before ``max_train_examples``
    negative_keep_rate: float = 0.5
    #: train on a seeded random subset of this many rows (None: all)
    max_train_examples: int | None = None
    #: form batches of rows with similar sequence lengths (shuffled batch order), so that a
    #: batch is only as long as its longest sequence: same rows per epoch, far less padding
    bucket_by_length: bool = True
    #: validate on a seeded random subset of this many requests (whole requests; None: all)
    max_eval_requests: int | None = 3_000
    #: the final test evaluation on a seeded subset of this many requests (None: the whole
    #: test split; a 3,000-request subset made a third of the seed spread of the synthetic
    #: table's HIT@3, docs/model.md Findings session 8)
    max_test_requests: int | None = None
    #: intra-op threads; 1 is fastest on a shared 2-core machine (2 threads were measured
    #: 1.3-2.1x slower there, `bench/bench_threads.py`): run two 1-thread jobs side by side
    num_threads: int = 1
    utility: tuple[float, ...] = DEFAULT_UTILITY
    progress: bool = False
    #: exponential moving average of the weights (Polyak averaging): validation, early
    #: stopping and the returned model use the averaged weights, updated after every Adam
    #: step with ``min(ema_decay, (1 + step) / (10 + step))``. ``None``: the raw weights.
    ema_decay: float | None = None
    #: stochastic weight averaging on top of ``ema_decay``: from this (0-based) step on, the
    #: averaged weights are the uniform mean of the moving average at that step and of every
    #: later step's weights (``1 / (step - swa_start_step + 2)`` per update) instead of an
    #: exponential one. ``None``: the moving average throughout. Measured on MovieLens
    #: (docs/model.md, Findings session 14): a smoother validation course, runs twice as long.
    swa_start_step: int | None = None
    #: learning-rate schedule over the run's planned steps (``max_epochs`` x steps per epoch,
    #: capped by ``max_steps``): ``constant``; ``linear`` (decays to 0 at the last planned
    #: step); ``cosine`` (half a cosine to 0). Both decays start after ``warmup_steps`` of a
    #: linear ramp from ``lr / warmup_steps`` to ``lr``. Early stopping may end a run before
    #: the planned end; the schedule does not look at it.
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    #: after early stopping, train a fresh model (same seed and settings) on the training
    #: rows plus the whole validation split for the early-stopped run's best number of steps
    #: scaled by the rows added (``best_step x (train + val) / train``, one evaluation at
    #: the end) and return it: on a time split the validation days are the ones nearest the
    #: test (and, in production, nearest tomorrow's traffic). ``val_metrics`` stay the
    #: early-stopped model's (the refitted one has seen the validation split);
    #: ``test_metrics`` are the refitted model's. Costs a second run; not for streamed data.
    refit_on_val: bool = False
    #: with ``refit_on_val`` and ``graph`` item vectors, the refit reads those of the window
    #: through the test start where the examples carry them (``item_graph_refit.parquet``,
    #: written by the example builder): the item-embedding job is refitted with the ranker.
    #: Opt-in: measured on MovieLens (docs/model.md, Findings session 11) not better.
    refit_item_vectors: bool = False

    def validate(self) -> TrainConfig:
        self.model.validate()
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")
        if self.max_epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ConfigError("max_epochs and max_steps must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.negative_keep_rate <= 1.0:
            raise ConfigError(f"negative_keep_rate must be in (0, 1], got "
                              f"{self.negative_keep_rate}")
        if self.early_stopping not in ("auc", "loss"):
            raise ConfigError(f"early_stopping must be 'auc' or 'loss', got "
                              f"{self.early_stopping!r}")
        if self.patience < 1:
            raise ConfigError("patience must be >= 1")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.swa_start_step is not None and (self.ema_decay is None
                                                or self.swa_start_step < 0):
            raise ConfigError(f"swa_start_step ({self.swa_start_step}) needs ema_decay (the "
                              f"average before it) and must be >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got "
                              f"{self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("max_eval_requests", "max_test_requests"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        return self


LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based) of
    ``total_steps`` planned steps: a linear warm-up over ``warmup_steps``, then ``schedule``
    (see :attr:`TrainConfig.lr_schedule`). Never 0 (the last step keeps a small rate)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(span - 1, step - warmup_steps) / span  # < 1: the last step keeps a rate
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainData:
    """Example splits (``test`` optional) and the ``(max_item_id + 1, E)`` item table."""

    train: ExampleArrays
    val: ExampleArrays
    test: ExampleArrays | None
    item_table: np.ndarray
    source: str = ""
    #: which item vectors ``item_table`` holds (must match the model's
    #: ``RankerConfig.item_representation``)
    item_representation: str = "content"
    #: where the data were read from (lets a caller switch item representations)
    examples_dir: Path | None = None
    #: ``item_table`` made from the window through the test start (training + validation
    #: events) for a refit on train + validation (``TrainConfig.refit_on_val``); ``None``:
    #: the refit reads ``item_table``
    refit_item_table: np.ndarray | None = None

    def with_items(self, representation: str) -> TrainData:
        """The same examples with ``representation`` item vectors (read from
        ``examples_dir``); ``self`` when it already holds them."""
        if representation == self.item_representation:
            return self
        if self.examples_dir is None:
            raise ConfigError(f"these data hold {self.item_representation!r} item vectors and "
                              f"know no examples directory to read {representation!r} ones from")
        return dataclasses.replace(self, item_table=_item_table(self.examples_dir,
                                                                representation),
                                   refit_item_table=_refit_item_table(self.examples_dir,
                                                                      representation),
                                   item_representation=representation)


def _item_table(examples_dir: Path, representation: str) -> np.ndarray:
    content = item_embedding_table(read_items(examples_dir))
    if representation == "content":
        return content
    if representation == "graph":
        from training.item_embeddings import read_item_graph

        return read_item_graph(examples_dir, len(content))
    if representation in ("pinnerformer", "content+pinnerformer"):
        batch = read_item_vectors(examples_dir / PINNERFORMER_ITEMS, "item_emb", len(content),
                                  "build the examples with the daily PinnerFormer embeddings "
                                  "(ExampleConfig.user_emb_path)")
        if representation == "pinnerformer":
            return batch
        rows = max(len(content), len(batch))
        both = np.zeros((rows, content.shape[1] + batch.shape[1]), np.float32)
        both[: len(content), : content.shape[1]] = content
        both[: len(batch), content.shape[1]:] = batch
        return both
    raise ConfigError(f"item_representation={representation!r} is not one of "
                      f"{list(ITEM_REPRESENTATIONS)}")


def _refit_item_table(examples_dir: Path, representation: str) -> np.ndarray | None:
    """The ``graph`` item vectors of the window through the test start, if written."""
    from transact.model.item_graph import GRAPH_REFIT_FILE

    path = examples_dir / GRAPH_REFIT_FILE
    if representation != "graph" or not path.exists():
        return None
    n_rows = len(item_embedding_table(read_items(examples_dir)))
    return read_item_vectors(path, "graph_emb", n_rows, "")


def read_item_vectors(path: Path, column: str, n_rows: int, how_to_make: str) -> np.ndarray:
    """``(max(n_rows, max id + 1), D)`` float32 table of ``path``'s ``item_id`` -> ``column``
    vectors (row = item id; ids it lacks are zero)."""
    import pyarrow.parquet as pq

    if not path.exists():
        raise UserError(f"{path} is missing: {how_to_make}")
    return item_embedding_table(pq.read_table(path), column, n_rows)


def attach_oracle(examples: ExampleArrays, truth_dir: Path) -> ExampleArrays:
    """Fill ``examples.oracle_probs`` from the synthetic world's ``truth/part-*.parquet``
    (joined on ``(request_id, item_id)``); rows the truth lacks stay NaN."""
    import pandas as pd
    import pyarrow.parquet as pq

    parts = sorted(truth_dir.glob("part-*.parquet"))
    if not parts:
        return examples
    truth = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    rows = pd.DataFrame({"request_id": examples.request_id, "item_id": examples.item_id})
    joined = rows.merge(truth, on=["request_id", "item_id"], how="left", validate="m:1")
    oracle = joined[[f"p_{h}" for h in HEADS]].to_numpy(np.float32)
    return dataclasses.replace(examples, oracle_probs=oracle)


def oracle_metrics(examples: ExampleArrays, utility: tuple[float, ...] = DEFAULT_UTILITY
                   ) -> tuple[dict[str, float], dict[str, HitAtK]] | None:
    """The ceiling: metrics of the true probabilities, or None when some row lacks them."""
    if not len(examples) or not np.isfinite(examples.oracle_probs).all():
        return None
    return ranking_metrics_detail(examples.request_id, examples.oracle_probs, examples.labels,
                                  utility)


def load_training_data(examples_dir: Path | str, item_representation: str = "content",
                       with_train: bool = True, with_test: bool = True) -> TrainData:
    """Read ``examples_dir/{train,val,test}`` and ``examples_dir/items.parquet``; where the
    examples carry the synthetic world's ``truth/``, val and test get the oracle's
    probabilities (``ExampleArrays.oracle_probs``). ``item_representation``: ``content``
    (``items.parquet``) or ``graph`` (the item-embedding job's ``item_graph.parquet``).
    ``with_train`` / ``with_test`` False leave those splits out (empty / None)."""
    examples_dir = Path(examples_dir)
    if not (examples_dir / "train").is_dir():
        raise UserError(f"{examples_dir} holds no train/ split; build examples first with "
                        f"`transact data examples DATASET_DIR OUT_DIR`")
    items_path = examples_dir / "items.parquet"
    if not items_path.exists():
        raise UserError(f"{items_path} is missing: the examples directory must carry the "
                        f"dataset's items.parquet")
    test_dir = examples_dir / "test"
    has_test = test_dir.is_dir() and any(test_dir.glob("part-*.parquet"))
    truth_dir = examples_dir / "truth"
    val = attach_oracle(read_examples(examples_dir / "val"), truth_dir)
    test = (attach_oracle(read_examples(test_dir), truth_dir)
            if has_test and with_test else None)
    return TrainData(
        # without the train split (a streamed trainer reads it shard by shard): empty rows
        train=read_examples(examples_dir / "train") if with_train else val.take(
            np.zeros(0, np.int64)),
        val=val,
        test=test,
        item_table=_item_table(examples_dir, item_representation),
        refit_item_table=_refit_item_table(examples_dir, item_representation),
        source=examples_dir.name,
        item_representation=item_representation,
        examples_dir=examples_dir,
    )


@dataclass
class TrainResult:
    """The trained model (best validation weights, eval mode) and what happened."""

    model: Pinnability
    config: TrainConfig
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    history: list[dict[str, float]]
    steps: int
    best_step: int
    train_seconds: float
    examples_per_s: float
    n_parameters: int
    test_hits: dict[str, HitAtK] = field(default_factory=dict)
    #: Adam steps of the refit on train + validation (``TrainConfig.refit_on_val``; 0: none)
    refit_steps: int = 0
    #: the item vectors ``model`` was trained with where they are not the data's
    #: ``item_table`` (a refit on the refit window's vectors); serve the model with these
    item_table: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "best_step": self.best_step,
                "refit_steps": self.refit_steps,
                "train_seconds": round(self.train_seconds, 2),
                "examples_per_s": round(self.examples_per_s, 1),
                "n_parameters": self.n_parameters,
                "val": self.val_metrics, "test": self.test_metrics}


def subsample_requests(examples: ExampleArrays, max_requests: int | None, seed: int
                       ) -> ExampleArrays:
    """Keep whole requests: a seeded random subset of ``max_requests`` request ids."""
    if max_requests is None:
        return examples
    requests = np.unique(examples.request_id)
    if len(requests) <= max_requests:
        return examples
    chosen = np.random.default_rng(seed).choice(requests, size=max_requests, replace=False)
    return examples.take(np.flatnonzero(np.isin(examples.request_id, chosen)))


@torch.no_grad()
def predict_probs(model: Pinnability, examples: ExampleArrays, item_table: np.ndarray,
                  batch_size: int = 2048) -> np.ndarray:
    """Head probabilities ``(N, H)`` in eval mode."""
    was_training = model.training
    model.eval()
    buckets = model.cfg.item_id_buckets
    device = next(model.parameters()).device
    # rows sorted by sequence length: each batch is only as long as its longest sequence
    order = np.argsort(sequence_lengths(examples), kind="stable")
    probs = np.zeros((len(examples), len(model.cfg.heads)), np.float32)
    for start in range(0, len(examples), batch_size):
        idx = order[start:start + batch_size]
        batch = collate(examples, idx, item_table, buckets)
        if device.type != "cpu":
            batch = batch.to(device)
        probs[idx] = torch.sigmoid(model(batch)).cpu().numpy()
    model.train(was_training)
    return probs


def sequence_lengths(examples: ExampleArrays) -> np.ndarray:
    """``(N,)`` number of real actions strictly before each request."""
    return ((examples.seq_action_types > 0)
            & (examples.seq_timestamps_ms < examples.request_time_ms[:, None])).sum(axis=1)


def epoch_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                  bucket_by_length: bool, chunk_batches: int = 64) -> list[np.ndarray]:
    """Row-index batches of one epoch: a seeded permutation; with ``bucket_by_length``, each
    chunk of ``chunk_batches`` batches is sorted by sequence length before cutting, and the
    batch order is shuffled."""
    order = rng.permutation(len(lengths))
    if not bucket_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        rows = order[start:start + chunk]
        rows = rows[np.argsort(lengths[rows], kind="stable")]
        batches += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def evaluate(model: Pinnability, examples: ExampleArrays, item_table: np.ndarray,
             label_weights: torch.Tensor, batch_size: int = 2048,
             utility: tuple[float, ...] = DEFAULT_UTILITY
             ) -> tuple[dict[str, float], dict[str, HitAtK]]:
    """Metrics (``loss`` + :func:`transact.metrics.ranking_metrics`) and per-request hits."""
    probs = predict_probs(model, examples, item_table, batch_size)
    logits = torch.logit(torch.from_numpy(probs).double().clamp(1e-7, 1 - 1e-7))
    loss = float(multitask_loss(logits, torch.from_numpy(examples.labels).double(),
                                label_weights.double()))
    metrics, hits = ranking_metrics_detail(examples.request_id, probs, examples.labels, utility)
    return {"loss": loss, **metrics}, hits


class _WeightAverage:
    """An exponential moving average of a model's floating-point parameters and buffers,
    kept in a second :class:`Pinnability` of the same configuration (evaluated in place of
    the trained one)."""

    def __init__(self, model: Pinnability, decay: float, uniform_from: int | None = None
                 ) -> None:
        self.decay = decay
        self.uniform_from = uniform_from
        self.model = Pinnability(model.cfg)
        self.model.load_state_dict(model.state_dict())
        self.model.to(next(model.parameters()).device)
        self.model.eval()
        self._pairs = [(avg, live) for avg, live in zip(
            self.model.state_dict().values(), model.state_dict().values(), strict=True)
            if avg.is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the live weights after optimizer step ``step`` (0-based);
        the early steps use a smaller decay so that the start weights fade quickly; from
        ``uniform_from`` on, a uniform mean (``TrainConfig.swa_start_step``)."""
        if self.uniform_from is not None and step >= self.uniform_from:
            weight = 1.0 / (step - self.uniform_from + 2.0)
        else:
            weight = 1.0 - min(self.decay, (1.0 + step) / (10.0 + step))
        for avg, live in self._pairs:
            avg.lerp_(live, weight)


@dataclass
class LoopState:
    """Everything needed to continue a run exactly where it stopped (a checkpoint)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    step: int
    epoch: int
    batch_in_epoch: int
    best_score: float
    best_step: int
    best_state: dict[str, torch.Tensor] | None
    bad_evals: int
    history: list[dict[str, float]]
    seen: int
    train_seconds: float
    torch_rng: torch.Tensor
    mask_rng: torch.Tensor | None
    #: numpy bit-generator state at the start of ``epoch`` (in-memory batch order)
    epoch_rng: dict[str, Any] | None
    stopped: bool = False
    #: the averaged weights (``TrainConfig.ema_decay``), None without averaging
    ema_state: dict[str, torch.Tensor] | None = None


@dataclass
class TrainHooks:
    """How a distributed runner (:mod:`training.ray_train`) plugs into :func:`train_model`;
    every field is optional and the defaults are the plain single-process loop.

    * ``epoch_batches(epoch)``: the training batches of one epoch (a streamed source); the
      loop then ignores ``data.train``.
    * ``steps_per_epoch``: steps of one epoch (every DDP worker must take the same number).
    * ``wrap_model(model)``: e.g. DistributedDataParallel; evaluation uses the bare model.
    * ``on_eval(state, metrics)``: after every validation (report / checkpoint).
    * ``restore``: a :class:`LoopState` to continue from.
    * ``before_step(step)``: called before each optimizer step (failure injection in tests).
    """

    epoch_batches: Callable[[int], Iterable[RankingBatch]] | None = None
    steps_per_epoch: int | None = None
    wrap_model: Callable[[Pinnability], torch.nn.Module] | None = None
    on_eval: Callable[[LoopState, dict[str, float]], None] | None = None
    restore: LoopState | None = None
    before_step: Callable[[int], None] | None = None


def prepare_train_rows(cfg: TrainConfig, train: ExampleArrays, rng: np.random.Generator
                       ) -> ExampleArrays:
    """Negative down-sampling, the ``max_train_examples`` cap and the per-user loss weights
    (consumes ``rng`` in a fixed order)."""
    if cfg.negative_keep_rate < 1.0:
        negative = train.labels.max(axis=1) == 0
        keep = ~negative | (rng.random(len(train)) < cfg.negative_keep_rate)
        train = train.take(np.flatnonzero(keep))
    if cfg.max_train_examples is not None and len(train) > cfg.max_train_examples:
        train = train.take(np.sort(rng.choice(len(train), cfg.max_train_examples,
                                              replace=False)))
    return dataclasses.replace(
        train, user_weight=user_weights(train.user_id, cfg.model.loss.user_weighting))


def train_model(cfg: TrainConfig, data: TrainData, hooks: TrainHooks | None = None
                ) -> TrainResult:
    """Train a :class:`Pinnability` with Adam; returns validation and test metrics."""
    cfg.validate()
    hooks = hooks or TrainHooks()
    if cfg.model.ranker.item_representation != data.item_representation:
        raise ConfigError(
            f"the model expects {cfg.model.ranker.item_representation!r} item vectors but the "
            f"data holds {data.item_representation!r} ones; load it with "
            f"load_training_data(..., item_representation="
            f"{cfg.model.ranker.item_representation!r})")
    if data.item_table.shape[1] != cfg.model.ranker.item_emb_dim:
        raise ConfigError(f"the {data.item_representation!r} item vectors are "
                          f"{data.item_table.shape[1]}-d but the model's item_emb_dim is "
                          f"{cfg.model.ranker.item_emb_dim}")
    streamed = hooks.epoch_batches is not None
    if cfg.refit_on_val and (streamed or hooks.restore is not None):
        raise ConfigError("refit_on_val needs the training rows in memory (not a streamed or "
                          "resumed run)")
    if (not streamed and len(data.train) == 0) or len(data.val) == 0:
        raise UserError("training needs non-empty train and val splits (got "
                        f"{len(data.train)} / {len(data.val)} rows); use more days of data")
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = Pinnability(cfg.model.ranker)
    model.encoder.set_mask_seed(cfg.seed + 1)
    label_weights = torch.tensor(cfg.model.loss.matrix(), dtype=torch.float32)
    buckets = cfg.model.ranker.item_id_buckets

    if streamed:
        train = data.train
        if hooks.steps_per_epoch is None:
            raise ConfigError("a streamed training set needs TrainHooks.steps_per_epoch")
        steps_per_epoch = hooks.steps_per_epoch
    else:
        train = prepare_train_rows(cfg, data.train, rng)
        steps_per_epoch = -(-len(train) // cfg.batch_size)
        if hooks.steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, hooks.steps_per_epoch)
    val = subsample_requests(data.val, cfg.max_eval_requests, cfg.seed)
    test = None if data.test is None else subsample_requests(data.test, cfg.max_test_requests,
                                                             cfg.seed)
    trained = hooks.wrap_model(model) if hooks.wrap_model is not None else model
    device = next(model.parameters()).device  # a GPU when wrap_model moved it there
    label_weights = label_weights.to(device)
    # the weights that are validated and kept: the model itself, or its moving average
    # (made after wrap_model, which may move the model to another device)
    averaged = (None if cfg.ema_decay is None
                else _WeightAverage(model, cfg.ema_decay, cfg.swa_start_step))
    scored = model if averaged is None else averaged.model
    optimizer = torch.optim.Adam(trained.parameters(), lr=cfg.lr,
                                 weight_decay=cfg.weight_decay)
    total_steps = steps_per_epoch * cfg.max_epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    eval_every = cfg.eval_every_steps or steps_per_epoch
    scheduled = cfg.lr_schedule != "constant" or cfg.warmup_steps > 0

    history: list[dict[str, float]] = []
    best_score, best_step, best_state, bad_evals = float("inf"), 0, None, 0
    step, seen, train_seconds, epoch, skip = 0, 0, 0.0, 0, 0
    stop = False
    epoch_rng: dict[str, Any] | None = None
    if hooks.restore is not None:
        state = hooks.restore
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        step, epoch, skip = state.step, state.epoch, state.batch_in_epoch
        best_score, best_step, bad_evals = state.best_score, state.best_step, state.bad_evals
        best_state, history = state.best_state, list(state.history)
        seen, train_seconds, stop = state.seen, state.train_seconds, state.stopped
        torch.set_rng_state(state.torch_rng)
        if state.mask_rng is not None and model.encoder.mask_generator is not None:
            model.encoder.mask_generator.set_state(state.mask_rng)
        if state.epoch_rng is not None:
            rng.bit_generator.state = state.epoch_rng
        if averaged is not None and state.ema_state is not None:
            averaged.model.load_state_dict(state.ema_state)
    progress = _progress(cfg.progress, total_steps)
    trained.train()
    lengths = None if streamed else sequence_lengths(train)

    def batches_of(epoch_index: int) -> Iterable[RankingBatch]:
        if hooks.epoch_batches is not None:
            return hooks.epoch_batches(epoch_index)
        assert lengths is not None
        order = epoch_batches(lengths, cfg.batch_size, rng, cfg.bucket_by_length)
        return (collate(train, rows, data.item_table, buckets) for rows in order)

    while step < total_steps and not stop:
        epoch_rng = None if streamed else copy.deepcopy(rng.bit_generator.state)
        for index, batch in enumerate(batches_of(epoch)):
            if index < skip:
                continue
            if step >= total_steps or index >= steps_per_epoch:
                break
            if hooks.before_step is not None:
                hooks.before_step(step)
            tick = time.perf_counter()
            if device.type != "cpu":
                batch = batch.to(device)
            loss = multitask_loss(trained(batch), batch.labels, label_weights,
                                  batch.user_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if scheduled:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, step, total_steps,
                                                     cfg.warmup_steps)
            optimizer.step()
            if averaged is not None:
                averaged.update(step)
            train_seconds += time.perf_counter() - tick
            step += 1
            seen += len(batch)
            if progress is not None:
                progress.update(step=step, loss=loss.item())
            if step % eval_every == 0 or step == total_steps:
                val_metrics, _ = evaluate(scored, val, data.item_table, label_weights.cpu(),
                                          cfg.eval_batch_size, cfg.utility)
                trained.train()
                history.append({"step": step, "train_loss": loss.item(),
                                **{f"val_{k}": v for k, v in val_metrics.items()}})
                score = _stopping_score(val_metrics, cfg.early_stopping)
                if score < best_score - 1e-6:
                    best_score, best_step, bad_evals = score, step, 0
                    best_state = copy.deepcopy(scored.state_dict())
                else:
                    bad_evals += 1
                    if bad_evals >= cfg.patience:
                        stop = True
                if hooks.on_eval is not None:
                    hooks.on_eval(LoopState(
                        model=model.state_dict(), optimizer=optimizer.state_dict(),
                        step=step, epoch=epoch, batch_in_epoch=index + 1,
                        best_score=best_score, best_step=best_step, best_state=best_state,
                        bad_evals=bad_evals, history=history, seen=seen,
                        train_seconds=train_seconds, torch_rng=torch.get_rng_state(),
                        mask_rng=(None if model.encoder.mask_generator is None
                                  else model.encoder.mask_generator.get_state()),
                        epoch_rng=epoch_rng, stopped=stop,
                        ema_state=None if averaged is None else averaged.model.state_dict()),
                        val_metrics)
                if stop:
                    break
        epoch, skip = epoch + 1, 0
    if progress is not None:
        progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    elif averaged is not None:
        model.load_state_dict(averaged.model.state_dict())
    model = model.cpu().eval()
    label_weights = label_weights.cpu()
    val_metrics, _ = evaluate(model, val, data.item_table, label_weights, cfg.eval_batch_size,
                              cfg.utility)
    if cfg.refit_on_val:
        return _refit_on_val(cfg, data, TrainResult(
            model=model, config=cfg, val_metrics=val_metrics, test_metrics={},
            history=history, steps=step, best_step=best_step or step,
            train_seconds=train_seconds,
            examples_per_s=seen / train_seconds if train_seconds else 0.0,
            n_parameters=sum(p.numel() for p in model.parameters())))
    test_metrics, test_hits = ({}, {}) if test is None else evaluate(
        model, test, data.item_table, label_weights, cfg.eval_batch_size, cfg.utility)
    return TrainResult(
        model=model, config=cfg, val_metrics=val_metrics, test_metrics=test_metrics,
        history=history, steps=step, best_step=best_step, train_seconds=train_seconds,
        examples_per_s=seen / train_seconds if train_seconds else 0.0,
        n_parameters=sum(p.numel() for p in model.parameters()), test_hits=test_hits,
    )


def _refit_on_val(cfg: TrainConfig, data: TrainData, fitted: TrainResult) -> TrainResult:
    """``TrainConfig.refit_on_val``: a fresh run on train + val for the scaled best step."""
    rows = ExampleArrays.concat([data.train, data.val])
    refit_steps = max(1, round(fitted.best_step * len(rows) / len(data.train)))
    refit_cfg = dataclasses.replace(
        cfg, refit_on_val=False, max_steps=refit_steps, max_epochs=refit_steps,
        eval_every_steps=refit_steps, patience=1)
    items = data.refit_item_table if cfg.refit_item_vectors else None
    refit = train_model(refit_cfg, dataclasses.replace(
        data, train=rows, item_table=data.item_table if items is None else items))
    return dataclasses.replace(
        refit, config=cfg, val_metrics=fitted.val_metrics,
        history=fitted.history + [{"step": fitted.steps + h["step"], "refit": 1.0,
                                   **{k: v for k, v in h.items() if k != "step"}}
                                  for h in refit.history],
        steps=fitted.steps, best_step=fitted.best_step,
        train_seconds=fitted.train_seconds + refit.train_seconds,
        examples_per_s=fitted.examples_per_s, refit_steps=refit.steps, item_table=items)


def _stopping_score(metrics: dict[str, float], criterion: str) -> float:
    """Lower is better: the validation loss, or minus the mean AUC over heads."""
    if criterion == "loss":
        return metrics["loss"]
    aucs = [v for k, v in metrics.items() if k.startswith("auc_") and np.isfinite(v)]
    return -float(np.mean(aucs)) if aucs else metrics["loss"]


class _Progress:
    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}"
                                  "/{task.total} steps"), TextColumn("loss {task.fields[loss]}"),
                                  TimeRemainingColumn(), transient=True)
        self._progress.start()
        self._task = self._progress.add_task("train", total=total, loss="-")

    def update(self, step: int, loss: float) -> None:
        self._progress.update(self._task, completed=step, loss=f"{loss:.4f}")

    def close(self) -> None:
        self._progress.stop()


def _progress(enabled: bool, total: int) -> _Progress | None:
    return _Progress(total) if enabled else None
