"""``MonitoringConfig``: the one source of monitoring defaults (file + flag overrides through
:func:`transact.config.resolve_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transact.errors import UserError
from transact.schema import DAY_MS, HOUR_MS

__all__ = ["AlertThresholds", "MonitoringConfig", "MonitoringConfigError"]


class MonitoringConfigError(UserError):
    """A monitoring setting is out of range."""


@dataclass
class AlertThresholds:
    """When a metric has dropped far enough to alert (relative drops, 0.1 = 10 %).

    * ``engagement_decay_drop``: a version's engagement rate (``decay_metric``) in its latest
      window vs its first window after promotion.
    * ``diversity_drop``: a diversity metric in the latest window vs its baseline (the mean of
      the first ``baseline_windows`` windows, or ``diversity_baselines`` when given).
    * ``rabbit_hole_rise``: the rabbit-hole similarity rising by more than this (higher = users
      see more of what they just did).
    * ``min_impressions``: windows with fewer impressions are not judged (noise).
    """

    engagement_decay_drop: float = 0.15
    decay_metric: str = "engagement_rate"
    diversity_drop: float = 0.05
    diversity_metrics: list[str] = field(
        default_factory=lambda: ["intra_list_diversity", "topic_entropy", "catalogue_coverage"])
    rabbit_hole_rise: float = 0.10
    baseline_windows: int = 1
    diversity_baselines: dict[str, float] = field(default_factory=dict)
    min_impressions: int = 200


@dataclass
class MonitoringConfig:
    """Where the logs and metrics live and how windows and attribution work.

    ``metrics_url``: ``sqlite:///path.db`` (embedded) or ``postgresql://...`` (production);
    ``metrics_schema`` the PostgreSQL schema holding the tables.
    """

    serving_log_dir: str = "artifacts/monitoring/serving_log"
    metrics_url: str = "sqlite:///artifacts/monitoring/metrics.db"
    metrics_schema: str = "monitoring"
    #: length of a metrics window
    window_ms: int = DAY_MS
    #: an action belongs to a showing at most this long before it
    attribution_window_ms: int = HOUR_MS
    #: the rabbit-hole measure compares a slate to the user's latest N positive actions
    rabbit_hole_actions: int = 10
    #: width of a model-age bucket of the decay curves, in days
    decay_bucket_days: float = 1.0
    #: the catalogue size for coverage (0: the number of items with a vector)
    catalogue_size: int = 0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8050
    alerts: AlertThresholds = field(default_factory=AlertThresholds)

    def validate(self) -> MonitoringConfig:
        if self.window_ms <= 0 or self.attribution_window_ms <= 0:
            raise MonitoringConfigError("window_ms and attribution_window_ms must be > 0")
        if self.rabbit_hole_actions < 1:
            raise MonitoringConfigError("rabbit_hole_actions must be >= 1")
        if self.decay_bucket_days <= 0:
            raise MonitoringConfigError("decay_bucket_days must be > 0")
        if not self.metrics_url.startswith(("sqlite:///", "postgresql://")):
            raise MonitoringConfigError(f"metrics_url must be sqlite:///PATH or "
                                        f"postgresql://..., got {self.metrics_url!r}")
        a = self.alerts
        for name in ("engagement_decay_drop", "diversity_drop", "rabbit_hole_rise"):
            if not 0.0 < getattr(a, name) < 10.0:
                raise MonitoringConfigError(f"alerts.{name} must be in (0, 10), got "
                                            f"{getattr(a, name)}")
        if a.baseline_windows < 1:
            raise MonitoringConfigError("alerts.baseline_windows must be >= 1")
        return self
