"""``transact serve``: start the Ray Serve ranking endpoint (a thin caller of
:func:`serving.app.run_server`)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from serving.config import ServingConfig
from transact.config import resolve_config


def serve(
    config: Path | None = typer.Option(None, "--config", help="ServingConfig as JSON/YAML"),
    model_uri: str | None = typer.Option(
        None, help="model artifact directory or models:/<name>@<alias>"),
    production: bool = typer.Option(False, "--production",
                                    help="read features from the production profile (Redis)"),
    features_root: str | None = typer.Option(None, help="feature store root directory"),
    item_vectors_dir: str | None = typer.Option(
        None, help="examples directory with the model's item vectors (default: the "
                   "artifact's metadata.examples_dir)"),
    host: str | None = typer.Option(None, help="listen address (default 127.0.0.1)"),
    port: int | None = typer.Option(None, help="HTTP port (default 8000)"),
    admin_token: str | None = typer.Option(None, help="token of the /admin routes"),
    poll_interval_s: float | None = typer.Option(
        None, help="re-resolve model_uri every N seconds (0 = only on /admin/reload)"),
    num_replicas: int | None = typer.Option(None, help="replicas of the ranking deployment"),
    until_ready: bool = typer.Option(False, "--until-ready",
                                     help="exit once the endpoint answers (for scripts)"),
) -> None:
    """Serve POST /rank and POST /events on 127.0.0.1 until interrupted (Ctrl-C)."""
    from serving.app import run_server, stop_server

    cfg = resolve_config(ServingConfig, config, {
        "model_uri": model_uri, "profile": "production" if production else None,
        "features_root": features_root, "item_vectors_dir": item_vectors_dir, "host": host,
        "port": port, "admin_token": admin_token, "poll_interval_s": poll_interval_s,
        "num_replicas": num_replicas,
    })
    from serving.model_source import resolve_model_uri

    resolve_model_uri(cfg.model_uri)  # a wrong path fails here (exit 2), before Ray starts
    url = run_server(cfg)
    typer.echo(json.dumps({"url": url, "model_uri": cfg.model_uri, "profile": cfg.profile,
                           "routes": ["POST /rank", "POST /events", "GET /healthz",
                                      "GET /readyz", "GET /metrics"]}))
    if until_ready:
        stop_server()
        return
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server()
