"""Strict readers for untrusted text input: JSON without silent duplicates, values shown safely.

Leaf utilities (they import nothing of the harness but its errors): tasks,
adapters and metrics use them so a hostile value can never turn into a
traceback or a silently chosen "last copy".
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Iterable

from unibench.errors import UserError


def shown(value: Any, width: int = 40) -> str:
    """A short, always printable picture of a value from an input file (never raises, never huge)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<about {int(value.bit_length() * 0.30103) + 1} digits>"  # repr() refuses past 4300 digits
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. ints past Python's digit limit inside a container
        text = f"<{type(value).__name__}>"
    return text[:width] + "..." if len(text) > width else text


def kind(value: Any) -> str:
    """'int 3', 'list [1, 2]', ...: the type and a short picture."""
    return f"{type(value).__name__} {shown(value)}"


def one_line(text: str) -> str:
    """Every line break Python knows (\\r, \\x0b, \\u2028, ...) becomes a space: an error stays one line."""
    lines = text.splitlines()
    return " ".join(lines) if len(lines) > 1 or text.endswith(("\r", "\n")) else text


class DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(f"key '{key}' appears twice in one object")
        out[key] = value
    return out


def loads_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` that refuses what would otherwise be silently resolved or crash: a key given twice in
    one object, nesting past the interpreter's limit, integers past Python's digit limit."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except DuplicateKey as exc:
        raise UserError(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # e.g. an integer longer than 4300 digits
        raise UserError(f"{where}: unreadable value ({one_line(str(exc))[:100]})") from None


def unique_columns(header: Iterable[str], where: str) -> None:
    """A CSV header naming a column twice would let the last one silently win: refuse it."""
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise UserError(f"{where}: column '{column}' appears twice in the header")
        seen.add(column)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line (a UserError), not a usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")
