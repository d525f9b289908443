"""Run the Typer app so that user mistakes print one line instead of a traceback."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from transact.errors import UserError

_err = Console(stderr=True)


def run_cli(app: typer.Typer, debug: bool = False) -> int:
    """Run ``app``; return the process exit code.

    ``UserError`` (bad input, failed validation) → its message on one line, exit 2. Usage errors
    (a bad option or argument) → the command-line parser's own message and its exit code.
    """
    try:
        app(standalone_mode=False)
    except UserError as err:
        if debug:
            raise
        _err.print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    except (typer.Abort, KeyboardInterrupt):
        _err.print("aborted")
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as err:  # usage errors: bad options, arguments
        show = getattr(err, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(err, "exit_code", 2))
    return 0
