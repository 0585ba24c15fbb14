"""Strict readers for untrusted text input: JSON without silent duplicates, values shown safely.

Leaf utilities (they import nothing of the harness but its errors): tasks,
adapters and metrics use them so a hostile value can never turn into a
traceback or a silently chosen "last copy".
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
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


def read_json_file(path: Path, what: str, check: Any = None) -> Any:
    """A JSON file read strictly (:func:`loads_json`), then ``check(data) -> ''`` or what is wrong with its
    shape: one UserError naming the file and ``what`` it should be."""
    try:
        data = loads_json(Path(path).read_bytes(), str(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    problem = check(data) if check is not None else ""
    if problem:
        raise UserError(f"{path}: not {what} ({problem})")
    return data


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


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Read a CSV strictly: UTF-8 (BOM allowed), the required columns present, every row well formed."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            # strict: an unterminated quote is an error, not one field swallowing every later row
            reader = csv.DictReader(fh, strict=True)
            header = reader.fieldnames or []
            unique_columns(header, str(path))
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
            rows = []
            for row in reader:
                if None in row:
                    raise UserError(f"{path}: line {reader.line_num}: more fields than the header has")
                if any(v and "\x00" in v for v in row.values()):  # binary data read as text would score
                    raise UserError(f"{path}: line {reader.line_num}: holds a NUL byte (binary data?)")
                rows.append(row)
            return rows
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit] + "..."
