"""Kill the processor (SIGKILL, in a subprocess) mid-stream, restart it, and check that no
action was lost and none applied twice: sequences, Feast online layout, offline log and dead
letters all equal the expected result.

Deterministic failpoints kill it right before a commit, right after one, and after the offline
write but before its outbox entry is cleared; random-time kills hit everything else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from features.processor import OfflineLog, open_stream
from features.replay import stream_scenario
from features.sequence import sequences_as_of
from features.state import RedisProcessorStore, SqliteProcessorStore
from features.store import FeatureProfile

ROOT = Path(__file__).resolve().parents[2]
FAILPOINTS = ("before_commit:2", "after_commit:4", "after_offline_write:6", "before_commit:9")


def _run_with_kills(profile: FeatureProfile, tmp_path: Path, rng: np.random.Generator) -> int:
    """Run the processor CLI until it finishes cleanly; return how many times it was killed."""
    env = {**os.environ, "TRANSACT_FAILPOINTS": ",".join(FAILPOINTS),
           "TRANSACT_FAILPOINT_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "features.cli", "process", "--profile", profile.kind,
            "--root", str(profile.root), "--redis-db", str(profile.redis_db), "--key-prefix",
            profile.key_prefix, "--project", profile.project, "--batch-size", "300",
            "--no-feast-online"]
    kills = 0
    for attempt in range(12):
        ready = tmp_path / f"ready-{attempt}"
        proc = subprocess.Popen([*args, "--ready-file", str(ready)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        all_fired = all((tmp_path / f"fired-{fp.replace(':', '-')}").exists()
                        for fp in FAILPOINTS)
        if attempt % 2 == 1 and not all_fired:  # a random-time kill on every other run
            deadline = time.monotonic() + 60
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(float(rng.uniform(0.0, 0.15)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            continue
        assert proc.returncode == 0, err.decode()[-2000:]
        if all((tmp_path / f"fired-{fp.replace(':', '-')}").exists() for fp in FAILPOINTS):
            return kills
    raise AssertionError("the processor did not finish after 12 runs")


def _check(profile: FeatureProfile, sc, store, n_users: int) -> None:
    users = np.arange(1, n_users + 1)
    ref = sequences_as_of(sc.accepted, users, 2**62)
    state = store.load_sequences(users)
    assert np.array_equal(state["item_id"], ref.item_ids)
    assert np.array_equal(state["action"], ref.action_types)
    assert np.array_equal(state["ts"], ref.timestamps_ms)

    log = OfflineLog(profile.offline_log_dir).read()
    logged = log.column("event_id").to_numpy()
    assert len(np.unique(logged)) == len(logged), "an event was logged twice"
    assert np.array_equal(np.sort(logged), np.sort(sc.accepted.column("event_id").to_numpy()))

    # the engagement counters: each accepted event counted exactly once across the kills
    from transact.data.counters import EngagementCounters
    from transact.schema import MAX_TIMESTAMP_MS

    for side, keys in (("user", users), ("item", np.unique(
            sc.accepted.column("item_id").to_numpy()))):
        offline = EngagementCounters(sc.accepted.column(f"{side}_id").to_numpy(),
                                     sc.accepted.column("timestamp_ms").to_numpy(),
                                     sc.accepted.column("action_type").to_numpy())
        assert np.array_equal(store.load_counters(side, keys),
                              offline.lookup(keys, np.full(len(keys), MAX_TIMESTAMP_MS))), side

    stats = store.stats()
    assert stats["accepted"] == sc.accepted.num_rows
    assert stats["duplicates"] == sc.duplicates
    assert stats["messages"] == sc.published.num_rows
    dead = open_stream(profile).dead_letters()
    assert len(set(dead.column("message_id").to_pylist())) == dead.num_rows
    reasons = dead.column("reason").to_pylist()
    assert {r: reasons.count(r) for r in set(reasons)} == sc.dead
    assert open_stream(profile).backlog() == 0


def _scenario():
    return stream_scenario(7000, n_users=60, duplicate_rate=0.05, invalid_rate=0.02,
                           too_late_rate=0.01, jitter_ms=120_000, seed=11)


@pytest.mark.slow
@pytest.mark.services
def test_production_processor_survives_sigkill_with_exactly_once_effect(tmp_path,
                                                                        production_profile):
    profile = production_profile
    sc = _scenario()
    open_stream(profile).publish(sc.published)
    kills = _run_with_kills(profile, tmp_path, np.random.default_rng(0))
    assert kills >= len(FAILPOINTS)
    store = RedisProcessorStore(open_stream(profile), profile.project)
    _check(profile, sc, store, 60)
    # the Feast online layout (what serving reads) holds the same sequences
    from features.online import RedisDirectReader

    reader = RedisDirectReader(profile)
    ref = sequences_as_of(sc.accepted, np.arange(1, 61), 2**62)
    for row, user in enumerate(range(1, 61)):
        feats = reader.get_ranking_features(user, [])
        assert np.array_equal(feats.seq_item_ids, ref.item_ids[row])
        assert np.array_equal(feats.seq_action_types, ref.action_types[row])
        assert np.array_equal(feats.seq_timestamps_ms, ref.timestamps_ms[row])
        assert feats.seq_len == ref.lengths[row]
        assert np.array_equal(feats.user_counts, store.load_counters("user", np.array([user]))[0])


@pytest.mark.slow
def test_embedded_processor_survives_sigkill_with_exactly_once_effect(tmp_path):
    profile = FeatureProfile.embedded(tmp_path / "features")
    sc = _scenario()
    open_stream(profile).publish(sc.published)
    kills = _run_with_kills(profile, tmp_path, np.random.default_rng(1))
    assert kills >= len(FAILPOINTS)
    store = SqliteProcessorStore(open_stream(profile))
    _check(profile, sc, store, 60)
