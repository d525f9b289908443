"""Training loop: it learns the controlled truth, repeats exactly when seeded, and fails clearly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from training.train import TrainConfig, load_training_data, train_model
from transact.errors import UserError
from transact.model.config import EncoderConfig, ModelConfig, RankerConfig
from transact.model.features import make_batch
from transact.schema import HOUR_MS, ActionType

REQUEST_MS = 1_767_225_600_000 + 10_000 * HOUR_MS


def items_of_topic(topic: int) -> list[int]:
    """Items of a topic in the controlled world of conftest.py (item % 4, items 1..40)."""
    return [i for i in range(1, 41) if i % 4 == topic]


def small_config(**train_kwargs) -> TrainConfig:
    ranker = RankerConfig(encoder=EncoderConfig(), item_id_buckets=64, mlp_dims=[64, 32],
                          item_representation="content")
    settings = {"batch_size": 128, "lr": 3e-3, "eval_every_steps": 40, "patience": 3,
                **train_kwargs}
    return TrainConfig(model=ModelConfig(ranker=ranker), **settings)


def probe_save_scores(model, item_table: np.ndarray, newest: ActionType | None) -> np.ndarray:
    """p_save of every item as candidate after 3 old clicks on other topics, with an optional
    newest action (``newest``) on another item of the candidate's topic."""
    cands, seq_items, actions = [], [], []
    for topic in range(4):
        others = [t for t in range(4) if t != topic]
        for cand in items_of_topic(topic):
            same = [i for i in items_of_topic(topic) if i != cand][0]
            clicks = [items_of_topic(t)[0] for t in others]
            row_items = ([same] if newest else []) + clicks
            row_actions = ([int(newest)] if newest else []) + [int(ActionType.CLICK)] * 3
            cands.append(cand)
            seq_items.append(row_items + [0] * (100 - len(row_items)))
            actions.append(row_actions + [0] * (100 - len(row_actions)))
    n = len(cands)
    actions_arr = np.array(actions)
    ages = (30 + np.arange(100)) * HOUR_MS
    ts = np.where(actions_arr > 0, REQUEST_MS - ages[None, :], 0)
    batch = make_batch(
        item_table=item_table, item_id=np.array(cands), request_time_ms=np.full(n, REQUEST_MS),
        surface_id=np.ones(n), seq_item_ids=np.array(seq_items), seq_action_types=actions_arr,
        seq_timestamps_ms=ts, user_batch_emb=np.zeros((n, 32), np.float32),
        item_id_buckets=model.cfg.item_id_buckets,
        item_counts=np.tile([40, 8, 4, 1], (n, 1)), user_counts=np.tile([40, 8, 4, 1], (n, 1)))
    return model.predict(batch)[:, 1].numpy()


@pytest.mark.slow
def test_a_save_and_a_hide_of_the_same_topic_move_the_save_score_apart(
        controlled_examples: Path) -> None:
    data = load_training_data(controlled_examples)
    result = train_model(small_config(max_epochs=4), data)
    base = probe_save_scores(result.model, data.item_table, None).mean()
    after_save = probe_save_scores(result.model, data.item_table, ActionType.SAVE).mean()
    after_hide = probe_save_scores(result.model, data.item_table, ActionType.HIDE).mean()
    assert after_save > base + 0.1, (after_save, base)
    assert after_hide < base - 0.02, (after_hide, base)
    # and it ranks: the save head finds saves far better than chance on held-out requests
    assert result.test_metrics["auc_save"] > 0.6
    assert result.test_metrics["hit3_hide"] < result.test_metrics["hit3_save"]


@pytest.mark.slow
def test_seeded_runs_repeat_exactly(controlled_examples: Path) -> None:
    data = load_training_data(controlled_examples)
    runs = [train_model(small_config(max_steps=6, eval_every_steps=3, seed=seed), data)
            for seed in (5, 5, 6)]
    first, again, other = (r.model.state_dict() for r in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert runs[0].test_metrics == runs[1].test_metrics
    assert runs[0].history == runs[1].history
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_training_inputs_are_checked(tmp_path: Path, controlled_examples: Path) -> None:
    with pytest.raises(UserError, match="no train/ split"):
        load_training_data(tmp_path)
    data = load_training_data(controlled_examples)
    with pytest.raises(UserError, match="lr must be > 0"):
        train_model(small_config(lr=0.0), data)


def test_item_representations_are_read_or_explained(controlled_examples, tmp_path) -> None:
    import shutil

    data = load_training_data(controlled_examples)
    assert data.item_representation == "content"
    with pytest.raises(UserError, match="PinnerFormer"):
        data.with_items("pinnerformer")
    # the batch job's item vectors next to the examples: 'pinnerformer' and both side by side
    copy = tmp_path / "examples"
    shutil.copytree(controlled_examples, copy)
    ids = np.arange(1, 41)
    vectors = np.random.default_rng(0).normal(size=(40, 32)).astype(np.float32)
    pq.write_table(pa.table({"item_id": ids, "item_emb": pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.ravel()), 32)}), copy / "pinnerformer_items.parquet")
    data = load_training_data(copy)
    batch_items = data.with_items("pinnerformer")
    np.testing.assert_array_equal(batch_items.item_table[ids], vectors)
    both = data.with_items("content+pinnerformer").item_table
    assert both.shape[1] == 64
    np.testing.assert_array_equal(both[ids, 32:], vectors)
    np.testing.assert_array_equal(both[ids, :32], data.item_table[ids])
    cfg = small_config(max_steps=1)  # a 32-d model cannot take 64-d item vectors
    cfg.model.ranker.item_representation = "content+pinnerformer"
    with pytest.raises(UserError, match="item_emb_dim"):
        train_model(cfg, data.with_items("content+pinnerformer"))


@pytest.mark.parametrize("swa_start_step", [None, 2])
def test_weight_averaging_keeps_the_average_of_the_trained_weights(
        controlled_examples: Path, swa_start_step: int | None) -> None:
    """With ``ema_decay`` the validated and returned weights are the moving average of every
    step's weights, not the last step's: averaging the live weights of each step by hand
    gives the returned model. With ``swa_start_step`` the average turns uniform from that
    step on (the average at the step and every later step's weights count alike)."""
    from training import train as train_module

    data = load_training_data(controlled_examples)
    decay, steps = 0.5, 5
    snapshots: list[dict[str, torch.Tensor]] = []  # start, then after each step

    class Spy(train_module._WeightAverage):
        def __init__(self, model, decay_, uniform_from):
            self.live = model
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
            super().__init__(model, decay_, uniform_from)

        def update(self, step: int) -> None:
            snapshots.append({k: v.clone() for k, v in self.live.state_dict().items()})
            super().update(step)

    original = train_module._WeightAverage
    train_module._WeightAverage = Spy
    try:
        result = train_model(small_config(max_steps=steps, eval_every_steps=steps,
                                          ema_decay=decay, swa_start_step=swa_start_step),
                             data)
    finally:
        train_module._WeightAverage = original
    assert len(snapshots) == steps + 1
    expected = {k: v.clone() for k, v in snapshots[0].items()}
    for step, weights in enumerate(snapshots[1:]):
        w = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
        if swa_start_step is not None and step >= swa_start_step:
            w = 1.0 / (step - swa_start_step + 2.0)
        for k, v in weights.items():
            expected[k] = expected[k] + w * (v - expected[k]) if v.is_floating_point() else v
    if swa_start_step is not None:  # the uniform part by its definition, for one tensor
        name = next(k for k, v in expected.items() if v.is_floating_point())
        ema_at_start = snapshots[0][name].clone()
        for step, weights in enumerate(snapshots[1:swa_start_step + 1]):
            w = 1.0 - min(decay, (1.0 + step) / (10.0 + step))
            ema_at_start = ema_at_start + w * (weights[name] - ema_at_start)
        later = [weights[name] for weights in snapshots[swa_start_step + 1:]]
        uniform = torch.stack([ema_at_start, *later]).mean(dim=0)
        assert torch.allclose(expected[name], uniform, atol=1e-6)
    kept = result.model.state_dict()
    bad = [k for k in kept if not torch.allclose(kept[k].float(), expected[k].float(),
                                                 atol=1e-6)]
    assert not bad, bad
    last = snapshots[-1]
    assert not all(torch.equal(kept[k], last[k]) for k in kept if kept[k].is_floating_point())
    with pytest.raises(Exception, match="ema_decay"):
        train_model(small_config(ema_decay=1.0), data)
    with pytest.raises(Exception, match="swa_start_step"):
        train_model(small_config(swa_start_step=3), data)


def test_the_learning_rate_follows_the_schedule(controlled_examples: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate of every Adam step: a linear warm-up, then a decay towards 0 over the planned
    steps; ``constant`` keeps ``lr``; an unknown schedule is refused."""
    data = load_training_data(controlled_examples)
    used: list[float] = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    train_model(small_config(max_steps=6, eval_every_steps=6, lr=0.01, lr_schedule="linear",
                             warmup_steps=2), data)
    assert np.allclose(used, [0.005, 0.01, 0.01, 0.0075, 0.005, 0.0025])
    used.clear()
    train_model(small_config(max_steps=5, eval_every_steps=5, lr=0.01, lr_schedule="cosine"),
                data)
    assert np.allclose(used, [0.005 * (1 + np.cos(np.pi * k / 5)) for k in range(5)])
    used.clear()
    train_model(small_config(max_steps=3, eval_every_steps=3, lr=0.01), data)
    assert used == [0.01] * 3
    with pytest.raises(Exception, match="lr_schedule"):
        train_model(small_config(lr_schedule="step"), data)


def test_the_test_split_is_scored_whole_unless_capped(controlled_examples: Path) -> None:
    """Validation uses the ``max_eval_requests`` subset; the final test metrics count every
    test request by default (``max_test_requests=None``), or the capped subset when set."""
    data = load_training_data(controlled_examples)
    n_requests = len(np.unique(data.test.request_id))
    assert n_requests > 4
    whole = train_model(small_config(max_steps=2, eval_every_steps=2, max_eval_requests=3),
                        data).test_metrics
    capped = train_model(small_config(max_steps=2, eval_every_steps=2, max_eval_requests=3,
                                      max_test_requests=3), data).test_metrics
    counted = [k for k in whole if k.startswith("requests_")]
    assert counted and all(capped[k] <= 3 for k in counted)
    assert max(whole[k] for k in counted) > 3
    with pytest.raises(Exception, match="max_test_requests"):
        train_model(small_config(max_test_requests=0), data)


def test_refit_on_val_trains_again_on_train_and_validation(controlled_examples: Path) -> None:
    """``refit_on_val``: the returned model is a second run over train + val for the
    early-stopped run's best step scaled by the added rows; it fits the validation rows
    better than the early-stopped model, whose validation metrics are the ones reported."""
    from training.train import TrainHooks, evaluate

    data = load_training_data(controlled_examples)
    settings = {"max_steps": 30, "eval_every_steps": 10, "seed": 3, "patience": 5}
    plain = train_model(small_config(**settings), data)
    refit = train_model(small_config(refit_on_val=True, **settings), data)
    assert refit.val_metrics == plain.val_metrics
    assert refit.best_step == plain.best_step
    added = (len(data.train) + len(data.val)) / len(data.train)
    assert refit.refit_steps == max(1, round(plain.best_step * added)) > plain.best_step
    assert refit.summary()["refit_steps"] == refit.refit_steps
    weights = torch.tensor(plain.config.model.loss.matrix())
    val_loss = [evaluate(r.model, data.val, data.item_table, weights, 512)[0]["loss"]
                for r in (plain, refit)]
    assert val_loss[1] < val_loss[0]
    assert refit.test_metrics and refit.test_metrics != plain.test_metrics
    assert refit.item_table is None  # no refit-window vectors: the data's own
    # with the refit window's item vectors (opt-in) the refit trains and is tested on those
    rng = np.random.default_rng(0)
    items = (data.item_table + rng.normal(0, 0.3, data.item_table.shape)).astype(np.float32)
    with_items = dataclasses.replace(data, refit_item_table=items)
    kept = train_model(small_config(refit_on_val=True, **settings), with_items)
    assert kept.item_table is None and kept.test_metrics == refit.test_metrics
    moved = train_model(small_config(refit_on_val=True, refit_item_vectors=True, **settings),
                        with_items)
    assert moved.item_table is items and moved.val_metrics == plain.val_metrics
    # scored in the trainer's batches (other batch shapes move float32 sums by ~1e-7)
    tested = evaluate(moved.model, data.test, items, weights,
                      moved.config.eval_batch_size)[0]
    assert tested["auc_save"] == pytest.approx(moved.test_metrics["auc_save"], abs=1e-5)
    assert moved.test_metrics["auc_save"] != refit.test_metrics["auc_save"]
    with pytest.raises(Exception, match="refit_on_val"):
        train_model(small_config(refit_on_val=True, **settings), data,
                    TrainHooks(epoch_batches=lambda epoch: iter(()), steps_per_epoch=1))
