"""The emotion-wheel (EW) lexicon: load, compile, cache, map labels.

A lexicon folder holds ``format.csv`` (surface forms of each word),
``synonym.xlsx`` (eight LLM runs of synonyms) and ``wheel1..5.xlsx`` (three
levels per wheel). Building the three mappings from the spreadsheets takes
about a second, so the result is compiled once into a JSON cache keyed by the
sha256 of the lexicon files; that hash goes into every result.

Mapping a label follows the published ``case3`` rule exactly, artefacts
included (``neutral`` maps to nothing, ``fear`` lands on ``happy`` on wheel 2).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from unibench.errors import UserError, log
from unibench.fileio import atomic_open
from unibench.labels import string_to_list

WHEELS = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
LEVELS = ("level1", "level2")
LEXICON_FILES = ("format.csv", "synonym.xlsx") + tuple(f"{w}.xlsx" for w in WHEELS)
CACHE_VERSION = 2  # 2: a first line holding the sha256 of the body, checked on every read


def lexicon_hash(folder: Path) -> str:
    """sha256 over the lexicon files' names and contents."""
    digest = hashlib.sha256()
    for name in LEXICON_FILES:
        path = folder / name
        digest.update(name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("UNIBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "unibench")
    return Path(base)


# ---------------------------------------------------------------- building

def _read_wheel(path: Path) -> dict[str, dict[str, list[str]]]:
    """level1 -> level2 -> [level3]; blank cells repeat the last value above."""
    import pandas as pd

    df = _read_excel(path, ["level1", "level2", "level3"])
    tree: dict[str, dict[str, list[str]]] = {}
    l1 = l2 = l3 = ""
    for r1, r2, r3 in zip(df["level1"], df["level2"], df["level3"]):
        if not pd.isna(r1):
            l1 = r1
        if not pd.isna(r2):
            l2 = r2
        if not pd.isna(r3):
            l3 = r3
        l1, l2, l3 = str(l1).lower().strip(), str(l2).lower().strip(), str(l3).lower().strip()
        tree.setdefault(l1, {}).setdefault(l2, []).append(l3)
    if not any(word for word in tree):  # an empty wheel would silently score 0 on it
        raise UserError(f"{path}: the wheel holds no emotion words")
    return tree


MAX_SPREADSHEET_MB = 256  # an .xlsx is a zip: its parts may not inflate past this (the real ones: < 2 MB)


def _check_spreadsheet(path: Path) -> None:
    """Refuse an .xlsx whose parts inflate to more than MAX_SPREADSHEET_MB before openpyxl reads it (zipfile
    stops every part at its declared size, so the declared sizes bound the work)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read spreadsheet (not an .xlsx file: {exc})") from None
    if total > MAX_SPREADSHEET_MB << 20:
        raise UserError(f"{path}: the spreadsheet inflates to {total >> 20} MB, more than the "
                        f"{MAX_SPREADSHEET_MB} MB a lexicon file may take")


def _read_excel(path: Path, columns: Sequence[str]):
    import pandas as pd

    if not path.is_file():
        raise UserError(f"{path}: not a file")
    _check_spreadsheet(path)
    try:
        df = pd.read_excel(path)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise UserError(f"{path}: cannot read spreadsheet ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def wheel_map(tree: dict[str, dict[str, list[str]]], level: str) -> dict[str, str]:
    """Every word of one wheel -> its level-1 (or level-2) word; later entries win, as published."""
    out: dict[str, str] = {}
    for l1, children in tree.items():
        out[l1] = l1 if level == "level1" else sorted(children)[0]
        for l2, leaves in children.items():
            out[l2] = l1 if level == "level1" else l2
            for l3 in leaves:
                out[l3] = l1 if level == "level1" else l2
    return out


def read_format2raws(path: Path) -> dict[str, list[str]]:
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise UserError(f"{path}: cannot read CSV ({exc})") from None
    for col in ("name", "format"):
        if col not in df.columns:
            raise UserError(f"{path}: missing column '{col}'")
    out: dict[str, list[str]] = {}
    for raw, forms in zip(df["name"], df["format"]):
        for form in string_to_list(forms):
            out.setdefault(form, []).append(raw)
        out.setdefault(raw, []).append(raw)
    return out


def read_raw_mapping(path: Path, runs: int = 8) -> dict[str, list[str]]:
    """Synonym -> wheel words, the union of the eight LLM runs."""
    import pandas as pd

    columns = [f"{kind}_run{r}" for r in range(1, runs + 1) for kind in ("word", "synonym")]
    df = _read_excel(path, columns)
    merged: dict[str, set[str]] = {}
    order: list[str] = []
    for r in range(1, runs + 1):
        for word, synonyms in zip(df[f"word_run{r}"], df[f"synonym_run{r}"]):
            if pd.isna(word):
                continue
            word = str(word).strip().lower()
            for key in [word] + [s.strip().lower() for s in string_to_list(synonyms)]:
                if key not in merged:
                    merged[key] = set()
                    order.append(key)
                merged[key].add(word)
    return {k: sorted(merged[k]) for k in order}


def build_mappings(folder: Path) -> dict:
    """Read the spreadsheets and build everything the scorers need."""
    format2raws = read_format2raws(folder / "format.csv")
    raw_mapping = read_raw_mapping(folder / "synonym.xlsx")
    wheels = {w: _read_wheel(folder / f"{w}.xlsx") for w in WHEELS}
    maps = {f"{w}/{lvl}": wheel_map(wheels[w], lvl) for w in WHEELS for lvl in LEVELS}
    # Pre-map every known surface form once: scoring is then a dict lookup.
    table: dict[str, list[str]] = {}
    for label in format2raws:
        candidates = sorted(raw for f in format2raws[label] for raw in raw_mapping.get(f, ()))
        row = []
        for key in (f"{w}/{lvl}" for lvl in LEVELS for w in WHEELS):
            m = maps[key]
            row.append(next((m[c] for c in candidates if c in m), ""))
        table[label] = row
    return {
        "version": CACHE_VERSION,
        "format2raws": format2raws,
        "raw_mapping": raw_mapping,
        "wheels": {w: wheels[w] for w in WHEELS},
        "table": table,
    }


# ---------------------------------------------------------------- the lexicon

@dataclass
class Lexicon:
    """A compiled emotion-wheel lexicon."""

    folder: Path
    sha256: str
    format2raws: dict[str, list[str]]
    raw_mapping: dict[str, list[str]]
    wheels: dict[str, dict[str, dict[str, list[str]]]]
    table: dict[str, list[str]]
    cache_path: Path | None = None
    _maps: dict = field(default_factory=dict, repr=False)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def map_label(self, label: str, wheel: int, level: str = "level1") -> str:
        """One label (already lower-cased and stripped) -> its wheel word, or ''."""
        row = self.table.get(label)
        if row is None:
            return ""
        return row[(wheel - 1) + (5 if level == "level2" else 0)]

    def map_labels(self, labels: Iterable[str], wheel: int, level: str = "level1") -> set[str]:
        """A list of labels -> the set of surviving wheel words (lower/strip first)."""
        idx = (wheel - 1) + (5 if level == "level2" else 0)
        out = set()
        for label in labels:
            row = self.table.get(label.lower().strip())
            if row is not None and row[idx]:
                out.add(row[idx])
        return out

    def map_all_wheels(self, labels: Iterable[str], level: str = "level1") -> list[set[str]]:
        """Map labels (already lower-cased and stripped) on wheels 1-5 at once: five sets."""
        offset = 5 if level == "level2" else 0
        out: list[set[str]] = [set(), set(), set(), set(), set()]
        table = self.table
        for label in labels:
            row = table.get(label)
            if row is None:
                continue
            for i in range(5):
                word = row[offset + i]
                if word:
                    out[i].add(word)
        return out

    def wheel_map(self, wheel: int, level: str = "level1") -> dict[str, str]:
        key = (wheel, level)
        if key not in self._maps:
            self._maps[key] = wheel_map(self.wheels[f"wheel{wheel}"], level)
        return self._maps[key]

    def vocabulary(self) -> list[str]:
        """Every surface form the lexicon knows (keys of format2raws)."""
        return list(self.table)

    def explain(self, label: str, wheel: int, level: str = "level1") -> dict:
        """Why a label maps where it does: its forms, candidate wheel words and the result."""
        label = label.lower().strip()
        raws = self.format2raws.get(label, [])
        candidates = sorted(c for f in raws for c in self.raw_mapping.get(f, ()))
        m = self.wheel_map(wheel, level)
        chosen = next((c for c in candidates if c in m), "")
        return {"label": label, "forms": raws, "candidates": candidates, "via": chosen,
                "result": m.get(chosen, "") if chosen else ""}


def resolve_lexicon_dir(value: str | None) -> Path:
    value = value or os.environ.get("UNIBENCH_LEXICON")
    if not value:
        raise UserError("no emotion-wheel lexicon given: pass --lexicon DIR or set UNIBENCH_LEXICON "
                        "(a folder with format.csv, synonym.xlsx, wheel1..5.xlsx; "
                        "'run_bench lexicon fetch' downloads the official one)")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise UserError(f"lexicon folder not found: {folder}")
    missing = [n for n in LEXICON_FILES if not (folder / n).is_file()]
    if missing:
        raise UserError(f"lexicon folder {folder} lacks {', '.join(missing)}")
    return folder


def _read_cache(path: Path) -> Any:
    """The compiled lexicon in a cache file: a header line (version, sha256 of the body), then the body. An
    edited or cut body no longer matches its hash and reads as 'another version' (rebuilt)."""
    with open(path, "rb") as fh:
        header = json.loads(fh.readline(4096))
        if not isinstance(header, dict):
            raise ValueError("not a compiled-lexicon cache")
        if header.get("version") != CACHE_VERSION:
            return {"version": header.get("version")}
        body = fh.read()
    if hashlib.sha256(body).hexdigest() != header.get("body_sha256"):
        raise ValueError("its content does not match the hash it was written with")
    return json.loads(body)


def _cache_problem(data: Any) -> str:
    """'' when a compiled-lexicon cache has the shape this version writes, else what is wrong.

    The body's sha256 (checked in :func:`_read_cache`) already catches an edited or cut file, so this checks
    the structure the scorers index into (containers, row lengths, the five wheels), not every word: a
    per-word walk costs more than the rest of a replay's scoring."""
    if not isinstance(data, dict):
        return f"not a compiled lexicon (holds {type(data).__name__})"
    if data.get("version") != CACHE_VERSION:
        return "another version"
    for key in ("format2raws", "raw_mapping", "table"):
        value = data.get(key)
        if not isinstance(value, dict) or not all(type(v) is list for v in value.values()):
            return f"not a compiled lexicon ('{key}' is not a map of word lists)"
    width = len(WHEELS) * len(LEVELS)
    if not data["table"] or any(len(row) != width for row in data["table"].values()):
        return f"not a compiled lexicon (a 'table' row does not have {width} entries)"
    wheels = data.get("wheels")
    if not isinstance(wheels, dict) or sorted(wheels) != sorted(WHEELS) or not all(
            isinstance(tree, dict) and all(isinstance(lv, dict) for lv in tree.values()) for tree in wheels.values()):
        return "not a compiled lexicon ('wheels' has the wrong shape)"
    return ""


def load_lexicon(folder: str | Path | None, cache_dir: Path | None = None, use_cache: bool = True) -> Lexicon:
    """Load a lexicon folder, from the compiled cache when its hash matches."""
    folder = resolve_lexicon_dir(str(folder) if folder else None)
    sha = lexicon_hash(folder)
    cache_dir = cache_dir or default_cache_dir() / "lexicon"
    cache_path = cache_dir / f"{sha}.json"
    data = None
    if use_cache and cache_path.exists():
        problem = ""
        try:
            if not cache_path.is_file():  # never open a FIFO or a device: it could block forever
                raise ValueError("not a regular file")
            data = _read_cache(cache_path)
            problem = _cache_problem(data)
        except (OSError, ValueError, RecursionError) as exc:  # ValueError covers bad UTF-8 and bad JSON
            problem = f"unreadable ({type(exc).__name__}: {str(exc)[:60]})"
        if problem:  # a broken cache is rebuilt, never trusted; a cache from another version silently so
            if problem != "another version":
                log(f"note: lexicon cache {cache_path} was {problem}; rebuilt it")
            data = None
    if data is None:
        data = build_mappings(folder)
        if use_cache:
            try:
                body = json.dumps(data, ensure_ascii=False).encode("utf-8")
                with atomic_open(cache_path, "wb") as fh:
                    fh.write(json.dumps({"version": CACHE_VERSION,
                                         "body_sha256": hashlib.sha256(body).hexdigest()}).encode() + b"\n" + body)
            except OSError:
                pass  # read-only cache dir: work uncached
    return Lexicon(folder=folder, sha256=sha, format2raws=data["format2raws"], raw_mapping=data["raw_mapping"],
                   wheels=data["wheels"], table=data["table"], cache_path=cache_path if use_cache else None)
