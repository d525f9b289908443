"""Alert thresholds, the metric store (SQLite; PostgreSQL under ``services``), Prometheus."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from monitoring.alerts import MonitoringMetrics, check_alerts
from monitoring.config import AlertThresholds, MonitoringConfig
from monitoring.logs import PostgresServingLog, serving_log_table
from monitoring.pipeline import ItemCatalogue, run_monitoring
from monitoring.store import MetricStore
from transact.schema import DAY_MS, ActionType

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def windows_frame(rows: list[tuple[int, str, int, float, float]]) -> pd.DataFrame:
    """(window index, version, impressions, engagement_rate, intra_list_diversity)."""
    return pd.DataFrame([{"window_start_ms": w * DAY_MS, "model_version": v, "impressions": n,
                          "engagement_rate": e, "intra_list_diversity": d}
                         for w, v, n, e, d in rows])


def test_decay_alert_fires_just_beyond_the_threshold() -> None:
    th = AlertThresholds(engagement_decay_drop=0.2, diversity_drop=0.5, min_impressions=100)
    frame = windows_frame([(0, "v1", 500, 0.10, 0.5), (1, "v1", 500, 0.081, 0.5),
                           (2, "v1", 500, 0.079, 0.5), (3, "v1", 50, 0.01, 0.5),
                           (1, "v2", 500, 0.2, 0.5), (2, "v2", 500, 0.19, 0.5)])
    alerts = check_alerts(frame, th)
    assert [(a.kind, a.model_version, a.window_start_ms) for a in alerts] == [
        ("engagement_decay", "v1", 2 * DAY_MS)]  # -19 % no, -21 % yes; 50 impressions skipped
    assert alerts[0].reference == pytest.approx(0.10)
    assert alerts[0].value == pytest.approx(0.079)
    assert "-21.0%" in alerts[0].message


def test_diversity_alert_against_the_first_windows_or_a_configured_baseline() -> None:
    frame = windows_frame([(0, "v1", 500, 0.1, 0.60), (1, "v1", 500, 0.1, 0.40),
                           (2, "v1", 500, 0.1, 0.58), (3, "v1", 500, 0.1, 0.44)])
    th = AlertThresholds(diversity_drop=0.05, baseline_windows=2, min_impressions=1,
                         diversity_metrics=["intra_list_diversity"])
    # baseline = mean(0.60, 0.40) = 0.50; bound 0.475: only 0.44 and 0.40 break it
    got = [(a.window_start_ms // DAY_MS, a.kind) for a in check_alerts(frame, th)]
    assert got == [(1, "diversity_drop"), (3, "diversity_drop")]
    th.diversity_baselines = {"intra_list_diversity": 0.59}  # bound 0.5605
    got = [a.window_start_ms // DAY_MS for a in check_alerts(frame, th)]
    assert got == [1, 3]
    th.diversity_baselines = {"intra_list_diversity": 0.45}
    assert [a.window_start_ms // DAY_MS for a in check_alerts(frame, th)] == [1]


def test_rabbit_hole_rise_alerts() -> None:
    frame = windows_frame([(0, "v1", 500, 0.1, 0.5), (1, "v1", 500, 0.1, 0.5)])
    frame["rabbit_hole_similarity"] = [0.30, 0.329]
    assert check_alerts(frame, AlertThresholds(rabbit_hole_rise=0.1)) == []
    frame["rabbit_hole_similarity"] = [0.30, 0.331]
    (alert,) = check_alerts(frame, AlertThresholds(rabbit_hole_rise=0.1))
    assert (alert.kind, alert.window_start_ms) == ("rabbit_hole", DAY_MS)


def _store_round_trip(store: MetricStore) -> None:
    frame = windows_frame([(0, "v1", 500, 0.10, 0.5), (1, "v1", 500, 0.05, 0.5)])
    assert store.write_windows(frame, DAY_MS) == 6
    store.write_windows(frame.assign(engagement_rate=[0.10, 0.07]), DAY_MS)  # upsert
    wide = store.windows()
    assert wide["engagement_rate"].tolist() == pytest.approx([0.10, 0.07])
    assert wide["impressions"].tolist() == [500, 500]
    th = AlertThresholds(engagement_decay_drop=0.2, min_impressions=1)
    first = store.add_alerts(check_alerts(wide, th))
    again = store.add_alerts(check_alerts(wide, th))
    assert len(first) == 1 and again == []  # the same alert is written once
    (stored,) = store.alerts()
    assert stored.kind == "engagement_decay" and stored.alert_id is not None
    decay = pd.DataFrame({"model_version": ["v1", "v1"], "age_days": [0.0, 1.0],
                          "engagement_rate": [0.1, float("nan")]})
    store.write_decay(decay)
    got = store.decay()
    assert got["age_days"].tolist() == [0.0, 1.0]
    assert got["engagement_rate"].iloc[0] == pytest.approx(0.1)
    assert np.isnan(got["engagement_rate"].iloc[1])


def test_sqlite_store_round_trip(tmp_path: Path) -> None:
    _store_round_trip(MetricStore(f"sqlite:///{tmp_path}/m.db"))



@pytest.mark.services
def test_postgres_store_and_serving_log_round_trip() -> None:
    import psycopg

    schema = f"mon_test_{uuid.uuid4().hex[:10]}"
    try:
        _store_round_trip(MetricStore(PG_URL, schema))
        log = PostgresServingLog(PG_URL, schema)
        log.create()
        n = 3
        log.append(serving_log_table({
            "request_id": np.array([1, 1, 2]), "user_id": np.array([5, 5, 6]),
            "item_id": np.array([7, 8, 7]), "position": np.array([0, 1, 0], np.int32),
            "score_click": np.full(n, 0.5, np.float32), "score_save": np.zeros(n, np.float32),
            "score_hide": np.zeros(n, np.float32), "utility": np.ones(n, np.float32),
            "model_version": ["v1"] * n, "request_time_ms": np.array([10, 10, 20]),
            "surface": ["homefeed"] * n}))
        got = log.read(start_ms=0, end_ms=15)
        assert got.column("item_id").to_pylist() == [7, 8]
        assert log.read().num_rows == 3
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_pipeline_writes_alerts_and_prometheus_metrics(tmp_path: Path) -> None:
    # 2 days of one version: day 0 half the items engaged, day 1 none → a decay alert
    rows = []
    request = 0
    for day in range(2):
        for user in range(1, 11):
            request += 1
            for pos in range(4):
                rows.append((request, user, pos + 1, pos, day * DAY_MS + user * 1000))
    r = np.array(rows)
    n = len(r)
    shown = serving_log_table({
        "request_id": r[:, 0], "user_id": r[:, 1], "item_id": r[:, 2],
        "position": r[:, 3].astype(np.int32), "score_click": np.zeros(n, np.float32),
        "score_save": np.zeros(n, np.float32), "score_hide": np.zeros(n, np.float32),
        "utility": np.zeros(n, np.float32), "model_version": ["v1"] * n,
        "request_time_ms": r[:, 4], "surface": ["homefeed"] * n})
    day0 = r[(r[:, 4] < DAY_MS) & (r[:, 3] < 2)]
    events = pd.DataFrame({"user_id": day0[:, 1], "item_id": day0[:, 2],
                           "action_type": int(ActionType.CLICK), "timestamp_ms": day0[:, 4] + 1})
    catalogue = ItemCatalogue(np.eye(5, 3)[[0, 0, 1, 2, 0]] + np.eye(5, 3)[[0, 1, 0, 1, 2]],
                              np.array([-1, 0, 1, 1, 2]))
    cfg = MonitoringConfig(metrics_url=f"sqlite:///{tmp_path}/m.db")
    cfg.alerts.min_impressions = 10
    prom = MonitoringMetrics.create()
    report = run_monitoring(cfg, shown, events, catalogue, {"v1": 0}, prometheus=prom)
    assert report.windows["engagement_rate"].tolist() == pytest.approx([0.5, 0.0])
    assert [a.kind for a in report.new_alerts] == ["engagement_decay"]
    assert report.headline["alerts"] == 1 and report.headline["engagement_rate"] == 0.0
    assert report.headline["worst_decay_ratio"] == 0.0
    text = generate_latest(prom.registry).decode()
    assert 'transact_monitoring_alerts_total{kind="engagement_decay"} 1.0' in text
    assert ('transact_monitoring_alert_active{kind="engagement_decay",'
            'metric="engagement_rate",model_version="v1"} 1.0') in text
    assert 'transact_monitoring_engagement_decay_ratio{model_version="v1"} 0.0' in text
    # a second pass over the same data writes no new alert
    again = run_monitoring(cfg, shown, events, catalogue, {"v1": 0}, prometheus=prom)
    assert again.new_alerts == []
