"""Ray Train: the plain loop in DDP workers, a streamed shard per worker, checkpoints, resume.

One local Ray cluster on 127.0.0.1 for the module; the controlled examples (10 candidates per
request) carry a save/hide signal the model must learn in every configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from training.ray_train import ShardStream, fit_on_ray
from training.retrain import RayTrainSettings, RetrainConfig
from training.train import TrainConfig, load_training_data

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from transact.runtime import start_local_ray

    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def _config(examples: Path, work: Path, workers: int) -> RetrainConfig:
    # 156 steps in 2 epochs; a validation (and a checkpoint) every 25 of them
    train = TrainConfig(max_epochs=2, eval_every_steps=25, max_eval_requests=None,
                        batch_size=128)
    train.model.ranker.item_representation = "content"
    # the Ray Train mechanics do not depend on the training length: the shorter, cheaper steps
    # keep the suite's time (evaluation still reads all 100 actions)
    train.model.ranker.encoder.train_seq_len = 32
    return RetrainConfig(examples_dir=str(examples), work_dir=str(work), backend="ray",
                         train=train, ray=RayTrainSettings(num_workers=workers,
                                                           shuffle_buffer_rows=4096))


def test_shards_partition_the_training_rows(gate_examples: Path) -> None:
    cfg = _config(gate_examples, Path("unused"), 2).train
    cfg = dataclasses.replace(cfg, negative_keep_rate=1.0)
    table = np.zeros((41, 32), np.float32)
    seen = []
    for rank in range(2):
        stream = ShardStream(gate_examples / "train", rank, 2, cfg, table, 4096, chunk_rows=1000)
        seen.append(np.concatenate([buf.request_id * 100 + buf.item_id
                                    for buf in stream._buffers()]))
    assert not np.intersect1d(seen[0], seen[1]).size
    everything = load_training_data(gate_examples, "content").train
    assert len(seen[0]) + len(seen[1]) == len(everything)


def test_resume_after_a_killed_worker_matches_and_two_workers_learn(
        ray_cluster, gate_examples: Path, tmp_path: Path) -> None:
    data = load_training_data(gate_examples, "content", with_train=False)
    cfg = _config(gate_examples, tmp_path, 1)
    plain = fit_on_ray(cfg, data, tmp_path / "plain")
    resumed = fit_on_ray(cfg, data, tmp_path / "resumed", fail_at_step=40)
    assert (tmp_path / "resumed" / "injected_failure.marker").exists()
    assert resumed.steps == plain.steps
    for key, value in plain.val_metrics.items():
        assert resumed.val_metrics[key] == pytest.approx(value, abs=1e-9), key
    assert plain.val_metrics["auc_save"] > 0.62 and plain.val_metrics["auc_hide"] > 0.7

    two = fit_on_ray(_config(gate_examples, tmp_path, 2), data, tmp_path / "two")
    # 2 workers take half the steps per epoch over twice the rows per step
    assert two.steps <= plain.steps // 2 + 1
    assert two.val_metrics["auc_save"] > plain.val_metrics["auc_save"] - 0.04
    assert two.val_metrics["auc_hide"] > plain.val_metrics["auc_hide"] - 0.04
