"""``transact`` — the platform's single command line.

Each stage owns a Typer sub-app in its own package (``features/cli.py``, ``training/cli.py``...);
this module only composes them. User mistakes (bad paths, malformed files, failed validation)
surface as one readable line and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from transact.runtime import quiet_telemetry

quiet_telemetry()

app = typer.Typer(
    name="transact",
    help="Realtime recommendation ranking platform (TransAct + DCN v2).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from transact_cli import data_cmds

    app.add_typer(data_cmds.app, name="data")
    from features.cli import app as features_app

    app.add_typer(features_app, name="features")
    from training.cli import app as training_app

    app.add_typer(training_app, name="train")
    from training.registry_cli import app as registry_app

    app.add_typer(registry_app, name="registry")
    from serving.cli import serve

    app.command("serve")(serve)
    from monitoring.cli import app as monitoring_app

    app.add_typer(monitoring_app, name="monitor")
    from transact_cli import demo

    app.command("demo")(demo.demo)


_register()


def main() -> None:  # pragma: no cover - console entry
    from transact_cli.errors import run_cli

    sys.exit(run_cli(app, os.environ.get("TRANSACT_DEBUG") == "1"))
