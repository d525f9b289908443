"""Run the Typer app with the platform's exit codes (``transact.errors``).

* :class:`~transact.errors.UserError` (bad input or configuration): its message on one line,
  exit 2;
* :class:`~transact.errors.CheckFailed` (a check ran and found problems): its report, exit 1;
* :class:`~transact.errors.InternalError` (corrupt artifact, fenced processor) and any other
  exception: the message and the traceback, exit 3;
* usage errors (a bad option or argument): the parser's own message, exit 2;
* an interrupt (Ctrl-C): exit 130.

``debug`` (``TRANSACT_DEBUG=1``) re-raises everything, with its traceback.
"""

from __future__ import annotations

import traceback

import typer
from rich.console import Console
from rich.markup import escape

from transact.errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERNAL,
    EXIT_USER_ERROR,
    CheckFailed,
    UserError,
)

_err = Console(stderr=True)


def run_cli(app: typer.Typer, debug: bool = False, args: list[str] | None = None) -> int:
    """Run ``app`` on ``args`` (default: the process's arguments); return the exit code."""
    try:
        app(args=args, standalone_mode=False)
    except UserError as err:
        if debug:
            raise
        _err.print(f"[bold red]error:[/] {escape(str(err))}")
        return EXIT_USER_ERROR
    except CheckFailed as err:
        if debug:
            raise
        _err.print(f"[bold red]check failed:[/] {escape(str(err))}")
        return EXIT_CHECK_FAILED
    except (typer.Abort, KeyboardInterrupt):
        _err.print("aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as err:  # usage errors: bad options, arguments
        show = getattr(err, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(err, "exit_code", EXIT_USER_ERROR))
    except Exception as err:  # noqa: BLE001 - an internal fault: say so, with the traceback
        if debug:
            raise
        _err.print(escape("".join(traceback.format_exception(err))), highlight=False)
        _err.print(f"[bold red]internal error[/] ({type(err).__name__}): {escape(str(err))}")
        return EXIT_INTERNAL
    return 0
