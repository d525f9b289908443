"""The ranker's engagement-counter features: required when configured, and learned from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transact.errors import UserError
from transact.model.config import EncoderConfig, RankerConfig
from transact.model.features import make_batch
from transact.model.ranker import Pinnability
from transact.schema import HOUR_MS

REQUEST_MS = 1_767_225_600_000
SEQ = 4


def batch_of(item_ids: np.ndarray, item_counts: np.ndarray | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(item_ids)
    table = rng.normal(size=(1000, 32)).astype(np.float32) * 0.1
    return make_batch(
        item_table=table, item_id=item_ids, request_time_ms=np.full(n, REQUEST_MS),
        surface_id=np.zeros(n, np.int64), seq_item_ids=np.ones((n, SEQ), np.int64),
        seq_action_types=np.full((n, SEQ), 2), seq_timestamps_ms=np.full(
            (n, SEQ), REQUEST_MS - HOUR_MS), user_batch_emb=np.zeros((n, 32), np.float32),
        item_id_buckets=64, item_counts=item_counts,
        user_counts=None if item_counts is None else np.zeros((n, 4), np.int32))


def model_with_counters() -> Pinnability:
    torch.manual_seed(0)
    return Pinnability(RankerConfig(encoder=EncoderConfig(kind="none"), item_id_buckets=64,
                                    use_engagement_counters=True, mlp_dims=[16]))


def test_a_model_that_reads_counters_refuses_a_batch_without_them():
    model = model_with_counters()
    with pytest.raises(UserError, match="engagement counters"):
        model(batch_of(np.arange(1, 5), None))
    # -1 (examples built without counters) is "unknown", not a count
    with pytest.raises(UserError, match="engagement counters"):
        model(batch_of(np.arange(1, 5), np.full((4, 4), -1, np.int32)))


def test_an_item_with_a_high_past_save_rate_scores_higher_even_if_never_seen():
    """Saves follow each item's hidden save rate; its past counts are the only clue. After
    training, items the model never saw (other ids) are ordered by their counts."""
    rng = np.random.default_rng(0)
    n_items = 400
    rate = rng.choice([0.05, 0.6], size=n_items)
    shown = rng.integers(20, 200, n_items)
    counts = np.stack([shown, np.zeros(n_items), rng.binomial(shown, rate),
                       np.zeros(n_items)], axis=1).astype(np.int32)
    model = model_with_counters()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_items = np.arange(1, 300)
    for step in range(150):
        idx = rng.choice(train_items, 128)
        batch = batch_of(idx, counts[idx], seed=step)
        labels = torch.from_numpy((rng.random(128) < rate[idx]).astype(np.float32))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch)[:, 1], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    unseen = np.arange(300, 400)
    p_save = model.predict(batch_of(unseen, counts[unseen]))[:, 1].numpy()
    high, low = p_save[rate[unseen] > 0.5], p_save[rate[unseen] < 0.5]
    assert high.min() > low.max()
