"""Serving log, join with actions, and every metric on hand-made logs with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from monitoring.config import MonitoringConfig, MonitoringConfigError
from monitoring.logs import (
    ParquetServingLog,
    ServingLogBuffer,
    join_actions,
    rows_from_rank_answer,
    serving_log_table,
)
from monitoring.metrics import (
    catalogue_coverage,
    decay_curve,
    diversity_by_window,
    engagement_by_window,
    intra_list_diversity,
    latest_positive_items,
    promotion_times,
    rabbit_hole_similarity,
    topic_entropy,
)
from transact.config import resolve_config
from transact.registry import AliasEvent
from transact.schema import DAY_MS, ActionType

CLICK, SAVE, HIDE, SKIP = (int(ActionType.CLICK), int(ActionType.SAVE), int(ActionType.HIDE),
                           int(ActionType.SKIP))


def shown_rows(rows: list[tuple[int, int, int, int, int, str]]) -> pa.Table:
    """(request_id, user_id, item_id, position, request_time_ms, version) → a log table."""
    r = np.array([x[:5] for x in rows], np.int64)
    n = len(rows)
    return serving_log_table({
        "request_id": r[:, 0], "user_id": r[:, 1], "item_id": r[:, 2],
        "position": r[:, 3].astype(np.int32), "score_click": np.full(n, 0.1, np.float32),
        "score_save": np.full(n, 0.05, np.float32), "score_hide": np.full(n, 0.01, np.float32),
        "utility": np.zeros(n, np.float32), "model_version": [x[5] for x in rows],
        "request_time_ms": r[:, 4], "surface": ["homefeed"] * n})


def events_frame(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """(user_id, item_id, action_type, timestamp_ms)."""
    return pd.DataFrame(rows, columns=["user_id", "item_id", "action_type", "timestamp_ms"])


def test_parquet_log_is_durable_append_only_and_filters_by_time(tmp_path: Path) -> None:
    log = ParquetServingLog(tmp_path / "log")
    answer = {"user_id": 7, "model_version": "v1", "request_time_ms": 1_000,
              "items": [{"item_id": 3, "utility": 0.5, "scores": {"click": .2, "save": .1,
                                                                   "hide": .0}},
                        {"item_id": 9, "utility": 0.1, "scores": {"click": .1, "save": .0,
                                                                   "hide": .0}}]}
    buffer = ServingLogBuffer(log, flush_rows=3)
    buffer.add(rows_from_rank_answer(answer, request_id=1))
    assert log.read().num_rows == 0  # below flush_rows: still pending
    buffer.add(rows_from_rank_answer({**answer, "request_time_ms": 5_000}, request_id=2))
    assert log.read().num_rows == 4
    buffer.add(rows_from_rank_answer({**answer, "request_time_ms": 9_000}, request_id=3))
    buffer.flush()
    table = log.read()
    assert table.num_rows == 6
    assert table.column("position").to_pylist()[:2] == [0, 1]
    assert table.column("item_id").to_pylist()[:2] == [3, 9]
    assert log.read(start_ms=5_000, end_ms=9_000).column("request_id").to_pylist() == [2, 2]
    assert not list((tmp_path / "log").glob(".*.tmp"))  # no temporary file left
    assert len(list((tmp_path / "log").glob("part-*.parquet"))) == 2


def test_join_attributes_actions_to_the_latest_showing_within_the_window() -> None:
    shown = shown_rows([(1, 1, 10, 0, 0, "v1"), (1, 1, 11, 1, 0, "v1"),
                        (2, 1, 10, 0, 5_000, "v1"), (3, 2, 10, 0, 0, "v1")])
    events = events_frame([
        (1, 11, CLICK, 100),      # request 1, item 11
        (1, 10, SAVE, 6_000),     # item 10 shown in 1 and 2: the latest showing (2)
        (2, 10, HIDE, 20_000),    # outside a 10 s window: dropped
        (1, 11, SKIP, 200),       # skips add nothing
        (3, 10, CLICK, 100),      # a user never shown the item
    ])
    joined = join_actions(shown, events, attribution_window_ms=10_000)
    assert joined["clicked"].tolist() == [False, True, False, False]
    assert joined["saved"].tolist() == [False, False, True, False]
    assert not joined["hidden"].any()
    # an action before any showing is not attributed
    early = join_actions(shown, events_frame([(2, 10, HIDE, -1)]), 10_000)
    assert not early["hidden"].any()


def test_engagement_rates_per_impression_and_per_request() -> None:
    # window 0: request 1 (4 items: 1 click, 1 save), request 2 (4 items: 1 hide)
    # window 1 (day 1): request 3 (2 items: nothing), model v2
    shown = shown_rows([(1, 1, i, i, 0, "v1") for i in range(4)]
                       + [(2, 2, i, i, 10, "v1") for i in range(4)]
                       + [(3, 1, i, i, DAY_MS, "v2") for i in range(2)])
    events = events_frame([(1, 0, CLICK, 1), (1, 1, SAVE, 2), (2, 3, HIDE, 11)])
    rates = engagement_by_window(join_actions(shown, events), DAY_MS)
    first = rates.iloc[0]
    assert (first.window_start_ms, first.model_version) == (0, "v1")
    assert (first.impressions, first.requests) == (8, 2)
    assert first.click_rate == pytest.approx(1 / 8)
    assert first.save_rate == pytest.approx(1 / 8)
    assert first.hide_rate == pytest.approx(1 / 8)
    assert first.engagement_rate == pytest.approx(2 / 8)
    assert first.click_per_request == pytest.approx(1 / 2)
    assert first.hide_per_request == pytest.approx(1 / 2)
    assert first.engaged_request_rate == pytest.approx(1 / 2)
    second = rates.iloc[1]
    assert (second.window_start_ms, second.model_version, second.impressions) == (DAY_MS, "v2",
                                                                                 2)
    assert second.engagement_rate == 0.0


def test_decay_by_model_age_from_the_alias_history() -> None:
    history = [AliasEvent("champion", "v1", 0, "first"),
               AliasEvent("previous", "v1", 2 * DAY_MS, "moved"),
               AliasEvent("champion", "v2", 2 * DAY_MS, "retrained"),
               AliasEvent("champion", "v1", 5 * DAY_MS, "rollback")]
    promoted = promotion_times(history)
    assert promoted == {"v1": 0, "v2": 2 * DAY_MS}  # the first promotion counts
    # v1: age 0 → 2 of 4 engaged; age 1 → 1 of 4: relative 0.5. v2: age 0 → 1 of 2
    shown = shown_rows([(1, 1, i, i, 100, "v1") for i in range(4)]
                       + [(2, 1, i, i, DAY_MS + 100, "v1") for i in range(4)]
                       + [(3, 1, i, i, 2 * DAY_MS + 100, "v2") for i in range(2)]
                       + [(4, 1, 9, 0, 100, "unknown")])
    events = events_frame([(1, 0, CLICK, 101), (1, 1, SAVE, 102), (1, 2, CLICK, DAY_MS + 101),
                           (1, 0, CLICK, 2 * DAY_MS + 101)])
    curve = decay_curve(join_actions(shown, events), promoted, bucket_days=1.0)
    assert curve[["model_version", "age_days"]].values.tolist() == [["v1", 0.0], ["v1", 1.0],
                                                                     ["v2", 0.0]]
    assert curve["engagement_rate"].tolist() == pytest.approx([0.5, 0.25, 0.5])
    assert curve["engagement_rate_rel"].tolist() == pytest.approx([1.0, 0.5, 1.0])


def test_intra_list_diversity_known_answers() -> None:
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    same = np.stack([e1, e1 * 3, e1])                     # all parallel: 0
    orthogonal = np.stack([e1, e2])                       # one pair, cos 0: 1
    opposite_and_orthogonal = np.stack([e1, -e1, e2])     # pairs: 2, 1, 1 → 4/3
    padded = np.stack([e1, e2, np.zeros(2)])
    ild = intra_list_diversity(np.stack([same, np.vstack([orthogonal, [[0, 0]]]),
                                         opposite_and_orthogonal, padded]),
                               valid=np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0]],
                                              bool))
    assert ild.tolist() == pytest.approx([0.0, 1.0, 4 / 3, 1.0])
    assert math.isnan(intra_list_diversity(np.ones((1, 1, 2)))[0])  # one item: no pair


def test_topic_entropy_and_coverage_known_answers() -> None:
    assert topic_entropy(np.array([3, 3, 3])) == 0.0
    assert topic_entropy(np.array([1, 2])) == pytest.approx(1.0)
    assert topic_entropy(np.array([0, 1, 2, 3])) == pytest.approx(2.0)
    assert topic_entropy(np.array([0, 0, 1, 2])) == pytest.approx(1.5)
    assert catalogue_coverage(np.array([1, 1, 2, 5]), 10) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        catalogue_coverage(np.array([1]), 0)


def test_rabbit_hole_similarity_uses_latest_positive_actions_before_the_request() -> None:
    events = events_frame([(1, 10, CLICK, 1), (1, 11, SAVE, 2), (1, 12, HIDE, 3),
                           (1, 13, CLICK, 50), (2, 10, SKIP, 1)])
    items, valid = latest_positive_items(events, np.array([1, 1, 2]), np.array([10, 100, 10]),
                                         n=2)
    assert items.tolist() == [[11, 10], [13, 11], [0, 0]]  # newest first; hides, skips out
    assert valid.tolist() == [[True, True], [True, True], [False, False]]
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    slate = np.stack([[e1, e1], [e1, e2]])
    recent = np.stack([[e1, e1], [e1, e1]])
    sims = rabbit_hole_similarity(slate, recent)
    assert sims.tolist() == pytest.approx([1.0, 0.5])
    assert math.isnan(rabbit_hole_similarity(slate[:1], recent[:1],
                                             recent_valid=np.zeros((1, 2), bool))[0])


def test_diversity_by_window_on_a_hand_made_log() -> None:
    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 0], [-1, 0]], np.float64)  # ids 0..4
    topics = np.array([-1, 0, 1, 0, 2])
    # request 1 (user 1, day 0): items 1, 3 (parallel: ILD 0, topic 0 twice)
    # request 2 (user 2, day 0): items 1, 2 (orthogonal: ILD 1)
    # request 3 (user 1, day 1): items 1, 4 (opposite: ILD 2); user 1 saved item 3 at t=5
    shown = shown_rows([(1, 1, 1, 0, 0, "v1"), (1, 1, 3, 1, 0, "v1"),
                        (2, 2, 1, 0, 0, "v1"), (2, 2, 2, 1, 0, "v1"),
                        (3, 1, 1, 0, DAY_MS, "v1"), (3, 1, 4, 1, DAY_MS, "v1")])
    events = events_frame([(1, 3, SAVE, 5)])
    frame = diversity_by_window(join_actions(shown, events), vectors, topics, catalogue_size=4,
                                window_ms=DAY_MS, events=events, rabbit_hole_actions=5)
    day0, day1 = frame.iloc[0], frame.iloc[1]
    assert day0.intra_list_diversity == pytest.approx(0.5)
    assert day0.topic_entropy == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    assert day0.catalogue_coverage == pytest.approx(3 / 4)
    assert math.isnan(day0.rabbit_hole_similarity)  # nobody had acted before
    assert day1.intra_list_diversity == pytest.approx(2.0)
    assert day1.topic_entropy == pytest.approx(1.0)
    assert day1.catalogue_coverage == pytest.approx(2 / 4)
    # slate (e1, -e1) vs the saved item 3 (e1): cos 1 and -1 → 0
    assert day1.rabbit_hole_similarity == pytest.approx(0.0)


def test_monitoring_config_defaults_file_and_overrides(tmp_path: Path) -> None:
    cfg = resolve_config(MonitoringConfig)
    assert cfg.window_ms == 86_400_000 and cfg.alerts.diversity_drop == 0.05
    path = tmp_path / "mon.yaml"
    path.write_text("window_ms: 3600000\nalerts:\n  diversity_drop: 0.2\n")
    cfg = resolve_config(MonitoringConfig, path, {"alerts.min_impressions": 5})
    assert (cfg.window_ms, cfg.alerts.diversity_drop, cfg.alerts.min_impressions) == (
        3_600_000, 0.2, 5)
    with pytest.raises(MonitoringConfigError):
        resolve_config(MonitoringConfig, None, {"alerts.diversity_drop": 0.0})
    with pytest.raises(MonitoringConfigError):
        resolve_config(MonitoringConfig, None, {"metrics_url": "mysql://x"})
