"""Raw-event ingestion: every bad-input case is either fixed and counted or refused clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transact.data.cleaning import (
    CleaningError,
    CleaningReport,
    clean_events,
    derive_request_ids,
    hashed_item_embeddings,
    import_events,
    part_boundaries,
)
from transact.data.dataset import DatasetMeta, iter_event_parts, read_events, read_items
from transact.errors import UserError
from transact.schema import EVENT_SCHEMA, ITEM_EMB_DIM, MIN_TIMESTAMP_MS, ActionType

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
T0_S = T0_MS // 1000
MIN = 60_000


def raw_table(**overrides) -> pa.Table:
    """Five raw events of two users; columns can be overridden or removed (value None)."""
    columns = {
        "event_id": [10, 11, 12, 13, 14],
        "user_id": [1, 1, 1, 2, 2],
        "item_id": [100, 101, 102, 100, 103],
        "action_type": ["save", "impression", "HIDE", "click", "repin"],
        "timestamp": [T0_MS, T0_MS + MIN, T0_MS + 2 * MIN, T0_MS, T0_MS + 5 * MIN],
        "surface": ["homefeed", "homefeed", "search", "homefeed", "homefeed"],
        "request_id": [7, 7, 8, 9, 9],
    }
    for key, value in overrides.items():
        if value is None:
            columns.pop(key)
        else:
            columns[key] = value
    return pa.table(columns)


def test_clean_table_becomes_the_event_schema_sorted():
    events, report = clean_events(raw_table())
    assert events.schema == EVENT_SCHEMA
    assert events.column("action_type").to_pylist() == [
        ActionType.SAVE, ActionType.SKIP, ActionType.HIDE, ActionType.CLICK, ActionType.SAVE]
    assert events.column("timestamp_ms").to_pylist()[0] == T0_MS
    assert report.rows_in == report.rows_out == 5
    assert report.timestamps_seconds_converted == 0
    assert report.request_id_derived == report.exact_duplicates_dropped == 0
    assert report.users == 2 and report.users_without_engagement == 0


def test_output_is_sorted_by_user_time_and_event_id():
    shuffled = raw_table(
        event_id=[14, 12, 10, 11, 13],
        user_id=[2, 1, 1, 1, 2],
        item_id=[103, 102, 100, 101, 100],
        action_type=[3, 4, 3, 1, 2],
        timestamp=[T0_MS + 5 * MIN, T0_MS + 2 * MIN, T0_MS, T0_MS, T0_MS],
        surface=["homefeed"] * 5,
        request_id=[9, 8, 7, 7, 9],
    )
    events, _ = clean_events(shuffled)
    # user 1: event 10 and 11 share a timestamp -> ordered by event id
    assert events.column("event_id").to_pylist() == [10, 11, 12, 13, 14]


def test_seconds_timestamps_are_detected_per_value_converted_and_counted():
    table = raw_table(timestamp=[T0_S, T0_MS + MIN, T0_S + 120, T0_MS, T0_S + 300])
    events, report = clean_events(table)
    assert report.timestamps_seconds_converted == 3
    by_id = dict(zip(events.column("event_id").to_pylist(),
                     events.column("timestamp_ms").to_pylist(), strict=True))
    assert by_id == {10: T0_MS, 11: T0_MS + MIN, 12: T0_MS + 2 * MIN, 13: T0_MS,
                     14: T0_MS + 5 * MIN}


def test_fractional_second_timestamps_round_to_milliseconds():
    table = raw_table(timestamp=[T0_S + 0.25, T0_S + 1.0, T0_S + 2.5, T0_S, T0_S + 9.9996])
    events, report = clean_events(table)
    assert report.timestamps_seconds_converted == 5
    assert sorted(events.column("timestamp_ms").to_pylist()) == [
        T0_MS, T0_MS + 250, T0_MS + 1000, T0_MS + 2500, T0_MS + 10_000]


@pytest.mark.parametrize("bad", [0, -5, 12, 999_999_999_999_999_999])
def test_implausible_timestamps_are_rejected_with_examples(bad):
    with pytest.raises(CleaningError, match="implausible timestamps") as info:
        clean_events(raw_table(timestamp=[T0_MS, bad, T0_MS, T0_MS, T0_MS]))
    assert str(bad) in str(info.value) or f"{float(bad)}" in str(info.value)


def test_microsecond_timestamps_get_a_hint():
    with pytest.raises(CleaningError, match="microseconds"):
        clean_events(raw_table(timestamp=[T0_MS * 1000] * 5))


def test_an_earlier_floor_accepts_older_data():
    old_s = MIN_TIMESTAMP_MS // 1000 - 2 * 365 * 86_400  # two years before the default floor
    with pytest.raises(CleaningError, match="implausible"):
        clean_events(raw_table(timestamp=[old_s] * 5))
    events, report = clean_events(raw_table(timestamp=[old_s] * 5),
                                  min_timestamp_ms=(old_s - 86_400) * 1000)
    assert report.timestamps_seconds_converted == 5
    assert set(events.column("timestamp_ms").to_pylist()) == {old_s * 1000}
    with pytest.raises(CleaningError, match="overlaps"):
        clean_events(raw_table(), min_timestamp_ms=1000)


def test_iso_datetime_strings_are_read_as_utc():
    table = raw_table(timestamp=["2026-01-01T00:00:00", "2026-01-01 00:01:00",
                                 "2026-01-01T00:02:00.5", "2026-01-01T00:00:00",
                                 "2026-01-01T00:05:00"])
    events, report = clean_events(table)
    assert report.timestamps_seconds_converted == 0
    assert sorted(events.column("timestamp_ms").to_pylist()) == [
        T0_MS, T0_MS, T0_MS + MIN, T0_MS + 2 * MIN + 500, T0_MS + 5 * MIN]
    with pytest.raises(CleaningError, match="ISO 8601"):
        clean_events(raw_table(timestamp=["yesterday"] * 5))


def test_a_csv_with_only_a_header_gives_an_empty_table(tmp_path: Path):
    path = tmp_path / "empty.csv"
    path.write_text("event_id,user_id,item_id,action_type,timestamp\n")
    events, report = clean_events(path)
    assert events.num_rows == 0 and events.schema == EVENT_SCHEMA
    assert report.rows_in == report.users == 0


def test_unknown_action_types_are_listed_by_default():
    table = raw_table(action_type=["save", "like", "7", "like", "click"])
    with pytest.raises(CleaningError) as info:
        clean_events(table)
    message = str(info.value)
    assert "'like': 2" in message and "'7': 1" in message
    assert "on_unknown='drop'" in message


def test_unknown_action_types_can_be_dropped_and_counted():
    table = raw_table(action_type=["save", "like", "7", "like", "click"])
    events, report = clean_events(table, on_unknown="drop")
    assert events.column("event_id").to_pylist() == [10, 14]
    assert report.unknown_action_dropped == 3
    assert report.unknown_action_values == {"like": 2, "7": 1}
    assert report.rows_out == 2


def test_integer_action_codes_pad_and_out_of_range_are_unknown():
    with pytest.raises(CleaningError, match="unknown action types"):
        clean_events(raw_table(action_type=[1, 2, 0, 3, 4]))
    with pytest.raises(CleaningError, match="unknown action types"):
        clean_events(raw_table(action_type=[1, 2, 5, 3, 4]))


def test_exact_duplicates_are_dropped_and_counted():
    table = pa.concat_tables([raw_table(), raw_table().slice(1, 2)])
    events, report = clean_events(table)
    assert events.num_rows == 5
    assert report.exact_duplicates_dropped == 2
    assert sorted(events.column("event_id").to_pylist()) == [10, 11, 12, 13, 14]


def test_duplicates_equal_after_normalisation_are_exact():
    # same event, once in seconds with an action name, once in ms with the code
    table = pa.concat_tables([
        raw_table(timestamp=[T0_S, T0_MS + MIN, T0_MS + 2 * MIN, T0_MS, T0_MS + 5 * MIN]),
        raw_table().slice(0, 1).set_column(3, "action_type", pa.array(["repin"])),
    ])
    events, report = clean_events(table)
    assert report.exact_duplicates_dropped == 1
    assert events.num_rows == 5


def test_conflicting_duplicate_ids_are_an_error_naming_the_ids():
    conflicting = raw_table().slice(2, 1).set_column(2, "item_id", pa.array([555]))
    with pytest.raises(CleaningError, match=r"different content \(e\.g\. \[12\]\)"):
        clean_events(pa.concat_tables([raw_table(), conflicting]))


def test_missing_request_ids_are_derived_by_session_gap_and_counted():
    table = raw_table(
        request_id=None,
        user_id=[1, 1, 1, 2, 2],
        surface=["homefeed"] * 5,
        timestamp=[T0_MS, T0_MS + 10 * MIN, T0_MS + 2 * 60 * MIN, T0_MS, T0_MS + 5 * MIN],
    )
    events, report = clean_events(table)
    assert report.request_id_derived == 5
    rid = dict(zip(events.column("event_id").to_pylist(),
                   events.column("request_id").to_pylist(), strict=True))
    assert rid[10] == rid[11]  # 10 minutes apart: one request
    assert rid[12] != rid[11]  # 110 minutes later: a new request
    assert rid[13] == rid[14] and rid[13] not in (rid[10], rid[12])  # another user


def test_partially_missing_request_ids_never_collide_with_given_ones():
    table = raw_table(request_id=pa.array([7, None, None, 9, 9], pa.int64()))
    events, report = clean_events(table)
    assert report.request_id_derived == 2
    rid = dict(zip(events.column("event_id").to_pylist(),
                   events.column("request_id").to_pylist(), strict=True))
    assert rid[10] == 7 and rid[13] == rid[14] == 9
    assert rid[11] > 9 and rid[12] > 9
    # event 11 (homefeed) and 12 (search) are on different surfaces: different requests
    assert rid[11] != rid[12]


def test_derive_request_ids_respects_gap_exactly():
    user = np.array([1, 1, 1], dtype=np.int64)
    surface = np.zeros(3, dtype=np.int64)
    ts = np.array([0, 1000, 2001], dtype=np.int64)
    ids = derive_request_ids(user, surface, ts, np.arange(3), gap_ms=1000, start=5)
    assert ids.tolist() == [5, 5, 6]


def test_missing_surface_is_filled_and_counted():
    events, report = clean_events(raw_table(surface=None))
    assert set(events.column("surface").to_pylist()) == {"unknown"}
    assert report.surface_filled == 5
    partly = raw_table(surface=["homefeed", None, "search", None, "homefeed"])
    events, report = clean_events(partly)
    assert report.surface_filled == 2


def test_missing_required_columns_are_listed():
    with pytest.raises(CleaningError, match=r"lacks required columns \['item_id'\]"):
        clean_events(raw_table(item_id=None))


def test_timestamp_ms_column_name_is_accepted():
    table = raw_table().rename_columns(
        ["event_id", "user_id", "item_id", "action_type", "timestamp_ms", "surface",
         "request_id"])
    events, _ = clean_events(table)
    assert events.num_rows == 5


def test_invalid_rows_are_an_error_or_dropped_and_counted():
    table = raw_table(user_id=pa.array([1, None, 1, 2, 2], pa.int64()),
                      item_id=[100, 101, 0, 100, 103])
    with pytest.raises(CleaningError) as info:
        clean_events(table)
    assert "null user_id" in str(info.value) and "item_id <= 0" in str(info.value)
    events, report = clean_events(table, on_invalid="drop")
    assert report.invalid_rows_dropped == 2
    assert events.column("event_id").to_pylist() == [10, 13, 14]


def test_non_integer_ids_are_an_error():
    with pytest.raises(CleaningError, match="'user_id' must hold integers"):
        clean_events(raw_table(user_id=["a", "b", "c", "d", "e"]))


def test_users_without_history_are_fine_and_counted():
    table = raw_table(user_id=[1, 1, 2, 3, 3], action_type=["skip", "skip", "save", "skip",
                                                            "click"])
    events, report = clean_events(table)
    assert events.num_rows == 5
    assert report.users == 3
    assert report.users_single_event == 1  # user 2
    assert report.users_without_engagement == 1  # user 1: only skips


def test_csv_and_parquet_files_and_dataframes(tmp_path: Path):
    table = raw_table()
    csv_path = tmp_path / "events.csv"
    table.to_pandas().to_csv(csv_path, index=False)
    parquet_path = tmp_path / "events.parquet"
    pq.write_table(table, parquet_path)
    from_csv, _ = clean_events(csv_path)
    from_parquet, _ = clean_events(str(parquet_path))
    from_frame, _ = clean_events(table.to_pandas())
    assert from_csv.equals(from_parquet) and from_csv.equals(from_frame)


def test_truncated_csv_is_an_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "events.csv"
    raw_table().to_pandas().to_csv(path, index=False)
    text = path.read_text()
    path.write_text(text[: text.rindex(",") - 3])  # cut inside the last row
    with pytest.raises(CleaningError, match=r"events\.csv is malformed or truncated"):
        clean_events(path)


def test_truncated_parquet_is_an_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "events.parquet"
    pq.write_table(raw_table(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"events\.parquet is malformed or truncated"):
        clean_events(path)


def test_unsupported_or_missing_file(tmp_path: Path):
    with pytest.raises(CleaningError, match="does not exist"):
        clean_events(tmp_path / "nope.csv")
    (tmp_path / "events.json").write_text("{}")
    with pytest.raises(CleaningError, match="unsupported file type"):
        clean_events(tmp_path / "events.json")


def test_extra_columns_are_ignored_and_reported():
    table = raw_table().append_column("device", pa.array(["ios"] * 5))
    _, report = clean_events(table)
    assert report.ignored_columns == ["device"]


def test_report_merges_and_goes_into_dataset_meta():
    _, first = clean_events(raw_table(timestamp=[T0_S] * 5), on_unknown="drop")
    _, second = clean_events(raw_table(action_type=["save", "x", "x", "click", "save"]),
                             on_unknown="drop")
    merged = first.merge(second)
    assert merged.rows_in == 10
    assert merged.timestamps_seconds_converted == 5
    assert merged.unknown_action_dropped == 2 and merged.unknown_action_values == {"x": 2}
    meta = DatasetMeta(source="test", cleaning={"timestamps_seconds_converted": 1})
    merged.merge_into(meta)
    assert meta.cleaning["timestamps_seconds_converted"] == 6
    assert meta.cleaning["unknown_action_dropped"] == 2
    assert "unknown_action_dropped: 2" in merged.summary()
    assert CleaningReport().counts()["rows_in"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 9), st.sampled_from(
    ["skip", "click", "save", "hide", 1, 2, 3, 4]), st.integers(0, 10_000),
    st.booleans()), min_size=1, max_size=40))
def test_cleaning_is_idempotent_and_keeps_every_distinct_event(rows):
    """Cleaning clean output changes nothing; every distinct event id survives."""
    table = pa.table({
        "event_id": list(range(len(rows))),
        "user_id": [r[0] for r in rows],
        "item_id": [r[1] for r in rows],
        "action_type": [str(r[2]) for r in rows],
        "timestamp": [(T0_S + r[3]) if r[4] else (T0_MS + r[3] * 1000) for r in rows],
    })
    events, report = clean_events(table)
    assert events.num_rows == len(rows)
    assert report.timestamps_seconds_converted == sum(r[4] for r in rows)
    again, second = clean_events(events)
    assert again.equals(events)
    assert second.timestamps_seconds_converted == second.request_id_derived == 0
    assert second.exact_duplicates_dropped == 0
    order = list(zip(events.column("user_id").to_pylist(),
                     events.column("timestamp_ms").to_pylist(),
                     events.column("event_id").to_pylist(), strict=True))
    assert order == sorted(order)


# ----------------------------------------------------------------------------- import


def write_items_csv(path: Path, item_ids: list[int]) -> np.ndarray:
    emb = np.arange(len(item_ids) * ITEM_EMB_DIM, dtype=np.float32).reshape(len(item_ids), -1)
    emb /= 1000.0
    frame = pd.DataFrame({
        "item_id": item_ids,
        "content_emb": ["[" + ", ".join(f"{v:.4f}" for v in row) + "]" for row in emb],
        "title": [f"item {i}" for i in item_ids],
        "topic": [i % 3 for i in item_ids],
    })
    frame.to_csv(path, index=False)
    return emb


def test_import_events_writes_a_readable_dataset(tmp_path: Path):
    rng = np.random.default_rng(0)
    n = 300
    raw = pa.table({
        "event_id": np.arange(n),
        "user_id": rng.integers(1, 40, n),
        "item_id": rng.integers(1, 30, n),
        "action_type": rng.choice(["skip", "click", "save", "hide"], n),
        "timestamp": T0_S + rng.integers(0, 86_400, n),  # seconds
    })
    raw_path = tmp_path / "raw.csv"
    raw.to_pandas().to_csv(raw_path, index=False)
    emb = write_items_csv(tmp_path / "items.csv", list(range(1, 30)))
    meta = import_events(raw_path, tmp_path / "items.csv", tmp_path / "ds", events_per_part=50)
    assert meta.n_events == n and meta.n_items == 29
    assert meta.cleaning["timestamps_seconds_converted"] == n
    assert meta.cleaning["request_id_derived"] == n
    assert DatasetMeta.read(tmp_path / "ds").cleaning == meta.cleaning
    items = read_items(tmp_path / "ds")
    np.testing.assert_allclose(
        np.stack(items.column("content_emb").to_numpy(zero_copy_only=False)), emb, atol=1e-4)
    assert meta.n_parts > 1
    seen_users: set[int] = set()
    for part in iter_event_parts(tmp_path / "ds"):
        users = set(part.column("user_id").to_pylist())
        assert not users & seen_users  # a user never spans two parts
        seen_users |= users
    assert read_events(tmp_path / "ds").num_rows == n


def test_import_events_unknown_items_error_drop_or_add(tmp_path: Path):
    raw_path = tmp_path / "raw.parquet"
    pq.write_table(raw_table(), raw_path)
    write_items_csv(tmp_path / "items.csv", [100, 101, 102])  # 103 is missing
    with pytest.raises(CleaningError, match=r"missing from .*items\.csv \(e\.g\. \[103\]\)"):
        import_events(raw_path, tmp_path / "items.csv", tmp_path / "a")
    meta = import_events(raw_path, tmp_path / "items.csv", tmp_path / "b",
                         on_unknown_item="drop")
    assert meta.n_events == 4 and meta.cleaning["events_unknown_item_dropped"] == 1
    meta = import_events(raw_path, tmp_path / "items.csv", tmp_path / "c",
                         on_unknown_item="add")
    assert meta.n_events == 5 and meta.n_items == 4 and meta.cleaning["items_added"] == 1


def test_import_without_items_uses_stable_hashed_embeddings(tmp_path: Path):
    raw_path = tmp_path / "raw.parquet"
    pq.write_table(raw_table(), raw_path)
    meta = import_events(raw_path, None, tmp_path / "ds")
    assert meta.cleaning["items_hashed_emb"] == 4
    items = read_items(tmp_path / "ds")
    emb = np.stack(items.column("content_emb").to_numpy(zero_copy_only=False))
    again = hashed_item_embeddings(np.array([103, 100]))
    np.testing.assert_array_equal(again, emb[[3, 0]])  # depends on the id only
    norms = np.linalg.norm(hashed_item_embeddings(np.arange(1, 2001)), axis=1)
    assert 0.7 < norms.mean() < 1.3
    assert not np.allclose(emb[0], emb[1])


def test_items_file_problems_are_errors(tmp_path: Path):
    raw_path = tmp_path / "raw.parquet"
    pq.write_table(raw_table(), raw_path)
    bad_dim = tmp_path / "items.csv"
    pd.DataFrame({"item_id": [100], "content_emb": ["1 2 3"]}).to_csv(bad_dim, index=False)
    with pytest.raises(CleaningError, match="3 dimensions"):
        import_events(raw_path, bad_dim, tmp_path / "a")
    dup = tmp_path / "dup.csv"
    write_items_csv(dup, [100, 100, 101])
    with pytest.raises(CleaningError, match=r"duplicate item ids \[100\]"):
        import_events(raw_path, dup, tmp_path / "b")


def test_part_boundaries_never_split_a_user():
    users = np.array([1, 1, 1, 2, 3, 3, 3, 3, 4], dtype=np.int64)
    bounds = part_boundaries(users, 3)
    assert bounds == [(0, 3), (3, 4), (4, 8), (8, 9)]
    assert part_boundaries(users, 100) == [(0, 9)]
