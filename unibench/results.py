"""Writing results and rebuilding the leaderboard from them.

Layout under ``--output DIR``::

    DIR/leaderboard.csv                       one row per (model, selection)
    DIR/<model>/run.json                      metadata of the latest run
    DIR/<model>/<task>/summary.json           every answer file's scores, the best and last
    DIR/<model>/<task>/<answer>.json          all metrics of one answer file, per wheel
    DIR/<model>/<task>/<answer>.samples.csv   per-sample rows for error analysis

The leaderboard is always rebuilt from the summaries on disk, so running the
tasks one at a time accumulates into one row and nothing needs re-running to
regenerate it.
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from unibench.tasks.base import TASKS

LEADERBOARD_COLUMNS = ["model", "selection", *TASKS.keys(), "mean", "n_tasks", "flags"]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "unnamed"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False, default=str)
    os.replace(tmp, path)


def write_samples_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-sample rows; list values are joined with '|'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    cols = tuple(columns)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for row in rows:
            # scorers build every row the same way, so the values are usually already in column order
            values = row.values() if tuple(row) == cols else [row.get(c, "") for c in cols]
            writer.writerow(["|".join(v) if type(v) in _SEQUENCES else v for v in values])


_SEQUENCES = (list, tuple, set)


# ---------------------------------------------------------------- selection

def select_file(summary: dict, mode: str) -> dict | None:
    """Pick one answer file's entry from a task summary: best | last | file:<name>."""
    files = summary["files"]
    if not files:
        return None
    if mode == "best":
        return max(files, key=lambda f: (f["primary"], -f["order"]))  # first file wins a tie, as np.argmax
    if mode == "last":
        return max(files, key=lambda f: f["order"])
    name = mode.split(":", 1)[1]
    for f in files:
        if f["label"] == name or f["label"] == Path(name).stem:
            return f
    return None


def selection_label(mode: str, summaries: Iterable[dict]) -> str:
    if mode != "best":
        return mode
    ns = sorted({len(s["files"]) for s in summaries})
    if not ns:
        return "best"
    if ns == [1]:
        return "single"
    return f"best-of-{ns[0]}" if len(ns) == 1 else f"best-of-{ns[0]}..{ns[-1]}"


def selection_mode(label: str) -> str:
    return "best" if label.startswith("best") or label == "single" else label


# ---------------------------------------------------------------- leaderboard

def load_summaries(output: Path, model: str) -> dict[str, dict]:
    out = {}
    model_dir = output / safe_name(model)
    for task_id in TASKS:
        path = model_dir / task_id / "summary.json"
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                out[task_id] = json.load(fh)
    return out


def leaderboard_row(model: str, summaries: dict[str, dict], mode: str) -> dict[str, str]:
    row: dict[str, str] = {"model": model, "selection": selection_label(mode, summaries.values())}
    values, flags = [], set()
    lexicons = set()
    for task_id in TASKS:
        summary = summaries.get(task_id)
        chosen = select_file(summary, mode) if summary else None
        if chosen is None:
            row[task_id] = ""
            continue
        value = chosen["primary"] * 100
        row[task_id] = f"{value:.2f}"
        values.append(value)
        lexicons.add(summary.get("lexicon_sha256", ""))
        flags.update(chosen.get("flags", []))
        flags.update(summary.get("flags", []))
    row["mean"] = f"{sum(values) / len(values):.2f}" if values else ""
    row["n_tasks"] = str(len(values))
    if len(lexicons) > 1:
        flags.add("mixed-lexicons")
    row["flags"] = ";".join(sorted(flags))
    return row


def read_leaderboard(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def update_leaderboard(output: Path, model: str, mode: str) -> list[dict[str, str]]:
    """Rebuild this model's row for this selection from disk; keep every other row."""
    path = output / "leaderboard.csv"
    summaries = load_summaries(output, model)
    new = leaderboard_row(model, summaries, mode)
    rows = [r for r in read_leaderboard(path)
            if not (r.get("model") == model and selection_mode(r.get("selection", "")) == mode)]
    rows.append(new)
    rows.sort(key=lambda r: (r["model"], r["selection"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"leaderboard.csv.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LEADERBOARD_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return rows


# ---------------------------------------------------------------- printing

def paper_table_path() -> Path:
    return Path(__file__).parent / "reference" / "paper_table.csv"


def read_paper_rows() -> list[dict[str, str]]:
    rows = []
    with open(paper_table_path(), encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            mods = "".join(m[0].upper() for m in ("audio", "video", "text") if r.get(m) == "1")
            rows.append({"model": f"{r['model']} ({mods})", "selection": "published",
                         **{t: r.get(t, "") for t in TASKS}, "mean": r.get("mean", ""), "n_tasks": "9", "flags": ""})
    return rows


def format_table(rows: list[dict[str, str]], highlight: set[str] | None = None) -> str:
    cols = ["model", "selection", *TASKS.keys(), "mean", "n_tasks"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) if c in ("model", "selection") else c.rjust(widths[c]) for c in cols)]
    lines.append("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        mark = "*" if highlight and r.get("model") in highlight else " "
        line = "  ".join(str(r.get(c, "")).ljust(widths[c]) if c in ("model", "selection")
                         else str(r.get(c, "")).rjust(widths[c]) for c in cols)
        flags = r.get("flags") or ""
        lines.append(line + (f"  [{flags}]" if flags else "") + ("" if mark == " " else "  *"))
    return "\n".join(lines)
