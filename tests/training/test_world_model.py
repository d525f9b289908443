"""The behaviour a user of the ranker relies on, on a model trained on a small synthetic world
(not a hand-built fixture): a fresh save of an item raises p_save of a similar candidate, a
fresh hide of it lowers it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.train import TrainConfig, load_training_data, train_model
from transact.data.examples import ExampleConfig, build_examples
from transact.data.synthetic import WorldConfig, generate_world
from transact.data.synthetic_world import SyntheticWorld
from transact.model.features import ExampleArrays, make_batch
from transact.schema import ActionType


def _prepend(seq: np.ndarray, value: int) -> np.ndarray:
    """``(N, S)`` sequences with ``value`` as the newest slot (the oldest slot falls off)."""
    return np.concatenate([np.full((len(seq), 1), value, seq.dtype), seq[:, :-1]], axis=1)


@pytest.mark.slow
def test_a_fresh_save_raises_and_a_hide_lowers_p_save_of_a_similar_candidate(
        tmp_path: Path) -> None:
    world_dir, examples_dir = tmp_path / "world", tmp_path / "examples"
    generate_world(world_dir, WorldConfig(n_users=250, n_items=600, n_topics=8, n_days=7,
                                          seed=11))
    build_examples(world_dir, examples_dir, ExampleConfig(test_days=1, val_days=1))
    # the default item vectors: graph (propagated by the example builder)
    data = load_training_data(examples_dir, "graph")
    # three training seeds, their probabilities averaged: one seed's learned save effect is
    # small and varies with the seed and the machine's arithmetic (seed 0 alone: 55 % of the
    # requests up on one CPU, 72 % on another); the seeds' average is what the test holds to
    models = [train_model(TrainConfig(seed=seed, max_epochs=2, max_eval_requests=300),
                          data).model for seed in range(3)]
    model = models[0]

    params = json.loads((world_dir / "meta.json").read_text())["params"]
    topic = SyntheticWorld(WorldConfig(**params)).item_topic
    # held-out requests to probe: validation and test days (the world's last day is short)
    assert data.val is not None and data.test is not None
    test = ExampleArrays.concat([data.val, data.test])
    rows = np.unique(test.request_id, return_index=True)[1][:400]
    assert len(rows) == 400
    cands = test.item_id[rows]
    # the similar item: another item of the candidate's topic, the nearest by item vector
    table = data.item_table
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-9)
    similar = np.empty(len(rows), np.int64)
    for n, cand in enumerate(cands):
        same = np.flatnonzero((topic == topic[cand]) & (np.arange(len(topic)) != cand))
        same = same[same > 0]
        similar[n] = same[np.argmax(unit[same] @ unit[cand])]
    now = test.request_time_ms[rows]

    def p_save(action: ActionType | None) -> np.ndarray:
        items, actions, stamps = (test.seq_item_ids[rows], test.seq_action_types[rows],
                                  test.seq_timestamps_ms[rows])
        if action is not None:
            items = _prepend(items, 0)
            items[:, 0] = similar
            actions = _prepend(actions, int(action))
            stamps = _prepend(stamps, 0)
            stamps[:, 0] = now - 60_000  # a minute before the request
        batch = make_batch(item_table=table, item_id=cands, request_time_ms=now,
                           surface_id=test.surface_id[rows], seq_item_ids=items,
                           seq_action_types=actions, seq_timestamps_ms=stamps,
                           user_batch_emb=test.user_batch_emb[rows],
                           item_id_buckets=model.cfg.item_id_buckets,
                           item_counts=test.item_counts[rows], user_counts=test.user_counts[rows])
        save = model.cfg.heads.index("save")
        return np.mean([m.predict(batch)[:, save].numpy() for m in models], axis=0)

    base, saved, hidden = p_save(None), p_save(ActionType.SAVE), p_save(ActionType.HIDE)
    up, down = saved - base, hidden - base
    # on average and for most requests, in both directions (measured: 66 % of the requests
    # up, 89 % down; a save acts through several terms of the world, satiation against it)
    assert up.mean() > 0 and (up > 0).mean() > 0.55, (up.mean(), (up > 0).mean())
    assert down.mean() < 0 and (down < 0).mean() > 0.6, (down.mean(), (down < 0).mean())
    assert saved.mean() > hidden.mean() * 1.1
