"""PinnerFormer daily batch user embeddings: learning, no leakage, determinism, output format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.pinnerformer import (
    EMBEDDING_SCHEMA,
    PinnerFormerConfig,
    evaluate_pinnerformer,
    load_daily_embeddings,
    run_daily_embeddings,
)
from transact.data.dataset import DatasetMeta, EventPartWriter, read_events
from transact.errors import CorruptArtifact, UserError
from transact.model.pinnerformer import PinnerFormerModelConfig
from transact.schema import DAY_MS, EVENT_SCHEMA, ITEM_EMB_DIM, ITEM_SCHEMA, ActionType

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def write_topic_world(
    out_dir: Path,
    n_users: int = 160,
    n_topics: int = 8,
    items_per_topic: int = 40,
    n_days: int = 16,
    impressions_per_day: int = 24,
    users_per_part: int = 60,
    seed: int = 0,
) -> Path:
    """A controlled world in which a user's long history predicts their future positives.

    Items belong to topics; content embeddings are a noisy topic centroid; item popularity is
    log-normal. Each user likes 2 topics: impressions mix globally popular items with items of
    the liked topics, and liked-topic items are clicked / saved far more often (and hidden less).
    Some users (every 10th) only start on day 8, so earlier days have unseen users; user 4 only
    ever skips (seen, but no engagement history).
    """
    rng = np.random.default_rng(seed)
    n_items = n_topics * items_per_topic
    item_ids = np.arange(1, n_items + 1)
    topic = np.repeat(np.arange(n_topics), items_per_topic)
    centroids = rng.normal(size=(n_topics, ITEM_EMB_DIM))
    content = centroids[topic] + 0.6 * rng.normal(size=(n_items, ITEM_EMB_DIM))
    content = (content / np.linalg.norm(content, axis=1, keepdims=True)).astype(np.float32)
    popularity = rng.lognormal(0.0, 1.0, n_items)

    likes = np.stack([rng.choice(n_topics, 2, replace=False) for _ in range(n_users)])
    n_imp = n_users * n_days * impressions_per_day
    user = np.repeat(np.arange(n_users), n_days * impressions_per_day)
    day = np.tile(np.repeat(np.arange(n_days), impressions_per_day), n_users)
    from_likes = rng.random(n_imp) < 0.6
    chosen_topic = likes[user, rng.integers(0, 2, n_imp)]
    # popularity-weighted item within the chosen topic, or globally
    glob = rng.choice(n_items, n_imp, p=popularity / popularity.sum())
    within = np.empty(n_imp, dtype=np.int64)
    for t in range(n_topics):  # per topic (8 draws), not per event
        sel = np.flatnonzero(chosen_topic == t)
        w = popularity[topic == t]
        within[sel] = t * items_per_topic + rng.choice(items_per_topic, len(sel), p=w / w.sum())
    item_idx = np.where(from_likes, within, glob)
    liked = (likes[user] == topic[item_idx][:, None]).any(axis=1)
    u = rng.random(n_imp)
    p_click = np.where(liked, 0.35, 0.04)
    p_save = np.where(liked, 0.15, 0.01)
    p_hide = np.where(liked, 0.01, 0.10)
    action = np.full(n_imp, int(ActionType.SKIP), dtype=np.int8)
    action[u < p_click + p_save + p_hide] = int(ActionType.HIDE)
    action[u < p_click + p_save] = int(ActionType.SAVE)
    action[u < p_click] = int(ActionType.CLICK)
    action[user == 3] = int(ActionType.SKIP)
    ts = T0_MS + day * DAY_MS + rng.integers(0, DAY_MS, n_imp)
    late_user = (np.arange(n_users) % 10 == 9)[user]
    keep = ~(late_user & (day < 8))

    events = pa.table(
        {
            "event_id": pa.array(np.arange(1, n_imp + 1)[keep], pa.int64()),
            "user_id": pa.array(user[keep] + 1, pa.int64()),
            "item_id": pa.array(item_ids[item_idx][keep], pa.int64()),
            "action_type": pa.array(action[keep], pa.int8()),
            "timestamp_ms": pa.array(ts[keep], pa.int64()),
            "surface": pa.array(["homefeed"] * int(keep.sum()), pa.string()),
            "request_id": pa.array(np.arange(1, n_imp + 1)[keep], pa.int64()),
        },
        schema=EVENT_SCHEMA,
    )
    return _write_dataset(out_dir, events, item_ids, content, topic, users_per_part, seed)


def _write_dataset(out_dir: Path, events: pa.Table, item_ids: np.ndarray, content: np.ndarray,
                   topic: np.ndarray, users_per_part: int, seed: int) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    items = pa.table(
        {
            "item_id": pa.array(item_ids, pa.int64()),
            "content_emb": pa.FixedSizeListArray.from_arrays(pa.array(content.reshape(-1)),
                                                             ITEM_EMB_DIM),
            "topic": pa.array(topic, pa.int32()),
            "title": pa.array([f"item {i}" for i in item_ids]),
        },
        schema=ITEM_SCHEMA,
    )
    pq.write_table(items, out_dir / "items.parquet")
    writer = EventPartWriter(out_dir)
    users = np.unique(events.column("user_id").to_numpy())
    user_col = events.column("user_id").to_numpy()
    for lo in range(0, len(users), users_per_part):
        chunk = users[lo:lo + users_per_part]
        writer.write(events.filter(pa.array(np.isin(user_col, chunk))))
    DatasetMeta(
        source="topic-world", n_users=len(users), n_items=len(item_ids),
        n_events=writer.n_events, n_parts=writer.n_parts, min_timestamp_ms=writer.min_ts or 0,
        max_timestamp_ms=writer.max_ts or 0, seed=seed,
    ).write(out_dir)
    return out_dir


def small_cfg(**overrides) -> PinnerFormerConfig:
    values = dict(history_len=64, window_days=3, warmup_days=2, train_steps=100, batch_size=64,
                  n_random_negatives=128, num_threads=1, seed=7,
                  model=PinnerFormerModelConfig(n_layers=1, n_heads=1, ffn_dim=32,
                                                item_id_buckets=0))
    values.update(overrides)
    return PinnerFormerConfig(**values)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_topic_world(tmp_path_factory.mktemp("pf") / "world")


@pytest.fixture(scope="module")
def trained_run(world: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("pf_run") / "out"
    stats = run_daily_embeddings(world, out, small_cfg(), created_at_ms=T0_MS)
    return out, stats


def _day_ms(day: str) -> int:
    return int(np.datetime64(day, "ms").astype(np.int64))


def _emb_by_day(out: Path) -> dict[str, dict[int, np.ndarray]]:
    table = load_daily_embeddings(out)
    days = table.column("event_timestamp").cast(pa.int64()).to_numpy()
    users = table.column("user_id").to_numpy()
    vecs = np.asarray(table.column("user_emb").combine_chunks().values).reshape(len(users), -1)
    result: dict[str, dict[int, np.ndarray]] = {}
    for d in np.unique(days):
        sel = days == d
        key = str(np.datetime64(int(d), "ms").astype("datetime64[D]"))
        result[key] = dict(zip(users[sel].tolist(), vecs[sel], strict=True))
    return result


# ------------------------------------------------------------------------------------------
# history gathering (the part everything else relies on)


def test_history_is_latest_engagements_strictly_before_cutoff_newest_first(tiny_dataset):
    from training.pinnerformer.data import engagement_log_from_events, history_at

    click, save, hide, skip = (int(a) for a in (ActionType.CLICK, ActionType.SAVE,
                                                ActionType.HIDE, ActionType.SKIP))
    t = T0_MS
    events = [
        (1, 1, 5, click, t + 10), (2, 1, 6, skip, t + 20), (3, 1, 7, hide, t + 30),
        (4, 1, 8, save, t + 30), (5, 1, 9, click, t + 40),  # at the cut-off: not visible
        (6, 2, 3, skip, t + 5),  # user 2: seen, no engagement
        (7, 3, 4, save, t + 1), (8, 3, 2, click, t + 2), (9, 3, 1, click, t + 3),
    ]
    log = engagement_log_from_events(read_events(tiny_dataset(events)))
    assert log.user_ids.tolist() == [1, 2, 3]
    hist = history_at(log, np.array([0, 1, 2]), t + 40, history_len=2)
    # user 1: engagements before t+40 are items 5 (t+10), 7 (t+30, id 3), 8 (t+30, id 4): the
    # newest two, newest first, ties by event id (higher = later)
    assert hist.item_ids[0].tolist() == [8, 7]
    assert hist.actions[0].tolist() == [save, hide]
    assert hist.age_ms[0].tolist() == [10, 10]
    assert hist.lengths.tolist() == [2, 0, 2]
    assert hist.item_ids[1].tolist() == [0, 0] and hist.actions[1].tolist() == [0, 0]
    assert hist.item_ids[2].tolist() == [1, 2]
    # per-row cut-offs take the same path through a vectorised bisection
    per_row = history_at(log, np.array([0, 2, 2]), np.array([t + 31, t + 2, t + 1]), 3)
    assert per_row.item_ids.tolist() == [[8, 7, 5], [4, 0, 0], [0, 0, 0]]


def test_future_positive_ranges_match_a_plain_count(tiny_dataset):
    from training.pinnerformer.data import (
        engagement_log_from_events,
        positives_between,
        ranges_to_rows,
    )

    rng = np.random.default_rng(3)
    n = 400
    events = list(zip(range(1, n + 1), rng.integers(1, 9, n).tolist(),
                      rng.integers(1, 20, n).tolist(), rng.integers(1, 5, n).tolist(),
                      (T0_MS + rng.integers(0, 10 * DAY_MS, n)).tolist(), strict=True))
    table = read_events(tiny_dataset(events, users_per_part=3))
    log = engagement_log_from_events(table)
    lo_ms, hi_ms = T0_MS + 3 * DAY_MS, T0_MS + 6 * DAY_MS
    lo, hi = positives_between(log, np.arange(log.n_users), lo_ms, hi_ms)
    owner, idx = ranges_to_rows(lo, hi)
    got = sorted(zip(log.user_ids[owner].tolist(), log.pos_item_ids[idx].tolist(),
                     log.pos_timestamps_ms[idx].tolist(), strict=True))
    ev = np.array(events)
    want_mask = (np.isin(ev[:, 3], [int(ActionType.CLICK), int(ActionType.SAVE)])
                 & (ev[:, 4] >= lo_ms) & (ev[:, 4] < hi_ms))
    want = sorted(zip(ev[want_mask, 1].tolist(), ev[want_mask, 2].tolist(),
                      ev[want_mask, 4].tolist(), strict=True))
    assert got == want and len(want) > 20


# ------------------------------------------------------------------------------------------
# the daily job


@pytest.mark.slow
def test_daily_files_follow_the_feature_view_format(trained_run):
    out, stats = trained_run
    day_dirs = sorted((out / "user_embeddings").iterdir())
    assert [d.name for d in day_dirs] == [f"date={d}" for d in stats.days]
    # default: the first embedded day is at half of the 16 days, through the day after the last
    assert stats.days[0] == "2026-01-09" and stats.days[-1] == "2026-01-17"
    assert stats.trained_until == "2026-01-09"
    for day_dir in day_dirs:
        table = pq.read_table(day_dir / "part-0.parquet")
        assert table.schema.equals(EMBEDDING_SCHEMA)
        day = day_dir.name.removeprefix("date=")
        stamps = table.column("event_timestamp").cast(pa.int64()).to_numpy()
        assert (stamps == _day_ms(day)).all()
        assert table.num_rows == stats.rows_per_day[day]
        created = table.column("created_timestamp").cast(pa.int64()).to_numpy()
        assert (created == T0_MS).all()
    by_day = _emb_by_day(out)
    first = by_day["2026-01-09"]
    # every 10th user starts on 2026-01-09: unseen before it, so no row (counted)
    assert stats.unseen_users_per_day["2026-01-09"] == 16 and 10 not in first and 9 in first
    assert 10 in by_day["2026-01-10"]
    # user 4 only skips: a row of zeros, counted
    assert stats.zero_history_per_day["2026-01-09"] == 1
    assert not first[4].any()
    norms = np.linalg.norm(np.stack([v for u, v in first.items() if u != 4]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    # the checkpoint, item embeddings and stats are written alongside
    assert (out / "model.pt").is_file() and (out / "item_embeddings.parquet").is_file()
    assert json.loads((out / "stats.json").read_text())["days"] == stats.days
    one = load_daily_embeddings(out, days=["2026-01-11"])
    assert one.num_rows == stats.rows_per_day["2026-01-11"]


@pytest.mark.slow
def test_learned_embedding_beats_popularity_on_held_out_days(world, trained_run):
    out, _ = trained_run
    report = evaluate_pinnerformer(world, out, ks=(10, 50))
    assert report.n_user_days > 500
    assert report.days[0] == "2026-01-09"  # all evaluated days are after the training horizon
    pf, pop = report.recall["pinnerformer"], report.recall["popularity"]
    assert pf["recall@10"] > pop["recall@10"] + 0.02, report.to_markdown()
    assert pf["recall@50"] > pop["recall@50"] + 0.05, report.to_markdown()


@pytest.mark.slow
def test_embeddings_of_day_d_ignore_events_on_and_after_d(world, trained_run, tmp_path):
    """Rewrite every event on or after 2026-01-12 (flip outcomes, move items, add a new user):
    embeddings up to that day must not move; later days must."""
    out, _ = trained_run
    cut = _day_ms("2026-01-12")
    events = read_events(world)
    ts = events.column("timestamp_ms").to_numpy()
    after = ts >= cut
    action = events.column("action_type").to_numpy().copy()
    action[after] = np.where(action[after] == int(ActionType.SKIP), int(ActionType.SAVE),
                             int(ActionType.HIDE))
    item = events.column("item_id").to_numpy().copy()
    item[after] = (item[after] * 7) % 320 + 1
    changed = events.set_column(2, "item_id", pa.array(item, pa.int64()))
    changed = changed.set_column(3, "action_type", pa.array(action, pa.int8()))
    newcomer = changed.slice(0, 5).to_pydict()
    newcomer.update(user_id=[999] * 5, event_id=[10**9 + i for i in range(5)],
                    timestamp_ms=[cut + i for i in range(5)])
    changed = pa.concat_tables([changed.cast(EVENT_SCHEMA),
                                pa.table(newcomer, schema=EVENT_SCHEMA)])
    items = pq.read_table(world / "items.parquet")
    content = np.asarray(items.column("content_emb").combine_chunks().values).reshape(-1, 32)
    other = _write_dataset(tmp_path / "changed", changed, items.column("item_id").to_numpy(),
                           content, items.column("topic").to_numpy(), 60, 0)
    out2 = tmp_path / "out2"
    run_daily_embeddings(other, out2, small_cfg(), created_at_ms=T0_MS)
    base, moved = _emb_by_day(out), _emb_by_day(out2)
    for day in ("2026-01-09", "2026-01-10", "2026-01-11", "2026-01-12"):
        assert base[day].keys() == moved[day].keys()
        for user, vec in base[day].items():
            np.testing.assert_array_equal(vec, moved[day][user])
    # the rewritten events do reach the next day's embedding (so the check above can fail)
    later = [np.abs(base["2026-01-13"][u] - moved["2026-01-13"][u]).max()
             for u in base["2026-01-13"]]
    assert np.median(later) > 1e-3
    assert 999 in moved["2026-01-13"] and 999 not in moved["2026-01-12"]


@pytest.mark.slow
def test_seeded_runs_repeat_exactly_and_parts_do_not_matter(world, trained_run, tmp_path):
    out, stats = trained_run
    again = run_daily_embeddings(world, tmp_path / "again", small_cfg(), created_at_ms=T0_MS)
    assert again.train.loss_last == stats.train.loss_last
    for day in stats.days:
        a = pq.read_table(out / "user_embeddings" / f"date={day}" / "part-0.parquet")
        b = pq.read_table(tmp_path / "again" / "user_embeddings" / f"date={day}" /
                          "part-0.parquet")
        assert a.equals(b)
    # the same events cut into different parts: same users, same vectors (up to rounding)
    events = read_events(world)
    items = pq.read_table(world / "items.parquet")
    content = np.asarray(items.column("content_emb").combine_chunks().values).reshape(-1, 32)
    reparted = _write_dataset(tmp_path / "reparted", events, items.column("item_id").to_numpy(),
                              content, items.column("topic").to_numpy(), 25, 0)
    run_daily_embeddings(reparted, tmp_path / "reparted_out", small_cfg(), days=["2026-01-09",
                                                                                  "2026-01-14"])
    base, other = _emb_by_day(out), _emb_by_day(tmp_path / "reparted_out")
    assert sorted(other) == ["2026-01-09", "2026-01-14"]
    for user, vec in base["2026-01-14"].items():
        np.testing.assert_allclose(other["2026-01-14"][user], vec, atol=1e-5)
    # another seed gives another model (here with the optional item-id embeddings, which
    # survive the checkpoint round trip)
    id_cfg = small_cfg(seed=8, train_steps=5,
                       model=PinnerFormerModelConfig(n_layers=1, n_heads=1, ffn_dim=32,
                                                     item_id_buckets=64))
    other_seed = run_daily_embeddings(world, tmp_path / "seed8", id_cfg, days=["2026-01-09"])
    assert other_seed.train.loss_first != stats.train.loss_first
    reused = run_daily_embeddings(world, tmp_path / "seed8b", id_cfg, days=["2026-01-09"],
                                  checkpoint=tmp_path / "seed8" / "model.pt")
    assert _emb_by_day(tmp_path / "seed8b")["2026-01-09"].keys() == base["2026-01-09"].keys()
    assert reused.reused_checkpoint


@pytest.mark.slow
def test_checkpoint_reuse_and_its_leakage_guard(world, trained_run, tmp_path):
    out, _ = trained_run
    reused = run_daily_embeddings(world, tmp_path / "reuse", small_cfg(), days=["2026-01-15"],
                                  checkpoint=out / "model.pt", created_at_ms=T0_MS)
    assert reused.reused_checkpoint and reused.train is None
    a = pq.read_table(out / "user_embeddings" / "date=2026-01-15" / "part-0.parquet")
    b = pq.read_table(tmp_path / "reuse" / "user_embeddings" / "date=2026-01-15" /
                      "part-0.parquet")
    assert a.equals(b)
    with pytest.raises(UserError, match="leak"):
        run_daily_embeddings(world, tmp_path / "leak", small_cfg(), days=["2026-01-07"],
                             checkpoint=out / "model.pt")


def test_user_mistakes_are_reported(world, tmp_path, tiny_dataset):
    with pytest.raises(UserError, match="YYYY-MM-DD"):
        run_daily_embeddings(world, tmp_path / "x", small_cfg(), days=["15/01/2026"])
    with pytest.raises(UserError, match="outside the dataset"):
        run_daily_embeddings(world, tmp_path / "x", small_cfg(), days=["2027-01-01"])
    with pytest.raises(UserError, match="no training cut-off"):
        run_daily_embeddings(world, tmp_path / "x", small_cfg(), days=["2026-01-04"])
    with pytest.raises(UserError, match="n_heads"):
        small_cfg(model=PinnerFormerModelConfig(d_model=32, n_heads=3)).validate()
    with pytest.raises(UserError, match="do not exist"):
        load_daily_embeddings(tmp_path / "nothing")
    with pytest.raises(UserError, match="unknown PinnerFormer config keys"):
        PinnerFormerConfig.from_dict({"histroy_len": 10})
    short = tiny_dataset([(1, 1, 2, int(ActionType.CLICK), T0_MS)])
    with pytest.raises(UserError, match="too short"):
        run_daily_embeddings(short, tmp_path / "y", small_cfg())
    shutil.rmtree(tmp_path / "x", ignore_errors=True)


@pytest.mark.slow
def test_evaluation_needs_the_checkpoint_and_says_when_it_is_missing_or_corrupt(
        world, trained_run, tmp_path):
    out, _ = trained_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "model.pt").unlink()
    with pytest.raises(UserError, match="model.pt does not exist"):
        evaluate_pinnerformer(world, copy, ks=(10,))
    (copy / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptArtifact, match="not a readable PinnerFormer checkpoint"):
        evaluate_pinnerformer(world, copy, ks=(10,))
    with pytest.raises(CorruptArtifact, match="not a readable PinnerFormer checkpoint"):
        run_daily_embeddings(world, tmp_path / "again", small_cfg(), days=["2026-01-15"],
                             checkpoint=copy / "model.pt")


@pytest.mark.slow
def test_training_can_sample_users_to_bound_memory(world, tmp_path):
    stats = run_daily_embeddings(world, tmp_path / "sampled", small_cfg(train_steps=2,
                                                                        max_train_users=40),
                                 days=["2026-01-09"])
    everyone = run_daily_embeddings(world, tmp_path / "all", small_cfg(train_steps=2),
                                    days=["2026-01-09"])
    assert 20 <= stats.train.n_train_users <= 60 < everyone.train.n_train_users
    # the sample only limits training: every user still gets the day's embedding
    assert stats.rows_per_day == everyone.rows_per_day


def test_unsorted_events_part_is_refused():
    from training.pinnerformer.data import engagement_log_from_events
    from transact.data.dataset import DatasetError

    events = pa.table({"event_id": [1, 2], "user_id": [1, 1], "item_id": [3, 4],
                       "action_type": pa.array([2, 2], pa.int8()),
                       "timestamp_ms": [T0_MS + 5, T0_MS], "surface": ["homefeed"] * 2,
                       "request_id": [1, 2]}).cast(EVENT_SCHEMA)
    with pytest.raises(DatasetError, match="not sorted"):
        engagement_log_from_events(events)
