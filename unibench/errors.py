"""User-facing errors: one line, no traceback, non-zero exit."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration. The CLI prints ``error: <message>`` and exits 2."""

    exit_code = 2


class MissingExtraError(UserError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, what: str = ""):
        msg = f"{what or package} needs the '{package}' package: pip install 'mer-unibench[{extra}]'"
        super().__init__(msg)
