"""Great Expectations suites: pass on good data, fail on each kind of breakage, by name."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from transact.errors import CheckFailed, UserError
from transact.schema import (
    EVENT_SCHEMA,
    HOUR_MS,
    SEQ_LEN,
    USER_EMB_DIM,
    ActionType,
    example_schema,
)
from transact.validation import (
    ValidationFailed,
    example_helper_columns,
    sample_indices,
    validate_events,
    validate_examples,
)

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = HOUR_MS


def good_events(n: int = 400, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "event_id": np.arange(1, n + 1, dtype=np.int64),
        "user_id": rng.integers(1, 50, n),
        "item_id": rng.integers(1, 500, n),
        "action_type": rng.integers(1, 5, n).astype(np.int8),
        "timestamp_ms": T0_MS + rng.integers(0, 48 * HOUR, n),
        "surface": rng.choice(["homefeed", "search", "related"], n),
        "request_id": rng.integers(0, 100, n),
    }, schema=EVENT_SCHEMA)


def replace(table: pa.Table, name: str, values) -> pa.Table:
    index = table.column_names.index(name)
    return table.set_column(index, name, pa.array(values, table.schema.field(name).type
                                                  if not isinstance(values, pa.Array)
                                                  else values.type))


def good_examples(n: int = 300, seq_len: int = SEQ_LEN, seed: int = 0) -> pa.Table:
    """Hand-built examples in ``example_schema(seq_len)``: sequences strictly before the
    request, newest first, zero-padded; labels consistent with the outcome."""
    rng = np.random.default_rng(seed)
    request_time = T0_MS + rng.integers(10 * HOUR, 100 * HOUR, n)
    lengths = rng.integers(0, seq_len + 1, n)
    lengths[:3] = [0, 1, seq_len]
    positions = np.arange(seq_len)[None, :]
    real = positions < lengths[:, None]
    gaps = rng.integers(1, 60_000, (n, seq_len))
    stamps = np.where(real, request_time[:, None] - np.cumsum(gaps, axis=1), 0)
    actions = np.where(real, rng.integers(2, 5, (n, seq_len)), 0).astype(np.int8)
    items = np.where(real, rng.integers(1, 1000, (n, seq_len)), 0)
    outcome = rng.integers(1, 5, n).astype(np.int8)
    schema = example_schema(seq_len=seq_len)

    def fixed(values: np.ndarray, value_type: pa.DataType, size: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), value_type), size)

    return pa.table({
        "request_id": np.arange(n, dtype=np.int64) // 3,
        "user_id": rng.integers(1, 100, n),
        "item_id": rng.integers(1, 1000, n),
        "request_time_ms": request_time,
        "surface_id": rng.integers(0, 4, n).astype(np.int8),
        "outcome": outcome,
        "label_click": (outcome == ActionType.CLICK).astype(np.int8),
        "label_save": (outcome == ActionType.SAVE).astype(np.int8),
        "label_hide": (outcome == ActionType.HIDE).astype(np.int8),
        "seq_len": lengths.astype(np.int16),
        "seq_item_ids": fixed(items, pa.int64(), seq_len),
        "seq_action_types": fixed(actions, pa.int8(), seq_len),
        "seq_timestamps_ms": fixed(stamps, pa.int64(), seq_len),
        "user_batch_emb": fixed(rng.normal(size=(n, USER_EMB_DIM)), pa.float32(),
                                USER_EMB_DIM),
    }, schema=schema)


def set_seq(table: pa.Table, name: str, row: int, slot: int, value: int) -> pa.Table:
    column = table.column(name).combine_chunks()
    size = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False).copy()
    flat[row * size + slot] = value
    array = pa.FixedSizeListArray.from_arrays(pa.array(flat, column.type.value_type), size)
    return table.set_column(table.column_names.index(name), name, array)


def failed(report) -> set[str]:
    return set(report.failed_names())


# ----------------------------------------------------------------------------- events


def test_good_events_pass():
    report = validate_events(good_events())
    assert report.success, report.summary()
    assert "all" in report.summary() and report.n_rows == 400
    report.raise_if_failed()


def test_unknown_action_type_fails_by_name():
    table = good_events()
    codes = table.column("action_type").to_numpy().copy()
    codes[[5, 9]] = 7
    report = validate_events(replace(table, "action_type", codes))
    assert failed(report) == {"action_type is a known event action (1..4)"}
    check = report.failures[0]
    assert check.unexpected_count == 2 and check.examples == [7]


def test_seconds_timestamps_fail_with_a_hint():
    table = good_events()
    seconds = table.column("timestamp_ms").to_numpy() // 1000
    report = validate_events(replace(table, "timestamp_ms", seconds))
    assert failed(report) == {"timestamp_ms is Unix milliseconds in the plausible window"}
    assert "look like Unix seconds" in report.summary()
    assert report.failures[0].unexpected_count == 400


def test_data_older_than_the_floor_fails_with_a_hint_and_passes_with_a_lower_floor():
    from transact.schema import MIN_TIMESTAMP_MS

    table = good_events()
    two_years = 2 * 365 * 24 * HOUR
    older = table.column("timestamp_ms").to_numpy() - T0_MS + MIN_TIMESTAMP_MS - two_years
    table = replace(table, "timestamp_ms", older)
    report = validate_events(table)
    assert failed(report) == {"timestamp_ms is Unix milliseconds in the plausible window"}
    assert "before the window's floor" in report.summary()
    lower = validate_events(table, min_timestamp_ms=MIN_TIMESTAMP_MS - 3 * two_years)
    assert lower.success, lower.summary()


def test_nulls_fail_with_their_rate():
    table = good_events()
    user = table.column("user_id").to_pylist()
    user[0] = user[1] = None
    report = validate_events(replace(table, "user_id", user))
    assert "user_id is not null" in failed(report)
    null_check = next(c for c in report.failures if c.name == "user_id is not null")
    assert null_check.unexpected_count == 2
    assert null_check.unexpected_percent == pytest.approx(0.5)


def test_duplicate_event_ids_fail_on_the_sample_and_on_all_rows():
    table = good_events()
    ids = table.column("event_id").to_numpy().copy()
    ids[10] = ids[11]
    report = validate_events(replace(table, "event_id", ids))
    assert failed(report) == {"event_id is unique"}
    scopes = {c.scope for c in report.failures}
    assert scopes == {"sample", "all rows"}


def test_duplicates_outside_the_sample_are_caught_on_all_rows():
    table = good_events(n=2000)
    ids = table.column("event_id").to_numpy().copy()
    rows = sample_indices(2000, 100, seed=0)
    outside = np.setdiff1d(np.arange(2000), rows)[:2]
    ids[outside[0]] = ids[outside[1]]
    report = validate_events(replace(table, "event_id", ids), max_rows=100)
    assert report.n_sampled == 100
    assert [(c.name, c.scope) for c in report.failures] == [("event_id is unique", "all rows")]


def test_string_action_names_and_negative_ids_fail():
    table = good_events(n=10)
    names = pa.array(["save"] * 10)
    table = table.set_column(3, "action_type", names)
    table = replace(table, "item_id", [0] * 10)
    report = validate_events(table)
    assert {"action_type has type int8", "action_type is a known event action (1..4)",
            "item_id is positive (0 is padding)"} <= failed(report)


def test_missing_column_fails_the_schema_check_without_crashing():
    report = validate_events(good_events().drop_columns(["surface"]))
    assert failed(report) == {"columns match the schema"}
    assert "missing ['surface']" in report.summary()


def test_raise_if_failed_raises_a_failed_check_with_the_summary():
    table = good_events()
    codes = table.column("action_type").to_numpy().copy()
    codes[0] = 0
    report = validate_events(replace(table, "action_type", codes))
    with pytest.raises(ValidationFailed) as info:
        report.raise_if_failed()
    assert isinstance(info.value, CheckFailed) and not isinstance(info.value, UserError)
    assert "FAILED action_type is a known event action (1..4)" in str(info.value)
    assert "1 of 400 rows" in str(info.value)


def test_sampling_is_deterministic_and_bounded():
    first = sample_indices(10_000, 500, seed=3)
    assert first.size == 500 and np.all(np.diff(first) > 0)
    assert np.array_equal(first, sample_indices(10_000, 500, seed=3))
    assert not np.array_equal(first, sample_indices(10_000, 500, seed=4))
    assert np.array_equal(sample_indices(20, 500), np.arange(20))


# ----------------------------------------------------------------------------- examples


def test_good_examples_pass():
    report = validate_examples(good_examples())
    assert report.success, report.summary()


def test_good_examples_with_a_shorter_sequence_pass():
    report = validate_examples(good_examples(n=50, seq_len=12))
    assert report.success, report.summary()


def test_a_leaked_future_sequence_timestamp_fails_by_name():
    table = good_examples()
    row = 7
    assert table.column("seq_len")[row].as_py() > 0
    request = table.column("request_time_ms")[row].as_py()
    table = set_seq(table, "seq_timestamps_ms", row, 0, request + 1_000)
    report = validate_examples(table)
    leak = "no leakage: every sequence action is strictly before the request"
    assert leak in failed(report)
    full = next(c for c in report.failures if c.name == leak and c.scope == "all rows")
    assert full.unexpected_count == 1
    assert full.examples[0]["row"] == row and full.examples[0]["value"] == 1_000


def test_an_action_at_the_request_time_is_a_leak_too():
    table = good_examples()
    request = table.column("request_time_ms")[2].as_py()  # row 2 has a full sequence
    table = set_seq(table, "seq_timestamps_ms", 2, 0, request)
    assert "no leakage: every sequence action is strictly before the request" in failed(
        validate_examples(table))


def test_leaks_outside_the_sample_are_caught_on_all_rows():
    table = good_examples(n=400)
    rows = sample_indices(400, 50, seed=0)
    lengths = table.column("seq_len").to_numpy()
    outside = next(r for r in range(400) if r not in set(rows) and lengths[r] > 0)
    request = table.column("request_time_ms")[outside].as_py()
    table = set_seq(table, "seq_timestamps_ms", int(outside), 0, request + 5)
    report = validate_examples(table, max_rows=50)
    assert [(c.name, c.scope) for c in report.failures] == [
        ("no leakage: every sequence action is strictly before the request", "all rows")]


def test_a_bad_label_fails_by_name():
    table = good_examples()
    outcome = table.column("outcome").to_numpy()
    row = int(np.flatnonzero(outcome == ActionType.SAVE)[0])
    clicks = table.column("label_click").to_numpy().copy()
    clicks[row] = 1  # a save labelled as a click too
    report = validate_examples(replace(table, "label_click", clicks))
    assert failed(report) == {
        "labels match the outcome (label_h = 1 exactly when the outcome is h)"}
    twos = table.column("label_hide").to_numpy().copy()
    twos[0] = 2
    report = validate_examples(replace(table, "label_hide", twos))
    assert "label_hide is 0 or 1" in failed(report)


def test_padding_must_be_zero():
    table = good_examples()
    row = 0  # seq_len 0: every slot is padding
    table = set_seq(table, "seq_item_ids", row, 5, 42)
    report = validate_examples(table)
    assert failed(report) == {
        "padding slots (from seq_len on) are action 0, item 0, timestamp 0",
        "padding slots are (0, 0, 0)"}


def test_skips_in_the_sequence_and_bad_order_fail():
    table = good_examples()
    table = set_seq(table, "seq_action_types", 2, 3, int(ActionType.SKIP))
    report = validate_examples(table)
    assert "real slots (before seq_len) hold an engagement with item > 0 and timestamp > 0" \
        in failed(report)
    ordered = good_examples()
    stamps = ordered.column("seq_timestamps_ms")[2].as_py()
    swapped = set_seq(ordered, "seq_timestamps_ms", 2, 0, stamps[1])
    swapped = set_seq(swapped, "seq_timestamps_ms", 2, 1, stamps[0])
    assert failed(validate_examples(swapped)) == {"sequence is newest first"}


def test_seq_len_out_of_range_and_request_time_in_seconds_fail():
    table = good_examples()
    lengths = table.column("seq_len").to_numpy().copy()
    lengths[1] = SEQ_LEN + 1
    report = validate_examples(replace(table, "seq_len", lengths))
    assert f"seq_len is in [0, {SEQ_LEN}]" in failed(report)
    seconds = table.column("request_time_ms").to_numpy() // 1000
    report = validate_examples(replace(table, "request_time_ms", seconds))
    assert "request_time_ms is Unix milliseconds in the plausible window" in failed(report)


def test_wrong_list_sizes_fail_the_type_check():
    table = good_examples(n=20)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(20 * 8, np.float32)), 8)
    table = table.set_column(table.column_names.index("user_batch_emb"), "user_batch_emb",
                             pa.array(emb.to_pylist(), pa.list_(pa.float32())))
    report = validate_examples(table)
    assert f"user_batch_emb has type fixed_size_list<item: float>[{USER_EMB_DIM}]" in failed(
        report)


def test_nan_user_embeddings_fail():
    table = good_examples(n=20)
    column = table.column("user_batch_emb").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False).copy()
    flat[3] = np.nan
    emb = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), USER_EMB_DIM)
    table = table.set_column(table.column_names.index("user_batch_emb"), "user_batch_emb", emb)
    assert failed(validate_examples(table)) == {"user_batch_emb is finite"}


def test_helper_columns_match_a_hand_computation():
    table = good_examples(n=40)
    helpers = example_helper_columns(table, SEQ_LEN)
    stamps = np.stack(table.column("seq_timestamps_ms").to_numpy(zero_copy_only=False))
    lengths = table.column("seq_len").to_numpy()
    request = table.column("request_time_ms").to_numpy()
    for row in range(40):
        diff = helpers["max_seq_ts_minus_request"][row]
        if lengths[row] == 0:
            assert np.isnan(diff)
        else:
            assert diff == stamps[row, : lengths[row]].max() - request[row]
    for name in ("seq_padding_violations", "seq_slot_violations", "seq_order_violations",
                 "label_outcome_mismatch", "user_emb_non_finite"):
        assert helpers[name].shape == (40,) and not helpers[name].any(), name
    # the label helper counts, per row, the heads whose label disagrees with the outcome
    outcome = table.column("outcome").to_numpy()
    clicks = table.column("label_click").to_numpy()
    assert clicks.tolist() == (outcome == int(ActionType.CLICK)).astype(np.int8).tolist()
    flipped = replace(table, "label_click", np.where(np.arange(40) == 5, 1 - clicks, clicks))
    mismatch = example_helper_columns(flipped, SEQ_LEN)["label_outcome_mismatch"]
    assert mismatch.tolist() == [int(row == 5) for row in range(40)]


def test_engagement_counter_columns_are_accepted_and_checked():
    table = good_examples(n=50)
    counts = np.tile(np.array([[10, 3, 2, 1]], np.int32), (table.num_rows, 1))
    for name in ("item_counts", "user_counts"):
        table = table.append_column(name, pa.FixedSizeListArray.from_arrays(
            pa.array(counts.ravel()), 4))
    assert validate_examples(table).success
    counts = counts.copy()  # Arrow may share the buffer of the columns above
    counts[7] = [2, 3, 0, 0]  # more clicks than impressions
    bad = table.set_column(table.schema.get_field_index("item_counts"), "item_counts",
                           pa.FixedSizeListArray.from_arrays(pa.array(counts.ravel()), 4))
    report = validate_examples(bad)
    assert not report.success
    failed = [c for c in report.checks if not c.success]
    assert [c.name for c in failed] == [
        "item_counts are counts: non-negative, clicks + saves + hides <= impressions"]
    assert failed[0].examples[0]["row"] == 7
