"""Writing files safely: atomic replacement, and file names made from user-given names.

Leaf utilities: anything in the harness may import them.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

MAX_NAME = 100  # file-name part made from a model / answer name; file systems allow 255 bytes


def safe_name(text: str) -> str:
    """A file-name part: ASCII letters, digits and ``._+-``; long names keep a prefix and a hash of the whole."""
    # no separators, no leading dots (no '..', no hidden folders): the name stays inside the output folder
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_").lstrip(".").strip("_") or "unnamed"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        name = f"{name[:MAX_NAME - 13]}-{digest}"
    return name


def printable(text: str) -> str:
    """A name as it is written to (and read back from) UTF-8 files: lone surrogates (bytes that were not
    UTF-8) become backslash escapes, so the same name always compares equal to its row."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON (see :func:`atomic_open`); a name that is not valid UTF-8 is written with backslashes."""
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    """Dataclasses (e.g. extraction statistics) as their fields; anything else (paths, ...) as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


@contextmanager
def atomic_open(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Write ``path`` through a temporary file renamed over it at the end: readers (and a crash) see the old
    file or the new one, never half of one. Text modes default to UTF-8 with backslash escapes for names
    that are not valid UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("errors", "backslashreplace")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_samples_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-sample rows; list values are joined with '|'."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    cols = tuple(columns)
    with atomic_open(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for row in rows:
            # scorers build every row the same way, so the values are usually already in column order
            values = row.values() if tuple(row) == cols else [row.get(c, "") for c in cols]
            writer.writerow(["|".join(v) if type(v) in _SEQUENCES else v for v in values])


_SEQUENCES = (list, tuple, set)
