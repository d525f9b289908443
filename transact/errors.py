"""Errors that mean "the user gave bad input", reported as one readable line by the CLI."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration: the CLI prints the message and exits with code 2."""
