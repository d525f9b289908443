"""The training-example builder: sequence contents, leakage rule, tie-breaks, splits, scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_data import T0_MS, write_tiny_dataset

from transact.data.dataset import DatasetError
from transact.data.examples import ExampleConfig, build_examples, read_examples
from transact.errors import UserError
from transact.schema import DAY_MS, HOUR_MS, ActionType

SKIP, CLICK, SAVE, HIDE = (int(a) for a in (ActionType.SKIP, ActionType.CLICK, ActionType.SAVE,
                                            ActionType.HIDE))
#: an impression of another user days before everything else, so that a training span exists
ANCHOR = (99_999, 999, 1, SKIP, T0_MS - 30 * DAY_MS)


def all_examples(out: Path) -> pa.Table:
    return pa.concat_tables([read_examples(out, s) for s in ("train", "val", "test")
                             if list((out / s).glob("*.parquet"))])


def row_of(table: pa.Table, event_item: int, ts: int) -> dict:
    rows = table.filter(pa.compute.and_(pa.compute.equal(table["item_id"], event_item),
                                        pa.compute.equal(table["request_time_ms"], ts)))
    assert rows.num_rows == 1
    return rows.to_pylist()[0]


def test_sequence_is_strictly_before_request_newest_first_ties_by_event_id(tiny_dataset, tmp_path):
    t = T0_MS + 10 * DAY_MS
    events = [
        (1, 1, 3, SAVE, t + 1 * HOUR_MS),
        (2, 1, 4, SKIP, t + 2 * HOUR_MS),
        (3, 1, 5, HIDE, t + 3 * HOUR_MS),
        (4, 1, 6, CLICK, t + 3 * HOUR_MS),  # same time as event 3, higher id: newer
        (5, 1, 7, SKIP, t + 3 * HOUR_MS),  # same request time: sees neither 3 nor 4
        (6, 1, 8, SKIP, t + 4 * HOUR_MS),
    ]
    ds = tiny_dataset([*events, ANCHOR])
    out = tmp_path / "ex"
    build_examples(ds, out, ExampleConfig(test_days=1, val_days=0))
    table = all_examples(out)
    same_time = row_of(table, 7, t + 3 * HOUR_MS)
    assert same_time["seq_len"] == 1
    assert same_time["seq_item_ids"][:2] == [3, 0]
    assert same_time["seq_action_types"][:2] == [SAVE, 0]
    later = row_of(table, 8, t + 4 * HOUR_MS)
    assert later["seq_len"] == 3
    assert later["seq_item_ids"][:4] == [6, 5, 3, 0]
    assert later["seq_action_types"][:4] == [CLICK, HIDE, SAVE, 0]
    assert later["seq_timestamps_ms"][:3] == [t + 3 * HOUR_MS, t + 3 * HOUR_MS, t + HOUR_MS]
    # skips never enter the sequence; padding is all zeros
    assert 4 not in later["seq_item_ids"]
    assert set(later["seq_timestamps_ms"][3:]) == {0}
    # labels follow the outcome
    hide_row = row_of(table, 5, t + 3 * HOUR_MS)
    assert (hide_row["label_click"], hide_row["label_save"], hide_row["label_hide"]) == (0, 0, 1)


def test_first_example_of_a_user_has_no_history_and_is_counted(tiny_dataset, tmp_path):
    t = T0_MS + 5 * DAY_MS
    ds = tiny_dataset([(1, 1, 2, CLICK, t), (2, 2, 3, SKIP, t), (3, 2, 4, SAVE, t + 1000),
                       (4, 2, 5, SKIP, t + 2000), ANCHOR])
    stats = build_examples(ds, tmp_path / "ex", ExampleConfig(test_days=1, val_days=0))
    table = all_examples(tmp_path / "ex")
    first = row_of(table, 2, t)
    assert first["seq_len"] == 0 and set(first["seq_item_ids"]) == {0}
    # every event but user 2's last (which sees the save) lacks history; a skip is no history
    assert stats.examples_without_history == 4
    assert row_of(table, 5, t + 2000)["seq_len"] == 1
    assert not np.isnan(np.asarray(first["user_batch_emb"])).any()


def test_sequence_keeps_the_latest_100_actions(tiny_dataset, tmp_path):
    t = T0_MS + 3 * DAY_MS
    events = [(i + 1, 1, (i % 20) + 1, CLICK, t + i * 1000) for i in range(150)]
    events.append((1000, 1, 1, SKIP, t + 200 * 1000))
    ds = tiny_dataset([*events, ANCHOR])
    build_examples(ds, tmp_path / "ex", ExampleConfig(test_days=1, val_days=0))
    row = row_of(all_examples(tmp_path / "ex"), 1, t + 200 * 1000)
    assert row["seq_len"] == 100
    assert row["seq_timestamps_ms"][0] == t + 149 * 1000
    assert row["seq_timestamps_ms"][99] == t + 50 * 1000


def test_time_based_split_puts_the_latest_days_in_test(tiny_dataset, tmp_path):
    events = [(d + 1, 1, d + 1, CLICK, T0_MS + d * DAY_MS + HOUR_MS) for d in range(6)]
    ds = tiny_dataset([*events, ANCHOR])
    stats = build_examples(ds, tmp_path / "ex", ExampleConfig(test_days=2, val_days=1))
    assert stats.examples == {"train": 4, "val": 1, "test": 2}
    test_ts = read_examples(tmp_path / "ex", "test")["request_time_ms"].to_numpy()
    train_ts = read_examples(tmp_path / "ex", "train")["request_time_ms"].to_numpy()
    assert train_ts.max() < test_ts.min()
    assert test_ts.min() >= stats.split_boundaries_ms["test_start"]


def test_fraction_split_follows_the_events_not_the_calendar(tiny_dataset, tmp_path):
    # 80 events on day 0, then one event a day for 20 days: the calendar split would put the
    # last days in test, the fraction split must put about 10% of the events there
    events = [(i + 1, 1 + i % 5, 1 + i % 20, CLICK, T0_MS + i * 60_000) for i in range(80)]
    events += [(100 + d, 1 + d % 5, 1, SKIP, T0_MS + d * DAY_MS + HOUR_MS) for d in range(1, 21)]
    ds = tiny_dataset(events)
    stats = build_examples(ds, tmp_path / "ex", ExampleConfig(test_fraction=0.1,
                                                              val_fraction=0.1))
    assert stats.examples["test"] == 10 and stats.examples["val"] == 10
    with pytest.raises(UserError, match="both"):
        ExampleConfig(test_fraction=0.1).validate()


def test_start_ms_skips_early_requests_but_keeps_their_history(tiny_dataset, tmp_path):
    events = [(d + 1, 1, d + 1, CLICK, T0_MS + d * DAY_MS + HOUR_MS) for d in range(6)]
    ds = tiny_dataset(events)
    cfg = ExampleConfig(test_days=1, val_days=1, start_ms=T0_MS + 3 * DAY_MS)
    stats = build_examples(ds, tmp_path / "ex", cfg)
    assert stats.examples_before_start == 3 and stats.total == 3
    first_kept = row_of(all_examples(tmp_path / "ex"), 4, T0_MS + 3 * DAY_MS + HOUR_MS)
    assert first_kept["seq_item_ids"][:4] == [3, 2, 1, 0]


def test_default_user_embedding_is_mean_of_positives_before_the_day(tiny_dataset, tmp_path):
    day = T0_MS + 4 * DAY_MS
    events = [
        (1, 1, 2, SAVE, day - 2 * DAY_MS),   # item 2 -> 0.02
        (2, 1, 4, CLICK, day - DAY_MS),      # item 4 -> 0.04
        (3, 1, 10, HIDE, day - DAY_MS),      # negative: not in the mean
        (4, 1, 6, CLICK, day + HOUR_MS),     # same day as the request: not yet in the embedding
        (5, 1, 7, SKIP, day + 2 * HOUR_MS),
    ]
    ds = tiny_dataset([*events, ANCHOR])
    build_examples(ds, tmp_path / "ex", ExampleConfig(test_days=1, val_days=0))
    row = row_of(all_examples(tmp_path / "ex"), 7, day + 2 * HOUR_MS)
    np.testing.assert_allclose(row["user_batch_emb"], np.full(32, 0.03), rtol=1e-5)


def test_daily_embedding_table_is_read_as_of_the_request_day(tiny_dataset, tmp_path):
    day = T0_MS + 4 * DAY_MS
    ds = tiny_dataset([(1, 1, 2, SKIP, day + HOUR_MS), (2, 1, 3, SKIP, day + DAY_MS + 1), ANCHOR])
    emb_path = tmp_path / "user_emb.parquet"
    pq.write_table(pa.table({
        "user_id": pa.array([1, 1, 1], pa.int64()),
        "event_timestamp": pa.array([day - DAY_MS, day, day + 5 * DAY_MS], pa.timestamp("ms")),
        "user_emb": pa.FixedSizeListArray.from_arrays(
            pa.array(np.repeat([1.0, 2.0, 3.0], 32).astype(np.float32)), 32),
    }), emb_path)
    build_examples(ds, tmp_path / "ex", ExampleConfig(test_days=1, val_days=0,
                                                      user_emb_path=str(emb_path)))
    table = all_examples(tmp_path / "ex")
    assert row_of(table, 2, day + HOUR_MS)["user_batch_emb"][0] == 2.0
    assert row_of(table, 3, day + DAY_MS + 1)["user_batch_emb"][0] == 2.0  # day+5 is future


def test_daily_embedding_lookup_is_exact_for_user_ids_above_2_pow_40(tmp_path):
    from transact.data.examples import _DailyEmbeddings

    big = 2**40 + 1
    day0 = T0_MS // DAY_MS
    users = [big, big, big, big + 1, 2**62 + 5]
    days = [day0, day0 + 1, day0 + 3, day0 + 1, day0]
    emb_path = tmp_path / "user_emb.parquet"
    pq.write_table(pa.table({
        "user_id": pa.array(users, pa.int64()),
        "event_timestamp": pa.array([d * DAY_MS for d in days], pa.timestamp("ms")),
        "user_emb": pa.FixedSizeListArray.from_arrays(
            pa.array(np.repeat(np.arange(1.0, 6.0), 32).astype(np.float32)), 32),
    }), emb_path)
    table = _DailyEmbeddings(str(emb_path))
    query_users = np.array([big, big, big, big, big, big + 1, big + 1, big + 2, 2**62 + 5],
                           dtype=np.int64)
    query_days = np.array([day0 - 1, day0, day0 + 1, day0 + 2, day0 + 9, day0, day0 + 1,
                           day0 + 1, day0], dtype=np.int64)
    emb, found = table.lookup(query_users, query_days)
    assert found.tolist() == [False, True, True, True, True, False, True, False, True]
    assert emb[:, 0].tolist() == [0.0, 1.0, 2.0, 2.0, 3.0, 0.0, 4.0, 0.0, 5.0]


def test_skip_downsampling_is_deterministic_counted_and_keeps_engagements(tiny_dataset, tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    acts = rng.choice([SKIP, CLICK, SAVE, HIDE], size=n, p=[0.85, 0.08, 0.05, 0.02])
    events = [(i + 1, 1 + i % 7, 1 + i % 20, int(acts[i]), T0_MS + i * 60_000) for i in range(n)]
    ds = tiny_dataset([*events, ANCHOR])
    cfg = ExampleConfig(test_days=1, val_days=0, skip_keep_rate=0.2)
    stats_a = build_examples(ds, tmp_path / "a", cfg)
    stats_b = build_examples(ds, tmp_path / "b", cfg)
    assert stats_a.examples == stats_b.examples
    n_skips = int((acts == SKIP).sum())
    assert stats_a.skips_dropped + (stats_a.total - int((acts != SKIP).sum())) == n_skips + 1
    assert 0.1 < 1 - stats_a.skips_dropped / n_skips < 0.3
    kept = all_examples(tmp_path / "a")
    assert int((kept["outcome"].to_numpy() != SKIP).sum()) == int((acts != SKIP).sum())
    # the counters count the dropped skips too: impressions before event i of item 1 + i % 20
    last = kept.sort_by([("request_time_ms", "descending")]).slice(0, 1).to_pylist()[0]
    before = [e for e in events if e[2] == last["item_id"] and e[4] < last["request_time_ms"]]
    assert last["item_counts"][0] == len(before) + (ANCHOR[2] == last["item_id"])
    assert stats_a.skips_dropped > 0


def reference_sequences(events: list[tuple[int, int, int, int, int]], seq_len: int):
    """Plain-Python reference: for each event, engagements of the user strictly before it."""
    out = {}
    for eid, user, _item, _act, ts in events:
        history = [e for e in events if e[1] == user and e[4] < ts and e[3] != SKIP]
        history.sort(key=lambda e: (e[4], e[0]), reverse=True)
        out[eid] = [(e[2], e[3], e[4]) for e in history[:seq_len]]
    return out


event_lists = st.lists(
    st.tuples(st.integers(1, 4), st.integers(1, 20), st.sampled_from([SKIP, CLICK, SAVE, HIDE]),
              st.integers(0, 3 * DAY_MS // 60_000)),
    min_size=1, max_size=60,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=event_lists, seq_len=st.integers(1, 8), users_per_part=st.sampled_from([None, 1, 2]))
def test_builder_matches_reference_and_never_leaks(tmp_path_factory, raw, seq_len, users_per_part):
    # coarse minutes so that equal timestamps (ties) are common
    events = [(i + 1, u, it, a, T0_MS + m * 60_000) for i, (u, it, a, m) in enumerate(raw)]
    events.append(ANCHOR)
    base = tmp_path_factory.mktemp("prop")
    ds = write_tiny_dataset(base / "ds", events, users_per_part=users_per_part)
    build_examples(ds, base / "ex", ExampleConfig(seq_len=seq_len, test_days=1, val_days=1))
    table = all_examples(base / "ex")
    assert table.num_rows == len(events)
    expected = reference_sequences(events, seq_len)
    by_key = {(e[1], e[2], e[4], e[3]): e[0] for e in events}
    for row in table.to_pylist():
        eid = by_key[(row["user_id"], row["item_id"], row["request_time_ms"], row["outcome"])]
        seq = expected[eid]
        n = row["seq_len"]
        assert n == len(seq)
        got = list(zip(row["seq_item_ids"][:n], row["seq_action_types"][:n],
                       row["seq_timestamps_ms"][:n], strict=True))
        assert got == seq
        assert all(ts < row["request_time_ms"] for ts in row["seq_timestamps_ms"][:n])
        assert set(row["seq_action_types"][n:]) <= {0}
        # engagement counters: every user's events of the item (any events part), and the
        # user's own events, strictly before the request
        t = row["request_time_ms"]
        for column, key in (("item_counts", 2), ("user_counts", 1)):
            before = [e for e in events if e[key] == row[column.replace("counts", "id")]
                      and e[4] < t]
            assert row[column] == [len(before), *(sum(e[3] == a for e in before)
                                                  for a in (CLICK, SAVE, HIDE))]


def test_missing_or_truncated_inputs_are_readable_errors(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="no meta.json"):
        build_examples(tmp_path / "nowhere", tmp_path / "ex")
    ds = tiny_dataset([(1, 1, 2, CLICK, T0_MS), (2, 1, 3, SKIP, T0_MS + 5 * DAY_MS)])
    part = next((ds / "events").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:40])
    with pytest.raises(DatasetError, match="malformed or truncated"):
        build_examples(ds, tmp_path / "ex", ExampleConfig(test_days=1, val_days=0))
    with pytest.raises(UserError, match="seq_len"):
        ExampleConfig(seq_len=0).validate()


def test_too_short_dataset_for_the_split_is_an_error(tiny_dataset, tmp_path):
    ds = tiny_dataset([(1, 1, 2, CLICK, T0_MS), (2, 1, 3, SKIP, T0_MS + 1000)])
    with pytest.raises(UserError, match="too few days"):
        build_examples(ds, tmp_path / "ex", ExampleConfig(test_days=2, val_days=1))
