"""Online == offline: replaying a dataset through the stream and reading the online sequence
at request time t gives exactly the sequence the example builder computes for t."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.online import FeastReader, RedisDirectReader
from features.processor import ProcessorConfig, open_processor, open_stream
from features.replay import replay_events
from features.store import FeatureProfile, apply
from transact.data.dataset import item_embedding_table, read_events, read_items
from transact.data.examples import ExampleConfig, build_examples_from_events
from transact.data.synthetic import generate_world
from transact.data.synthetic_world import WorldConfig


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


def test_examples_rows_are_what_the_reader_fields_mean():
    # guard: the builder's sequence columns are the ones the online reader returns
    from transact.schema import example_schema

    names = set(example_schema().names)
    assert {"seq_item_ids", "seq_action_types", "seq_timestamps_ms", "seq_len"} <= names
    assert pa.types.is_fixed_size_list(example_schema().field("seq_item_ids").type)
