"""The serving engine is exact: within 1e-5 of the plain eval-mode model, every path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from world import N_ITEMS, T0_MS

from serving.engine import (
    EngineConfig,
    PackedLayout,
    RankingEngine,
    RequestInputs,
    reference_scores,
)
from serving.model_source import load_served_model
from transact.model.config import EncoderConfig, RankerConfig
from transact.model.features import read_examples
from transact.model.ranker import Pinnability
from transact.schema import HOUR_MS, SEQ_LEN, USER_EMB_DIM

TOL = 1e-5
REQUEST_MS = T0_MS + 5000 * HOUR_MS


def random_request(rng: np.random.Generator, n_seq: int, n_cand: int,
                   future: bool = False) -> RequestInputs:
    items = np.zeros(SEQ_LEN, np.int64)
    actions = np.zeros(SEQ_LEN, np.int64)
    stamps = np.zeros(SEQ_LEN, np.int64)
    items[:n_seq] = rng.integers(1, N_ITEMS + 1, n_seq)
    actions[:n_seq] = rng.integers(1, 5, n_seq)  # skip too: never usable... but counted
    stamps[:n_seq] = REQUEST_MS - np.sort(rng.integers(1, 10**8, n_seq))
    if future and n_seq:
        stamps[0] = REQUEST_MS + 5_000  # after the request: must stay invisible
    impressions = rng.integers(0, 5000, (n_cand + 1, 1))
    counts = np.concatenate([impressions, (impressions * rng.random((n_cand + 1, 3)) * 0.3)
                             .astype(np.int64)], axis=1)  # engagement counters
    return RequestInputs(items, actions, stamps, REQUEST_MS,
                         rng.normal(size=USER_EMB_DIM).astype(np.float32),
                         rng.choice(np.arange(1, N_ITEMS + 50), n_cand, replace=False), 1,
                         item_counts=counts[:n_cand], user_counts=counts[n_cand])


def model_of(seed: int = 0, **encoder: object) -> tuple[Pinnability, np.ndarray]:
    torch.manual_seed(seed)
    ranker = {k: encoder.pop(k) for k in list(encoder) if k in RankerConfig.__dataclass_fields__}
    model = Pinnability(RankerConfig(encoder=EncoderConfig(**encoder), **ranker)).eval()
    if model.encoder.pool_proj is not None:  # not the identity it starts at
        torch.nn.init.normal_(model.encoder.pool_proj.weight)
    table = np.random.default_rng(seed).normal(size=(N_ITEMS + 1, 32)).astype(np.float32)
    table[0] = 0
    return model, table


def assert_exact(engine: RankingEngine, model: Pinnability, table: np.ndarray,
                 req: RequestInputs) -> None:
    got = engine.score(req)
    want = reference_scores(model, req, table)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("bucketed", [False, True])
@pytest.mark.parametrize("n_seq", [0, 1, 2, 9, 10, 11, 57, 100])
def test_engine_matches_plain_model_random_inputs(bucketed: bool, n_seq: int) -> None:
    model, table = model_of()
    engine = RankingEngine(model, table, EngineConfig(chunk_size=48, bucketed=bucketed))
    rng = np.random.default_rng(n_seq)
    for n_cand in (1, 7, 130):
        assert_exact(engine, model, table, random_request(rng, n_seq, n_cand, future=True))


def test_parallel_chunk_workers_are_exact() -> None:
    model, table = model_of(3)
    engine = RankingEngine(model, table, EngineConfig(chunk_size=16, workers=2))
    rng = np.random.default_rng(3)
    for n_seq in (0, 12, 100):
        assert_exact(engine, model, table, random_request(rng, n_seq, 101))


@pytest.mark.parametrize("variant", [
    {"num_heads": 2, "candidate_similarity": False},
    {"num_heads": 4, "actions": "positive", "seq_len": 20, "candidate_similarity": False},
    {"first_k": 0},
    {"max_pool": False, "first_k": 3, "num_layers": 3, "ffn_dim": 64},
    {"num_layers": 1},
    {"input_norm": "block", "use_batch_user_emb": False, "use_sequence_stats": False},
    {"n_cross_layers": 2, "input_norm": "none"},
    {"candidate_similarity": True},
    {"candidate_similarity": True, "num_heads": 4, "num_layers": 1, "action_emb_dim": 31},
    {"similarity_pool": True},
    {"similarity_pool": True, "similarity_pool_learned": True},
    {"similarity_pool": True, "similarity_recent_ms": 36_000_000, "num_heads": 4,
     "action_emb_dim": 31, "candidate_similarity": True},
    {"similarity_pool": True, "use_engagement_counters": True},
    {"similarity_pool": True, "similarity_pool_thresholds": (0.5, 0.8)},
    {"use_engagement_counters": True, "input_norm": "block", "first_k": 0},
])
def test_engine_is_exact_across_configurations(variant: dict) -> None:
    model, table = model_of(1, **dict(variant))
    rng = np.random.default_rng(1)
    for bucketed in (False, True):
        engine = RankingEngine(model, table, EngineConfig(chunk_size=32, bucketed=bucketed))
        assert engine.rewrite
        for n_seq in (0, 4, 33, 100):
            assert_exact(engine, model, table, random_request(rng, n_seq, 70))


@pytest.mark.parametrize("variant", [
    {"kind": "avg"}, {"kind": "none"}, {"fusion": "append"}, {"positional": "learned"},
    {"kind": "lstm"}, {"kind": "avg", "similarity_pool": True},
    {"kind": "none", "use_engagement_counters": True},
])
def test_baseline_encoders_fall_back_to_the_model(variant: dict) -> None:
    model, table = model_of(2, **dict(variant))
    engine = RankingEngine(model, table)
    assert engine.rewrite is False
    rng = np.random.default_rng(2)
    for n_seq in (0, 5, 100):
        assert_exact(engine, model, table, random_request(rng, n_seq, 20))


def test_trained_model_on_real_examples_is_exact(trained_artifacts: tuple[Path, Path],
                                                 serving_examples: Path) -> None:
    """Trained weights, the examples' own sequences (padded, short, empty, with actions after
    the request) and the item vectors the model was trained with."""
    served = load_served_model(str(trained_artifacts[0]), engine_cfg=EngineConfig(chunk_size=64))
    test = read_examples(serving_examples / "test")
    seen = set()
    for row in np.unique(test.request_id, return_index=True)[1][:40]:
        req = RequestInputs(test.seq_item_ids[row], test.seq_action_types[row],
                            test.seq_timestamps_ms[row], int(test.request_time_ms[row]),
                            test.user_batch_emb[row],
                            np.arange(1, 201), int(test.surface_id[row]))
        seen.add(int((test.seq_action_types[row] > 0).sum()))
        got = served.engine.score(req)
        want = reference_scores(served.artifact.model, req, served.item_table)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
        shared = reference_scores(served.artifact.model, req, served.item_table,
                                  shared_sequence=True)
        np.testing.assert_allclose(shared, want, atol=TOL, rtol=0)
    assert {0, 1, 100} <= seen


def test_engagement_counters_reach_the_scores() -> None:
    """A counters model scores the request's counters (zeros when the request carries none:
    an item nobody has seen yet), on the rewrite and on the fallback path alike."""
    rng = np.random.default_rng(5)
    for variant in ({"similarity_pool": True}, {"kind": "avg"}):
        model, table = model_of(5, use_engagement_counters=True, **variant)
        engine = RankingEngine(model, table)
        req = random_request(rng, 30, 40)
        blank = RequestInputs(req.seq_item_ids, req.seq_action_types, req.seq_timestamps_ms,
                              req.request_time_ms, req.user_emb, req.candidate_item_ids, 1)
        assert_exact(engine, model, table, blank)
        assert np.abs(engine.score(req) - engine.score(blank)).max() > 1e-3


def test_packed_layout_is_one_aligned_buffer() -> None:
    layout = PackedLayout(length=37, n_candidates=5, item_dim=32, user_dim=32, n_numeric=6)
    buffer = torch.zeros(layout.nbytes, dtype=torch.uint8)
    views = layout.views(buffer)
    views["cand_item_emb"][:] = 1.5
    views["cand_bucket"][:] = 7
    assert all(offset % 64 == 0 for offset, _, _ in layout.offsets.values())
    assert views["cand_item_emb"].data_ptr() - buffer.data_ptr() == layout.offsets[
        "cand_item_emb"][0]
    assert float(views["cand_item_emb"].sum()) == 1.5 * 5 * 32
    assert int(views["cand_bucket"].sum()) == 35


def test_empty_candidate_list_scores_nothing() -> None:
    model, table = model_of()
    engine = RankingEngine(model, table)
    req = random_request(np.random.default_rng(0), 10, 1)
    req.candidate_item_ids = np.zeros(0, np.int64)
    assert engine.score(req).shape == (0, 3)


@pytest.mark.parametrize("bucketed", [False, True])
def test_similarity_channel_is_exact_when_it_dominates(bucketed: bool) -> None:
    """A strong cos(item, candidate) column in the first in-projection: the rewrite's extra
    logit, value and residual terms must match the plain model (and they matter)."""
    model, table = model_of(4, candidate_similarity=True, num_heads=2, action_emb_dim=31)
    first = model.encoder.layers[0]
    with torch.no_grad():
        first.in_proj.weight[:, -1] = torch.randn(first.in_proj.weight.shape[0]) * 3.0
    engine = RankingEngine(model, table, EngineConfig(chunk_size=32, bucketed=bucketed))
    assert engine.rewrite
    rng = np.random.default_rng(4)
    requests = [random_request(rng, n_seq, 50) for n_seq in (1, 7, 64, 100)]
    with_channel = [engine.score(req) for req in requests]
    for req in requests:
        assert_exact(engine, model, table, req)
    with torch.no_grad():
        first.in_proj.weight[:, -1] = 0.0
    without = [RankingEngine(model, table).score(req) for req in requests]
    assert max(float(np.abs(a - b).max()) for a, b in zip(with_channel, without,
                                                          strict=True)) > 1e-3
