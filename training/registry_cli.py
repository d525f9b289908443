"""``transact registry ...``: show versions, promote, roll back, alias history.

Thin callers of :class:`transact.registry.ModelRegistry`; the registry's location comes from
``--root`` / ``--profile`` / ``--tracking-uri`` (defaults: :class:`RegistryConfig`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

app = typer.Typer(help="The model registry: versions, champion/previous aliases, history.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

RootOpt = typer.Option(None, "--root", help="registry directory (embedded SQLite + artifacts)")
ProfileOpt = typer.Option(None, "--profile", help="embedded | production (PostgreSQL)")
UriOpt = typer.Option(None, "--tracking-uri", help="override the tracking/registry database")
ConfigOpt = typer.Option(None, "--config", help="RegistryConfig as JSON/YAML")


def _registry(config: Path | None, root: str | None, profile: str | None,
              tracking_uri: str | None):  # noqa: ANN202 - lazy import
    from transact.config import resolve_config
    from transact.registry import ModelRegistry, RegistryConfig

    return ModelRegistry(resolve_config(RegistryConfig, config, {
        "root": root, "profile": profile, "tracking_uri": tracking_uri}))


@app.command()
def show(config: Path | None = ConfigOpt, root: str | None = RootOpt,
         profile: str | None = ProfileOpt, tracking_uri: str | None = UriOpt) -> None:
    """Every version with its stage, gate decision and aliases, as JSON."""
    from transact.registry import CHAMPION, PREVIOUS

    registry = _registry(config, root, profile, tracking_uri)
    aliases = {CHAMPION: registry.get_alias(CHAMPION), PREVIOUS: registry.get_alias(PREVIOUS)}
    rows = []
    for version in registry.versions():
        tags = registry.version_tags(version)
        rows.append({"version": version, "stage": tags.get("stage"),
                     "gate": tags.get("gate.decision"), "reason": tags.get("gate.reason"),
                     "aliases": [a for a, v in aliases.items() if v == version]})
    typer.echo(json.dumps({"model": registry.cfg.model_name, "aliases": aliases,
                           "versions": rows}, indent=1))


@app.command()
def promote(version: str = typer.Argument(..., help="version to make champion"),
            reason: str = typer.Option("manual promotion", help="recorded in the history"),
            config: Path | None = ConfigOpt, root: str | None = RootOpt,
            profile: str | None = ProfileOpt, tracking_uri: str | None = UriOpt) -> None:
    """Make VERSION the champion by hand (the old champion becomes ``previous``)."""
    registry = _registry(config, root, profile, tracking_uri)
    events = registry.promote(version, reason)
    typer.echo(json.dumps([e.__dict__ for e in events], indent=1))


@app.command()
def rollback(reason: str = typer.Option("rollback", help="recorded in the history"),
             config: Path | None = ConfigOpt, root: str | None = RootOpt,
             profile: str | None = ProfileOpt, tracking_uri: str | None = UriOpt) -> None:
    """Point ``champion`` back at ``previous``."""
    registry = _registry(config, root, profile, tracking_uri)
    events = registry.rollback(reason)
    typer.echo(json.dumps([e.__dict__ for e in events], indent=1))


@app.command()
def history(config: Path | None = ConfigOpt, root: str | None = RootOpt,
            profile: str | None = ProfileOpt, tracking_uri: str | None = UriOpt) -> None:
    """Every alias move, oldest first."""
    registry = _registry(config, root, profile, tracking_uri)
    for event in registry.alias_history():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.at_ms / 1000))
        typer.echo(f"{when}Z  {event.alias:9s} {event.previous_version or '-':>4s} -> "
                   f"{event.version or '-':<4s} {event.reason}")
