"""Run the Typer app so that user mistakes print one line instead of a traceback."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from transact.errors import UserError

_err = Console(stderr=True)


def run_cli(app: typer.Typer, debug: bool = False) -> int:
    try:
        app(standalone_mode=False)
    except UserError as err:
        if debug:
            raise
        _err.print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    except typer.Abort:
        _err.print("aborted")
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        raise
    return 0
