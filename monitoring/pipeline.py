"""One monitoring pass: serving log + action stream → joined log → per-window engagement and
diversity, decay curves → metric store → alerts (+ Prometheus). The CLI, the demo and the
simulator call :func:`run_monitoring`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from monitoring.alerts import MonitoringMetrics, check_alerts
from monitoring.config import MonitoringConfig
from monitoring.logs import join_actions
from monitoring.metrics import decay_curve, diversity_by_window, engagement_by_window
from monitoring.store import Alert, MetricStore

__all__ = ["ItemCatalogue", "MonitoringReport", "headline_figures", "open_store",
           "run_monitoring"]


@dataclass
class ItemCatalogue:
    """Item vectors ``(n + 1, E)`` and topics ``(n + 1,)`` indexed by item id (row 0 unused)."""

    vectors: np.ndarray
    topics: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int((np.abs(self.vectors).sum(axis=1) > 0).sum())

    @classmethod
    def from_dataset(cls, dataset_dir: Path | str) -> ItemCatalogue:
        """Content vectors and topics of a dataset directory's ``items.parquet``."""
        from transact.data.dataset import item_embedding_table, read_items

        items = read_items(Path(dataset_dir))
        vectors = item_embedding_table(items)
        topics = np.full(len(vectors), -1, np.int64)
        if "topic" in items.column_names:
            got = items.column("topic").to_numpy(zero_copy_only=False)
            topics[items.column("item_id").to_numpy()] = np.nan_to_num(
                got.astype(np.float64), nan=-1).astype(np.int64)
        return cls(vectors, topics if (topics >= 0).any() else None)


@dataclass
class MonitoringReport:
    """What one pass computed and stored."""

    windows: pd.DataFrame
    decay: pd.DataFrame
    new_alerts: list[Alert] = field(default_factory=list)
    headline: dict[str, Any] = field(default_factory=dict)


def open_store(cfg: MonitoringConfig) -> MetricStore:
    return MetricStore(cfg.metrics_url, cfg.metrics_schema)


def run_monitoring(cfg: MonitoringConfig, shown: pa.Table | pd.DataFrame,
                   events: pa.Table | pd.DataFrame, catalogue: ItemCatalogue,
                   promoted_at_ms: dict[str, int] | None = None,
                   store: MetricStore | None = None,
                   prometheus: MonitoringMetrics | None = None,
                   origin_ms: int = 0) -> MonitoringReport:
    """Join ``shown`` (serving log rows) with ``events``, compute the window metrics and the
    decay curves, store them, check and store alerts, update ``prometheus``."""
    store = store or open_store(cfg)
    ev = events.to_pandas() if isinstance(events, pa.Table) else events
    joined = join_actions(shown, ev, cfg.attribution_window_ms)
    engagement = engagement_by_window(joined, cfg.window_ms, origin_ms)
    diversity = diversity_by_window(
        joined, catalogue.vectors, catalogue.topics, cfg.catalogue_size or catalogue.size,
        cfg.window_ms, ev, cfg.rabbit_hole_actions, origin_ms)
    windows = (engagement.merge(diversity, on=["window_start_ms", "model_version"], how="left")
               if len(engagement) else engagement)
    decay = decay_curve(joined, promoted_at_ms or {}, cfg.decay_bucket_days)
    store.write_windows(windows, cfg.window_ms)
    if len(decay):
        store.write_decay(decay)
    all_windows = store.windows()
    new_alerts = store.add_alerts(check_alerts(all_windows, cfg.alerts))
    if prometheus is not None:
        prometheus.update(all_windows, new_alerts, store.alerts(), cfg.alerts)
    return MonitoringReport(all_windows, store.decay(), new_alerts,
                            headline_figures(all_windows, store.decay(), store.alerts()))


def headline_figures(windows: pd.DataFrame, decay: pd.DataFrame, alerts: list[Alert]
                     ) -> dict[str, Any]:
    """The few numbers a team reads first: latest window's rates and diversity, the largest
    decay of any version, the number of alerts."""
    out: dict[str, Any] = {"windows": int(windows["window_start_ms"].nunique())
                           if len(windows) else 0, "alerts": len(alerts)}
    if len(windows):
        latest = windows[windows["window_start_ms"] == windows["window_start_ms"].max()]
        weights = latest["impressions"].fillna(0) if "impressions" in latest else None
        for name in ("click_rate", "save_rate", "hide_rate", "engagement_rate",
                     "intra_list_diversity", "topic_entropy", "catalogue_coverage",
                     "rabbit_hole_similarity"):
            if name in latest.columns and latest[name].notna().any():
                vals = latest[name].astype(float)
                ok = vals.notna()
                if weights is not None and weights[ok].sum() > 0:
                    out[name] = round(float(np.average(vals[ok], weights=weights[ok])), 4)
                else:
                    out[name] = round(float(vals[ok].mean()), 4)
    if len(decay) and "engagement_rate_rel" in decay.columns:
        rel = decay.dropna(subset=["engagement_rate_rel"])
        if len(rel):
            last = rel.sort_values("age_days").groupby("model_version").last()
            out["worst_decay_version"] = str(last["engagement_rate_rel"].idxmin())
            out["worst_decay_ratio"] = round(float(last["engagement_rate_rel"].min()), 4)
    return out
