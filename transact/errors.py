"""Error kinds and the command line's exit codes.

===================  ====  ==================================================================
kind                 exit  meaning
===================  ====  ==================================================================
:class:`UserError`   2     the user's input or configuration is wrong (a missing directory, an
                           unknown option value, a malformed file they passed)
:class:`CheckFailed` 1     a check ran and found problems (a failed expectation suite, a
                           feature-quality check)
:class:`InternalError` 3   the platform's own state is wrong or lost a race: a corrupt artifact
                           it wrote, a stream processor fenced by a newer one; also any
                           unexpected exception (shown with its traceback)
===================  ====  ==================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3


class UserError(Exception):
    """Bad input or configuration: the CLI prints the message and exits with code 2."""


class CheckFailed(Exception):
    """A check ran and failed (data quality, expectations): exit code 1."""


class InternalError(Exception):
    """Not the user's mistake: the platform's own state or artifacts are wrong: exit code 3."""


class CorruptArtifact(InternalError):
    """An artifact the platform wrote (checkpoint, model, state) cannot be read back."""


def exit_code(err: BaseException) -> int:
    """The exit code of an error (see the module docstring)."""
    if isinstance(err, CheckFailed):
        return EXIT_CHECK_FAILED
    if isinstance(err, UserError):
        return EXIT_USER_ERROR
    return EXIT_INTERNAL
