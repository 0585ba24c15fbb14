"""What the user reads: errors (one line, no traceback, non-zero exit) and messages on stderr."""
from __future__ import annotations

import sys


def log(message: str) -> None:
    """A message for the user (progress, notes, warnings) on stderr, flushed: the one helper for it."""
    print(message, file=sys.stderr, flush=True)


class UserError(Exception):
    """Bad input or configuration. The CLI prints ``error: <message>`` and exits 2."""

    exit_code = 2


class MissingExtraError(UserError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, what: str = ""):
        msg = f"{what or package} needs the '{package}' package: pip install 'mer-unibench[{extra}]'"
        super().__init__(msg)
