"""Parsing ``--model-args k=v,k2=v2`` into typed keyword arguments.

Unlike a naive split, a value may contain ',' or '=' when quoted
(``prompt="a, b"``), and a comma is only a separator when what follows looks
like ``key=``; so ``path=/a,b/c`` keeps its comma.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

from unibench.errors import UserError

_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*=")


def parse_kv(text: str | None, flag: str = "--model-args") -> dict[str, str]:
    out: dict[str, str] = {}
    if not text:
        return out
    i, n = 0, len(text)
    while i < n:
        m = _KEY.match(text, i)
        if not m:
            raise UserError(f"{flag}: expected key=value at '{text[i:]}'")
        key = m.group(1)
        i = m.end()
        if i < n and text[i] in "\"'":
            quote = text[i]
            j = text.find(quote, i + 1)
            if j < 0:
                raise UserError(f"{flag}: unterminated quote in value of '{key}'")
            value = text[i + 1:j]
            i = j + 1
            if i < n and text[i] != ",":
                raise UserError(f"{flag}: unexpected text after quoted value of '{key}'")
        else:
            j = i
            while j < n:
                if text[j] == "," and _KEY.match(text, j + 1):
                    break
                j += 1
            value = text[i:j]
            i = j
        if key in out:
            raise UserError(f"{flag}: '{key}' given twice")
        out[key] = value
        if i < n and text[i] == ",":
            i += 1
    return out


def _convert(value: str, tp: Any, key: str, flag: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value.lower() in ("none", "null", ""):
            return None
        tp = args[0] if len(args) == 1 else str
    if tp is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{flag}: '{key}' must be true or false, got '{value}'")
    if tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            raise UserError(f"{flag}: '{key}' must be {'an integer' if tp is int else 'a number'}, got '{value}'") from None
    if tp is Path:
        return Path(value).expanduser()
    return value


def build_options(cls: type, text: str | None, flag: str = "--model-args", owner: str = "") -> Any:
    """Fill the dataclass ``cls`` from ``k=v`` text, with type checks and clear errors."""
    raw = parse_kv(text, flag)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise UserError(f"{flag}: unknown key '{unknown[0]}'{' for ' + owner if owner else ''} "
                        f"(known: {', '.join(fields) or 'none'})")
    kwargs = {k: _convert(v, hints[k], k, flag) for k, v in raw.items()}
    missing = [name for name, f in fields.items() if name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{flag}: '{missing[0]}' is required{' for ' + owner if owner else ''}")
    return cls(**kwargs)
