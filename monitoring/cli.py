"""``transact monitor compute | alerts | dashboard`` — thin callers of the monitoring library."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from monitoring.config import MonitoringConfig
from transact.config import resolve_config

app = typer.Typer(help="Engagement decay, diversity, alerts and the dashboard.",
                  no_args_is_help=True)

_CONFIG = typer.Option(None, "--config", help="MonitoringConfig as JSON/YAML")
_URL = typer.Option(None, help="sqlite:///PATH (embedded) or postgresql://... (production)")


def _cfg(config: Path | None, **overrides: object) -> MonitoringConfig:
    return resolve_config(MonitoringConfig, config, overrides)


@app.command()
def compute(
    events: Path = typer.Argument(..., help="dataset directory whose events/ hold the actions"),
    items: Path = typer.Option(..., help="dataset directory with items.parquet (vectors, "
                                         "topics)"),
    log_dir: str | None = typer.Option(None, help="serving log directory (Parquet)"),
    registry_root: Path | None = typer.Option(
        None, help="embedded MLflow registry root: promotion times from the alias history"),
    metrics_url: str | None = _URL,
    config: Path | None = _CONFIG,
) -> None:
    """Join the serving log with the actions, compute and store the metrics, write alerts."""
    from monitoring.logs import ParquetServingLog
    from monitoring.pipeline import ItemCatalogue, run_monitoring
    from transact.data.dataset import read_events

    cfg = _cfg(config, serving_log_dir=log_dir, metrics_url=metrics_url)
    promoted: dict[str, int] = {}
    if registry_root is not None:
        from monitoring.metrics import promotion_times
        from transact.registry import ModelRegistry, RegistryConfig

        promoted = promotion_times(ModelRegistry(RegistryConfig(root=str(registry_root)))
                                   .alias_history())
    report = run_monitoring(cfg, ParquetServingLog(Path(cfg.serving_log_dir)).read(),
                            read_events(events), ItemCatalogue.from_dataset(items), promoted)
    for alert in report.new_alerts:
        typer.echo(f"ALERT {alert.kind}: {alert.message}")
    typer.echo(json.dumps(report.headline, indent=2))


@app.command()
def alerts(metrics_url: str | None = _URL, config: Path | None = _CONFIG,
           limit: int = typer.Option(50, min=1)) -> None:
    """List stored alerts, newest first."""
    from monitoring.pipeline import open_store

    for alert in open_store(_cfg(config, metrics_url=metrics_url)).alerts(limit):
        typer.echo(f"{alert.alert_id}\t{alert.kind}\t{alert.model_version}\t"
                   f"{alert.window_start_ms}\t{alert.message}")


@app.command()
def dashboard(metrics_url: str | None = _URL, config: Path | None = _CONFIG,
              port: int | None = typer.Option(None, help="port on 127.0.0.1 (default 8050)"),
              until_ready: bool = typer.Option(False, "--until-ready",
                                               help="exit once it answers (for scripts)"),
              ) -> None:
    """Serve the dashboard page and /metrics on 127.0.0.1 until interrupted."""
    from monitoring.dashboard import start_dashboard

    cfg = _cfg(config, metrics_url=metrics_url, dashboard_port=port)
    server = start_dashboard(cfg)
    typer.echo(f"dashboard at {server.url}  (Prometheus: {server.url}metrics)")
    try:
        while not until_ready and server.thread.is_alive():
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
