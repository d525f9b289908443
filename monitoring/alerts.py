"""Alerts: engagement decay and diversity drops beyond :class:`~monitoring.config.
AlertThresholds` → :class:`~monitoring.store.Alert` rows + Prometheus metrics.

Rules, over the per-window frame (one row per ``window_start_ms``, ``model_version``, with
``impressions`` and metric columns; windows with fewer than ``min_impressions`` are skipped):

* ``engagement_decay``: a version's ``decay_metric`` in a window is below
  ``(1 - engagement_decay_drop)`` × its value in the version's first judged window;
* ``diversity_drop``: a diversity metric is below ``(1 - diversity_drop)`` × its baseline (the
  configured ``diversity_baselines[metric]``, else the mean over the first ``baseline_windows``
  judged windows of all versions);
* ``rabbit_hole``: ``rabbit_hole_similarity`` is above ``(1 + rabbit_hole_rise)`` × its
  baseline (same rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.config import AlertThresholds
from monitoring.store import Alert

__all__ = ["MonitoringMetrics", "check_alerts"]


def _judged(windows: pd.DataFrame, thresholds: AlertThresholds) -> pd.DataFrame:
    if "impressions" in windows.columns:
        windows = windows[windows["impressions"].fillna(0) >= thresholds.min_impressions]
    return windows.sort_values(["window_start_ms", "model_version"])


def _baseline(judged: pd.DataFrame, metric: str, thresholds: AlertThresholds) -> float:
    if metric in thresholds.diversity_baselines:
        return float(thresholds.diversity_baselines[metric])
    values = judged.dropna(subset=[metric])
    first = sorted(values["window_start_ms"].unique())[: thresholds.baseline_windows]
    return float(values[values["window_start_ms"].isin(first)][metric].mean())


def check_alerts(windows: pd.DataFrame, thresholds: AlertThresholds) -> list[Alert]:
    """Every window that breaks a rule, as :class:`Alert` (not yet stored)."""
    judged = _judged(windows, thresholds)
    alerts: list[Alert] = []
    metric = thresholds.decay_metric
    if metric in judged.columns:
        for version, group in judged.groupby("model_version"):
            group = group.dropna(subset=[metric])
            if len(group) < 2:
                continue
            reference = float(group[metric].iloc[0])
            floor = reference * (1.0 - thresholds.engagement_decay_drop)
            for row in group.iloc[1:].itertuples(index=False):
                value = float(getattr(row, metric))
                if value < floor:
                    alerts.append(Alert(
                        "engagement_decay", str(version), int(row.window_start_ms), metric,
                        value, reference, thresholds.engagement_decay_drop,
                        f"{metric} of {version} fell to {value:.4f} from {reference:.4f} "
                        f"({value / reference - 1:+.1%}; threshold "
                        f"-{thresholds.engagement_decay_drop:.0%})"))
    rules = [(m, "diversity_drop", -thresholds.diversity_drop)
             for m in thresholds.diversity_metrics]
    rules.append(("rabbit_hole_similarity", "rabbit_hole", thresholds.rabbit_hole_rise))
    for name, kind, change in rules:
        if name not in judged.columns or judged[name].notna().sum() == 0:
            continue
        baseline = _baseline(judged, name, thresholds)
        if not np.isfinite(baseline) or baseline == 0:
            continue
        bound = baseline * (1.0 + change)
        for row in judged.dropna(subset=[name]).itertuples(index=False):
            value = float(getattr(row, name))
            broken = value < bound if change < 0 else value > bound
            if broken:
                alerts.append(Alert(
                    kind, str(row.model_version), int(row.window_start_ms), name, value,
                    baseline, abs(change),
                    f"{name} of {row.model_version} is {value:.4f} vs baseline {baseline:.4f} "
                    f"({value / baseline - 1:+.1%}; threshold {change:+.0%})"))
    return alerts


@dataclass
class MonitoringMetrics:
    """Prometheus metrics of monitoring, in their own registry (served at the dashboard's
    ``/metrics``):

    * ``transact_monitoring_window_metric{metric, model_version}``: the latest window's value;
    * ``transact_monitoring_engagement_decay_ratio{model_version}``: latest / first window of
      the decay metric;
    * ``transact_monitoring_alerts_total{kind}``: alerts written;
    * ``transact_monitoring_alert_active{kind, metric, model_version}``: 1 while the latest
      window of that version breaks the rule, else 0.
    """

    registry: CollectorRegistry
    window_metric: Gauge
    decay_ratio: Gauge
    alerts_total: Counter
    alert_active: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> MonitoringMetrics:
        registry = registry or CollectorRegistry()
        return cls(
            registry=registry,
            window_metric=Gauge("transact_monitoring_window_metric",
                                "Latest monitoring window value", ["metric", "model_version"],
                                registry=registry),
            decay_ratio=Gauge("transact_monitoring_engagement_decay_ratio",
                              "Engagement of the latest window / the version's first window",
                              ["model_version"], registry=registry),
            alerts_total=Counter("transact_monitoring_alerts", "Alerts written", ["kind"],
                                 registry=registry),
            alert_active=Gauge("transact_monitoring_alert_active",
                               "1 while the latest window breaks the rule",
                               ["kind", "metric", "model_version"], registry=registry),
        )

    def update(self, windows: pd.DataFrame, new_alerts: list[Alert], all_alerts: list[Alert],
               thresholds: AlertThresholds) -> None:
        """Set the gauges from the per-window frame; count ``new_alerts``; mark the alerts of
        each version's latest window active."""
        judged = _judged(windows, thresholds)
        latest: dict[str, int] = {}
        for version, group in judged.groupby("model_version"):
            row = group.iloc[-1]
            latest[str(version)] = int(row["window_start_ms"])
            for name in group.columns:
                if name in ("window_start_ms", "model_version"):
                    continue
                value = row[name]
                if isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value):
                    self.window_metric.labels(name, str(version)).set(float(value))
            metric = thresholds.decay_metric
            if metric in group.columns:
                values = group[metric].dropna()
                if len(values) and values.iloc[0] > 0:
                    self.decay_ratio.labels(str(version)).set(
                        float(values.iloc[-1] / values.iloc[0]))
        for alert in new_alerts:
            self.alerts_total.labels(alert.kind).inc()
        for alert in all_alerts:
            active = latest.get(alert.model_version) == alert.window_start_ms
            self.alert_active.labels(alert.kind, alert.metric, alert.model_version).set(
                1.0 if active else 0.0)
