"""Online == offline: replaying a dataset through the stream and reading the online sequence
and engagement counters at request time t gives exactly what the example builder computes for
t."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from features.online import FeastReader, RedisDirectReader
from features.processor import ProcessorConfig, open_processor, open_stream
from features.replay import replay_events
from features.store import (
    FeatureProfile,
    apply,
    materialize,
    stage_items,
    stage_user_embeddings,
)
from transact.data.dataset import item_embedding_table, read_events, read_items
from transact.data.examples import ExampleConfig, _DailyEmbeddings, build_examples_from_events
from transact.data.synthetic import generate_world
from transact.data.synthetic_world import WorldConfig
from transact.model import Pinnability, RankerConfig, collate, make_batch
from transact.model.features import examples_from_table
from transact.schema import DAY_MS, USER_EMB_DIM


def _replay_and_compare(profile: FeatureProfile, reader_factory, tmp_path) -> int:
    world = tmp_path / "world"
    generate_world(world, WorldConfig(n_users=30, n_items=300, n_days=6, n_topics=5,
                                         sessions_per_day=2.5, seed=7))
    events = read_events(world)
    examples = build_examples_from_events(
        events, item_embedding_table(read_items(world)), ExampleConfig())
    # checkpoints: request times of users with a history, spread over the world, plus one
    # user whose history is longer than the sequence (the 100 cap)
    lens = examples.column("seq_len").to_numpy()
    times = examples.column("request_time_ms").to_numpy()
    rng = np.random.default_rng(0)
    with_history = np.flatnonzero(lens > 0)
    picks = set(rng.choice(with_history, 14, replace=False).tolist())
    picks.add(int(with_history[np.argmax(lens[with_history])]))
    checkpoints = np.unique(times[sorted(picks)])
    assert lens.max() == 100

    stream = open_stream(profile)
    proc = open_processor(profile, ProcessorConfig(batch_size=1000, block_ms=0))
    reader = reader_factory()
    ev_ts = events.column("timestamp_ms")
    compared, prev = 0, None
    for t in checkpoints.tolist():
        window = pc.less(ev_ts, t) if prev is None else pc.and_(
            pc.greater_equal(ev_ts, prev), pc.less(ev_ts, t))
        replay_events(stream, events.filter(window))
        proc.run()
        prev = t
        rows = examples.filter(pc.equal(examples.column("request_time_ms"), t))
        for row in rows.to_pylist():
            feats = reader.get_ranking_features(row["user_id"], [row["item_id"]])
            assert feats.seq_len == row["seq_len"]
            assert feats.seq_item_ids.tolist() == row["seq_item_ids"]
            assert feats.seq_action_types.tolist() == row["seq_action_types"]
            assert feats.seq_timestamps_ms.tolist() == row["seq_timestamps_ms"]
            assert feats.user_counts.tolist() == row["user_counts"]
            assert feats.item_counts[0].tolist() == row["item_counts"]
            compared += 1
    assert proc.store.stats().get("dead:too late", 0) == 0
    return compared


@pytest.mark.slow
def test_embedded_online_sequence_equals_example_builder(tmp_path):
    profile = FeatureProfile.embedded(tmp_path / "features", project="pit_test")
    apply(profile)
    compared = _replay_and_compare(profile, lambda: FeastReader(profile), tmp_path)
    assert compared >= 15


@pytest.mark.slow
@pytest.mark.services
def test_production_online_sequence_equals_example_builder(tmp_path, production_profile):
    profile = production_profile
    compared = _replay_and_compare(profile, lambda: RedisDirectReader(profile), tmp_path)
    assert compared >= 15


def _online_batch(reader: FeastReader, user_id: int, items: np.ndarray, request_time_ms: int,
                  surface_id: int, buckets: int):
    """A ranking batch of one request built only from what the online store returns, through the
    same :func:`make_batch` the trainer's ``collate`` uses."""
    feats = reader.get_ranking_features(user_id, items)
    n = len(items)
    ids = np.unique(np.concatenate([items, feats.seq_item_ids[: feats.seq_len]]))
    looked_up = reader.get_ranking_features(user_id, ids)
    assert looked_up.item_found.all(), "an item of the request is missing online"
    online_items = np.zeros((int(ids.max()) + 1, looked_up.item_emb.shape[1]), np.float32)
    online_items[ids] = looked_up.item_emb
    return feats, make_batch(
        item_table=online_items,
        item_id=items,
        request_time_ms=np.full(n, request_time_ms, np.int64),
        surface_id=np.full(n, surface_id, np.int64),
        seq_item_ids=np.tile(feats.seq_item_ids, (n, 1)),
        seq_action_types=np.tile(feats.seq_action_types, (n, 1)),
        seq_timestamps_ms=np.tile(feats.seq_timestamps_ms, (n, 1)),
        user_batch_emb=np.tile(feats.user_emb, (n, 1)),
        item_id_buckets=buckets,
        item_counts=feats.item_counts,
        user_counts=np.tile(feats.user_counts, (n, 1)),
    )


@pytest.mark.slow
def test_examples_rows_are_what_the_reader_fields_mean(tmp_path):
    """A request read online and fed through the trainer's batch builder gets the same model
    scores as its offline training rows (sequence, timestamps, batch user embedding and item
    embeddings all agree), and the comparison notices a one-action difference."""
    world = tmp_path / "world"
    generate_world(world, WorldConfig(n_users=20, n_items=200, n_days=5, n_topics=5,
                                      sessions_per_day=2.5, seed=3))
    events = read_events(world)
    item_table = item_embedding_table(read_items(world))
    users = np.unique(events.column("user_id").to_numpy())
    last_day = (int(pc.max(events.column("timestamp_ms")).as_py()) // DAY_MS) * DAY_MS
    rng = np.random.default_rng(0)
    emb_dir = tmp_path / "user_emb" / "date=x"
    emb_dir.mkdir(parents=True)
    stamps = np.repeat([last_day - 2 * DAY_MS, last_day], len(users))
    pq.write_table(pa.table({
        "user_id": pa.array(np.tile(users, 2), pa.int64()),
        "event_timestamp": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
        "user_emb": pa.FixedSizeListArray.from_arrays(pa.array(
            rng.standard_normal(2 * len(users) * USER_EMB_DIM).astype(np.float32)),
            USER_EMB_DIM),
    }), emb_dir / "part-0.parquet")
    examples = build_examples_from_events(
        events, item_table, ExampleConfig(),
        _DailyEmbeddings(str(tmp_path / "user_emb")))

    profile = FeatureProfile.embedded(tmp_path / "features", project="pit_scores")
    apply(profile)
    stage_items(profile, world)
    stage_user_embeddings(profile, tmp_path / "user_emb")
    assert materialize(profile)["skipped"] == {}
    reader = FeastReader(profile)
    proc = open_processor(profile, ProcessorConfig(batch_size=1000, block_ms=0,
                                                   max_future_ms=None))
    stream = open_stream(profile)

    torch.manual_seed(0)
    model = Pinnability(RankerConfig(mlp_dims=[32], n_cross_layers=1)).eval()
    buckets = model.cfg.item_id_buckets
    offline = examples_from_table(examples)
    on_last_day = np.flatnonzero((offline.request_time_ms >= last_day)
                                 & ((offline.seq_action_types != 0).sum(axis=1) > 3))
    requests = np.unique(offline.request_id[on_last_day])[:4]
    assert len(requests) == 4
    order = np.argsort([offline.request_time_ms[offline.request_id == r][0] for r in requests])
    ev_ts = events.column("timestamp_ms")
    prev = None
    for request in requests[order].tolist():
        rows = np.flatnonzero(offline.request_id == request)
        t = int(offline.request_time_ms[rows[0]])
        window = pc.less(ev_ts, t) if prev is None else pc.and_(
            pc.greater_equal(ev_ts, prev), pc.less(ev_ts, t))
        replay_events(stream, events.filter(window))
        proc.run()
        prev = t

        want = model.predict(collate(offline, rows, item_table, buckets)).numpy()
        feats, batch = _online_batch(reader, int(offline.user_id[rows[0]]),
                                     offline.item_id[rows], t, int(offline.surface_id[rows[0]]),
                                     buckets)
        assert feats.user_emb_found
        got = model.predict(batch).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.ptp(want[:, 0]) > 0 or len(rows) == 1  # scores depend on the candidate

        # the comparison is sensitive: one action less online changes the scores
        batch.seq_action_types[:, 0] = 0
        assert not np.allclose(model.predict(batch).numpy(), want, rtol=1e-5, atol=1e-6)
