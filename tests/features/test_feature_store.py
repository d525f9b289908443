"""Feast end to end in both profiles: apply, stage, materialise, stream, read.

Embedded: SQLite online store, Parquet offline, file registry (no server). Production: Redis
db 5, PostgreSQL registry + offline store in a throw-away schema (``services``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.online import FeastReader, RedisDirectReader, open_reader
from features.processor import (
    OfflineLog,
    ProcessorConfig,
    StreamProcessor,
    open_processor,
    open_stream,
)
from features.quality import check_materialized
from features.replay import stream_scenario
from features.sequence import sequences_as_of
from features.state import SqliteProcessorStore
from features.store import (
    FeatureProfile,
    apply,
    materialize,
    push_counters,
    push_sequences,
    stage_items,
    stage_user_embeddings,
)
from features.stream import SqliteEventQueue
from transact.data.counters import EngagementCounters
from transact.errors import UserError
from transact.schema import HOUR_MS, ITEM_SCHEMA, MAX_TIMESTAMP_MS

N_ITEMS, N_USERS = 600, 30


def _write_inputs(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    item_emb = rng.standard_normal((N_ITEMS, 32)).astype(np.float32)
    items = pa.table({
        "item_id": pa.array(np.arange(1, N_ITEMS + 1), pa.int64()),
        "content_emb": pa.FixedSizeListArray.from_arrays(pa.array(item_emb.ravel()), 32),
        "topic": pa.array(np.arange(N_ITEMS) % 7, pa.int32()),
        "title": pa.array([f"item {i}" for i in range(N_ITEMS)]),
    }, schema=ITEM_SCHEMA)
    pq.write_table(items, tmp_path / "items.parquet")
    user_emb = rng.standard_normal((N_USERS // 2, 32)).astype(np.float32)
    day = int(time.time() * 1000) - HOUR_MS
    emb = pa.table({
        "user_id": pa.array(np.arange(1, N_USERS // 2 + 1), pa.int64()),
        "event_timestamp": pa.array(np.full(N_USERS // 2, day), pa.timestamp("ms", tz="UTC")),
        "user_emb": pa.FixedSizeListArray.from_arrays(pa.array(user_emb.ravel()), 32),
    })
    (tmp_path / "emb" / "date=x").mkdir(parents=True)
    pq.write_table(emb, tmp_path / "emb" / "date=x" / "part-0.parquet")
    return item_emb, user_emb


def _setup(profile: FeatureProfile, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    item_emb, user_emb = _write_inputs(tmp_path)
    names = apply(profile)
    assert {"user_action_sequence", "user_batch_embedding", "item_content"} <= set(names)
    assert stage_items(profile, tmp_path / "items.parquet") == N_ITEMS
    assert stage_user_embeddings(profile, tmp_path / "emb") == N_USERS // 2
    done = materialize(profile)
    assert done["materialized"] == ["item_content", "user_batch_embedding"]
    assert done["skipped"] == {}
    return item_emb, user_emb


def _offline_counts(sc, side: str, keys: np.ndarray) -> np.ndarray:
    counters = EngagementCounters(sc.accepted.column(f"{side}_id").to_numpy(),
                                  sc.accepted.column("timestamp_ms").to_numpy(),
                                  sc.accepted.column("action_type").to_numpy())
    return counters.lookup(keys, np.full(len(keys), MAX_TIMESTAMP_MS)).astype(np.int64)


def _check_reader(reader, sc, item_emb, user_emb) -> None:
    users = np.arange(1, N_USERS + 1)
    ref = sequences_as_of(sc.accepted, users, 2**62)
    cands = np.array([5, 1, N_ITEMS, N_ITEMS + 50, 77])
    user_counts = _offline_counts(sc, "user", users)
    item_counts = _offline_counts(sc, "item", cands)
    assert item_counts[:, 0].min() == 0 and item_counts[:, 0].max() > 0  # seen and unseen
    for row, user in enumerate(users.tolist()):
        feats = reader.get_ranking_features(user, cands)
        assert np.array_equal(feats.user_counts, user_counts[row])
        assert np.array_equal(feats.item_counts, item_counts)
        assert np.array_equal(feats.seq_item_ids, ref.item_ids[row])
        assert np.array_equal(feats.seq_action_types, ref.action_types[row])
        assert np.array_equal(feats.seq_timestamps_ms, ref.timestamps_ms[row])
        assert feats.seq_len == ref.lengths[row]
        assert feats.user_emb_found == (user <= N_USERS // 2)
        if feats.user_emb_found:
            assert np.allclose(feats.user_emb, user_emb[user - 1])
        else:
            assert (feats.user_emb == 0).all()
    assert feats.item_found.tolist() == [True, True, True, False, True]
    assert np.array_equal(feats.item_emb[[0, 1, 2, 4]], item_emb[[4, 0, N_ITEMS - 1, 76]])
    assert (feats.item_emb[3] == 0).all()
    assert feats.item_emb.dtype == np.float32 and feats.item_emb.shape == (5, 32)
    unknown = reader.get_ranking_features(10_000_000, cands)
    assert unknown.seq_len == 0 and (unknown.seq_item_ids == 0).all()
    assert not unknown.user_emb_found and (unknown.user_counts == 0).all()
    many = np.arange(1, N_ITEMS + 60)
    assert np.array_equal(reader.get_item_counts(many), _offline_counts(sc, "item", many))
    # serving's read: the user and the candidates' counters, no content vectors
    light = reader.get_ranking_features(3, many, item_embeddings=False)
    assert np.array_equal(light.item_counts, _offline_counts(sc, "item", many))
    assert np.array_equal(light.user_counts, user_counts[2]) and not light.item_found.any()


@pytest.mark.slow
def test_embedded_profile_push_materialise_read_and_online_outbox_recovery(tmp_path):
    profile = FeatureProfile.embedded(tmp_path / "features", project="embedded_test")
    item_emb, user_emb = _setup(profile, tmp_path)
    sc = stream_scenario(3000, n_users=N_USERS, n_items=N_ITEMS - 100, duplicate_rate=0.05,
                         jitter_ms=60_000, seed=4)
    SqliteEventQueue(profile.queue_path).publish(sc.published)

    # the Feast online write fails once after the commit: the online outbox must replay it
    store = profile.feature_store()
    calls = {"n": 0}

    def flaky_sink(user_ids, sequences):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("online store unavailable")
        push_sequences(store, user_ids, sequences)

    cfg = ProcessorConfig(batch_size=400, block_ms=0)
    def counter_sink(side, ids, totals, watermark_ms):
        push_counters(store, side, ids, totals, watermark_ms)

    proc = StreamProcessor(SqliteProcessorStore(SqliteEventQueue(profile.queue_path)),
                           OfflineLog(profile.offline_log_dir), cfg, online_sink=flaky_sink,
                           counter_sink=counter_sink)
    with pytest.raises(ConnectionError):
        proc.run()
    restarted = open_processor(profile, cfg)  # flushes the outbox, then continues
    restarted.run()
    reader = open_reader(profile)
    assert isinstance(reader, FeastReader)
    _check_reader(reader, sc, item_emb, user_emb)

    good = check_materialized(profile, [1, 2], np.arange(1, N_ITEMS + 1))
    assert good.ok and good.counts["items_found"] == N_ITEMS, good.problems
    assert good.counts["users_with_batch_emb"] == 2
    missing = check_materialized(profile, [1], np.arange(N_ITEMS - 9, N_ITEMS + 91))
    assert not missing.ok and "only 10 of 100 items" in missing.problems[0]


@pytest.mark.slow
@pytest.mark.services
def test_production_profile_feast_and_direct_reads_agree(tmp_path, production_profile):
    profile = production_profile
    item_emb, user_emb = _setup(profile, tmp_path)
    sc = stream_scenario(3000, n_users=N_USERS, n_items=N_ITEMS - 100, duplicate_rate=0.05,
                         jitter_ms=60_000, seed=6)
    proc = open_processor(profile, ProcessorConfig(batch_size=400, block_ms=0))
    open_stream(profile).publish(sc.published)
    proc.run()
    feast_reader, direct = FeastReader(profile), RedisDirectReader(profile)
    _check_reader(feast_reader, sc, item_emb, user_emb)
    _check_reader(direct, sc, item_emb, user_emb)
    cands = np.arange(1, 501)
    a, b = feast_reader.get_ranking_features(3, cands), direct.get_ranking_features(3, cands)
    for field in ("seq_item_ids", "seq_action_types", "seq_timestamps_ms", "user_emb",
                  "item_emb", "item_found", "user_counts", "item_counts"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert b.user_emb_timestamp_ms > 0


def test_staging_rejects_bad_embeddings(tmp_path):
    profile = FeatureProfile.embedded(tmp_path / "features")
    bad = pa.table({"item_id": [1, 2], "content_emb": [[0.0] * 32, [1.0] * 31]})
    pq.write_table(bad, tmp_path / "items.parquet")
    with pytest.raises(UserError, match="1 rows do not have 32 values"):
        stage_items(profile, tmp_path / "items.parquet")
    with pytest.raises(UserError, match="unknown feature profile"):
        FeatureProfile(kind="cloud")
    with pytest.raises(UserError, match="production profile"):
        RedisDirectReader(profile)


@pytest.mark.slow
def test_feature_store_yaml_files_match_the_profiles_in_code(tmp_path):
    import yaml

    repo = Path(__file__).resolve().parents[2] / "features" / "repo"
    for kind in ("embedded", "production"):
        declared = yaml.safe_load((repo / kind / "feature_store.yaml").read_text())
        config = FeatureProfile(kind=kind, root=tmp_path / kind).repo_config()
        assert declared["project"] == config.project
        assert declared["online_store"]["type"] == config.online_store.type
        assert declared["offline_store"]["type"] == config.offline_store.type
        assert declared["registry"]["registry_type"] == config.registry.registry_type
        assert declared["entity_key_serialization_version"] == 3
    prod = yaml.safe_load((repo / "production" / "feature_store.yaml").read_text())
    code = FeatureProfile.production(tmp_path).repo_config()
    assert prod["online_store"]["connection_string"] == code.online_store.connection_string
    assert prod["registry"]["path"] == code.registry.path
    assert prod["offline_store"]["db_schema"] == code.offline_store.db_schema
