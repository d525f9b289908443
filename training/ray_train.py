"""Training on Ray Train: the plain loop (:func:`training.train.train_model`) inside each worker.

``fit_on_ray(cfg, data, storage_dir)`` runs a :class:`ray.train.torch.TorchTrainer` with
``cfg.ray.num_workers`` workers (DDP; gloo on CPU, NCCL with ``use_gpu``). Each worker:

* streams **its own shard** of the training split (:class:`ShardStream`): the split's Parquet
  files are read as record-batch chunks of ``chunk_rows`` rows, chunk ``c`` belongs to worker
  ``c % num_workers``, chunks are gathered into a shuffle buffer of about
  ``shuffle_buffer_rows`` rows that is bucketed by sequence length and cut into batches — so
  no process ever holds the whole training set (only one buffer of it);
* takes exactly ``steps_per_epoch`` steps per epoch (the smallest shard's count, computed from
  the label columns alone), so DDP's collective calls stay in step;
* validates on the same validation requests as every other worker (identical weights give
  identical early-stopping decisions) and, on rank 0, writes a checkpoint of the whole loop
  state (:class:`training.train.LoopState`) with its metrics at every evaluation;
* resumes from the latest checkpoint when Ray restarts a failed worker group
  (``FailureConfig(max_failures)``): same weights, optimizer, step, RNG states and position
  in the epoch, so the resumed run ends where an uninterrupted one would.

The driver reads the final checkpoint (the best weights) and computes validation / test
metrics itself. A GPU cluster is configuration: ``ray.use_gpu: true``, ``ray.num_workers``,
``ray.address`` (see ``bench/gpu_train.py``).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from training.train import (
    LoopState,
    TrainConfig,
    TrainData,
    TrainHooks,
    TrainResult,
    epoch_batches,
    evaluate,
    load_training_data,
    sequence_lengths,
    train_model,
)
from transact.config import config_from_dict, config_to_dict
from transact.errors import UserError
from transact.model.features import ExampleArrays, RankingBatch, collate, examples_from_table
from transact.model.loss import user_weights
from transact.model.ranker import Pinnability
from transact.schema import HEADS

if TYPE_CHECKING:
    from training.retrain import RetrainConfig

STATE_FILE = "loop_state.pt"
FINAL_FILE = "final_model.pt"
LABEL_COLUMNS = [f"label_{h}" for h in HEADS]


class ShardStream:
    """One worker's streamed share of a training split (see the module docstring)."""

    def __init__(self, split_dir: Path, rank: int, world: int, cfg: TrainConfig,
                 item_table: np.ndarray, buffer_rows: int = 32_768, chunk_rows: int = 4096,
                 shuffle_labels: bool = False) -> None:
        self.parts = sorted(Path(split_dir).glob("part-*.parquet"))
        if not self.parts:
            raise UserError(f"{split_dir} holds no part-*.parquet files")
        self.rank, self.world, self.cfg = rank, world, cfg
        self.item_table = item_table
        self.buffer_rows, self.chunk_rows = buffer_rows, chunk_rows
        self.shuffle_labels = shuffle_labels

    def _chunks(self, columns: list[str] | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        index = 0
        for part in self.parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=self.chunk_rows,
                                                           columns=columns):
                yield index, batch
                index += 1

    def _keep(self, chunk_index: int, labels: np.ndarray) -> np.ndarray:
        """Seeded negative down-sampling of one chunk (the same decision in every epoch)."""
        if self.cfg.negative_keep_rate >= 1.0:
            return np.ones(len(labels), bool)
        rng = np.random.default_rng([self.cfg.seed, chunk_index])
        return (labels.max(axis=1) > 0) | (rng.random(len(labels)) < self.cfg.negative_keep_rate)

    def steps_per_epoch(self) -> int:
        """Full batches of the smallest shard (every worker takes this many steps)."""
        kept = np.zeros(self.world, np.int64)
        for index, batch in self._chunks(LABEL_COLUMNS):
            labels = np.stack([batch.column(c).to_numpy(zero_copy_only=False)
                               for c in LABEL_COLUMNS], axis=1)
            kept[index % self.world] += int(self._keep(index, labels).sum())
        steps = int(kept.min()) // self.cfg.batch_size
        if steps < 1:
            raise UserError(f"a worker's shard holds fewer than one batch "
                            f"({int(kept.min())} rows < {self.cfg.batch_size}): use fewer "
                            f"workers or a smaller batch")
        return steps

    def _buffers(self) -> Iterator[ExampleArrays]:
        pending: list[pa.RecordBatch] = []
        rows = 0
        for index, batch in self._chunks():
            if index % self.world != self.rank:
                continue
            examples = examples_from_table(pa.Table.from_batches([batch]))
            examples = examples.take(np.flatnonzero(self._keep(index, examples.labels)))
            if self.shuffle_labels:
                perm = np.random.default_rng([self.cfg.seed, index, 7]).permutation(
                    len(examples))
                examples = dataclasses.replace(examples, labels=examples.labels[perm])
            pending.append(examples)  # type: ignore[arg-type]
            rows += len(examples)
            if rows >= self.buffer_rows:
                yield ExampleArrays.concat(pending)  # type: ignore[arg-type]
                pending, rows = [], 0
        if pending:
            yield ExampleArrays.concat(pending)  # type: ignore[arg-type]

    def epoch(self, epoch: int) -> Iterator[RankingBatch]:
        """The batches of one epoch: deterministic in ``(seed, epoch, rank)``."""
        buckets = self.cfg.model.ranker.item_id_buckets
        for buffer_index, buffer in enumerate(self._buffers()):
            buffer = dataclasses.replace(buffer, user_weight=user_weights(
                buffer.user_id, self.cfg.model.loss.user_weighting))
            rng = np.random.default_rng([self.cfg.seed, epoch, self.rank, buffer_index])
            for rows in epoch_batches(sequence_lengths(buffer), self.cfg.batch_size, rng,
                                      self.cfg.bucket_by_length):
                if len(rows) == self.cfg.batch_size:  # full batches only: equal DDP steps
                    yield collate(buffer, rows, self.item_table, buckets)


def _state_to_dict(state: LoopState) -> dict[str, Any]:
    return dataclasses.asdict(state)


def _train_worker(loop_config: dict[str, Any]) -> None:
    """Body of every Ray Train worker."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    cfg = config_from_dict(TrainConfig, loop_config["train"])
    data = load_training_data(loop_config["examples_dir"],
                              cfg.model.ranker.item_representation,
                              with_train=False, with_test=False)
    stream = ShardStream(Path(loop_config["examples_dir"]) / "train", rank, world, cfg,
                         data.item_table, loop_config["buffer_rows"],
                         shuffle_labels=loop_config["shuffle_labels"])
    restore = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            restore = LoopState(**torch.load(Path(ckpt_dir) / STATE_FILE, weights_only=False))

    def on_eval(state: LoopState, metrics: dict[str, float]) -> None:
        report = {"step": state.step, **{f"val_{k}": float(v) for k, v in metrics.items()}}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(_state_to_dict(state), Path(tmp) / STATE_FILE)
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(report)

    fail_at = loop_config.get("fail_at_step")
    marker = loop_config.get("fail_marker")

    def before_step(step: int) -> None:
        if fail_at is not None and step == fail_at and marker and not Path(marker).exists():
            Path(marker).write_text(f"failed at step {step}\n")
            raise RuntimeError(f"injected failure at step {step} (test hook)")

    hooks = TrainHooks(epoch_batches=stream.epoch, steps_per_epoch=stream.steps_per_epoch(),
                       wrap_model=(ray.train.torch.prepare_model
                                   if world > 1 or loop_config["use_gpu"] else None),
                       on_eval=on_eval, restore=restore, before_step=before_step)
    result = train_model(cfg, data, hooks)
    final = {"step": result.steps, "final": 1.0}
    if rank == 0:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"model": result.model.state_dict(), "history": result.history,
                        "steps": result.steps, "best_step": result.best_step,
                        "train_seconds": result.train_seconds,
                        "examples_per_s": result.examples_per_s}, Path(tmp) / FINAL_FILE)
            ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(final)


def fit_on_ray(cfg: RetrainConfig, data: TrainData, storage_dir: Path,
               fail_at_step: int | None = None) -> TrainResult:
    """Train with Ray Train; returns a :class:`TrainResult` like :func:`train_model`.

    ``data`` needs only val / test / the item table (the workers stream train themselves).
    ``fail_at_step``: test hook, one injected worker failure at that step."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from transact.runtime import start_local_ray

    start_local_ray(address=cfg.ray.address)
    storage_dir = Path(cfg.ray.storage_path or storage_dir).resolve()
    storage_dir.mkdir(parents=True, exist_ok=True)
    loop_config = {
        "train": config_to_dict(cfg.train), "examples_dir": str(Path(cfg.examples_dir).resolve()),
        "buffer_rows": cfg.ray.shuffle_buffer_rows, "shuffle_labels": cfg.shuffle_labels,
        "use_gpu": cfg.ray.use_gpu,
        "fail_at_step": fail_at_step,
        "fail_marker": str(storage_dir / "injected_failure.marker") if fail_at_step else None,
    }
    resources = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        _train_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=f"retrain-{time.strftime('%Y%m%dT%H%M%S')}",
                             storage_path=str(storage_dir),
                             failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as ckpt_dir:
        final = torch.load(Path(ckpt_dir) / FINAL_FILE, weights_only=False)
    model = Pinnability(cfg.train.model.ranker)
    model.load_state_dict(final["model"])
    model.eval()
    label_weights = torch.tensor(cfg.train.model.loss.matrix(), dtype=torch.float32)
    from training.train import subsample_requests

    val = subsample_requests(data.val, cfg.train.max_eval_requests, cfg.train.seed)
    val_metrics, _ = evaluate(model, val, data.item_table, label_weights,
                              cfg.train.eval_batch_size, cfg.train.utility)
    test_metrics, test_hits = ({}, {})
    if data.test is not None:
        test = subsample_requests(data.test, cfg.train.max_test_requests, cfg.train.seed)
        test_metrics, test_hits = evaluate(model, test, data.item_table, label_weights,
                                           cfg.train.eval_batch_size, cfg.train.utility)
    return TrainResult(
        model=model, config=cfg.train, val_metrics=val_metrics, test_metrics=test_metrics,
        history=final["history"], steps=final["steps"], best_step=final["best_step"],
        train_seconds=final["train_seconds"], examples_per_s=final["examples_per_s"],
        n_parameters=sum(p.numel() for p in model.parameters()), test_hits=test_hits)
