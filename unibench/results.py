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

Several runs may share one output folder: every read-modify-write of a shared
file (``leaderboard.csv``, a model's ``run.json``) holds an exclusive lock on
``DIR/.unibench.lock``, so no run drops a neighbour's row. A leaderboard that
cannot be read as ours (not UTF-8, malformed, foreign columns) is kept aside
as ``leaderboard.csv.bad-<time>`` and its rows rebuilt from the summaries,
with a warning; an unreadable ``summary.json`` is named, left out and flagged.
"""
from __future__ import annotations

import csv
import json
import os
import time
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from unibench.errors import UserError
from unibench.strict import read_json_file
from unibench.fileio import atomic_open, printable, safe_name, write_json, write_samples_csv  # noqa: F401  (re-exported)

from unibench.tasks.base import TASKS

LEADERBOARD_COLUMNS = ["model", "selection", *TASKS.keys(), "mean", "n_tasks", "flags"]


def check_output_folder(output: Path) -> None:
    """Before any work: the results folder is (or can be made) a folder we can write. Nothing is created."""
    output = Path(output)
    if output.is_symlink() and not output.exists():
        raise UserError(f"--output {output} is a link to nothing ({os.readlink(output)}); pass another --output")
    for existing in [output, *output.parents]:
        if existing.exists():
            break
    if not existing.is_dir():
        what = f"--output {output}" if existing == output else f"--output {output}: {existing}"
        raise UserError(f"{what} is a file, not a folder; pass another --output")
    try:  # the nearest existing folder takes a file (permissions, read-only mounts, full quota)
        probe = existing / f".unibench-write-test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write in {existing} ({exc.strerror or exc}); "
                        "pass a writable folder") from None
    for shared in ("leaderboard.csv", ".unibench.lock"):
        if (output / shared).exists() and not (output / shared).is_file():
            raise UserError(f"{output / shared} is not a file; move it away")


@contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Exclusive lock on the output folder's shared files (leaderboard.csv, run.json) across processes."""
    output.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock available
        yield
        return
    with open(output / ".unibench.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)




# ---------------------------------------------------------------- typed results

@dataclass
class FileResult:
    """One answer file's scores in a task summary."""

    label: str
    source: str
    order: int                          # position among the task's answer files (--select last)
    primary: float                      # the task's primary metric, 0-1
    metrics: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    extraction: dict[str, str] = field(default_factory=dict)
    interval: list[float] = field(default_factory=list)   # 95% bootstrap interval of ``primary`` ([] if none)

    def to_json(self) -> dict[str, Any]:
        out = {"label": self.label, "source": self.source, "order": self.order, "primary": self.primary,
               "metrics": self.metrics, "flags": self.flags, "extraction": self.extraction}
        if self.interval:  # --bootstrap 0 writes the summary as before
            out["interval"] = self.interval
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FileResult":
        interval = data.get("interval") or []
        ok = (isinstance(interval, list) and len(interval) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval))
        return cls(label=data["label"], source=str(data.get("source", "")), order=data["order"],
                   primary=float(data["primary"]), metrics=dict(data.get("metrics") or {}),
                   flags=list(data.get("flags", [])), extraction=dict(data.get("extraction") or {}),
                   interval=[float(v) for v in interval] if ok else [])


@dataclass
class TaskSummary:
    """A task's ``summary.json``: every answer file's scores, the best and the last."""

    task: str
    model: str
    primary_metric: str
    level: str
    n_test: int
    files: list[FileResult]
    best: str
    last: str
    lexicon_sha256: str = ""
    task_fingerprint: str = ""
    flags: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return len(self.files)

    def select(self, mode: str) -> FileResult | None:
        """The answer file a row uses: best (the first of the tied best, as np.argmax) | last | file:<name>."""
        if not self.files:
            return None
        if mode == "best":
            return max(self.files, key=lambda f: (f.primary, -f.order))
        if mode == "last":
            return max(self.files, key=lambda f: f.order)
        name = mode.split(":", 1)[1]
        return next((f for f in self.files if f.label in (name, Path(name).stem)), None)

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "primary_metric": self.primary_metric, "level": self.level,
                "n_test": self.n_test, "n_files": self.n_files, "files": [f.to_json() for f in self.files],
                "best": self.best, "last": self.last, "lexicon_sha256": self.lexicon_sha256,
                "task_fingerprint": self.task_fingerprint, "flags": self.flags}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TaskSummary":
        files = [FileResult.from_json(f) for f in data["files"]]
        summary = cls(task=str(data.get("task", "")), model=str(data.get("model", "")),
                      primary_metric=str(data.get("primary_metric", "")), level=str(data.get("level", "level1")),
                      n_test=int(data.get("n_test", 0) or 0), files=files, best="", last="",
                      lexicon_sha256=str(data.get("lexicon_sha256", "")),
                      task_fingerprint=str(data.get("task_fingerprint", "")), flags=list(data.get("flags", [])))
        summary.best = str(data.get("best") or summary.select("best").label)  # type: ignore[union-attr]
        summary.last = str(data.get("last") or summary.select("last").label)  # type: ignore[union-attr]
        return summary


@dataclass
class FileReport:
    """Everything about one answer file of one task: ``<model>/<task>/<answer>.json``."""

    task: str
    model: str
    answer_file: str
    label: str
    primary_metric: str
    primary: float
    metrics: dict[str, float]
    per_wheel: dict[str, dict[str, float]]
    counts: dict[str, int]
    level: str
    warnings: list[str]
    flags: list[str]
    extraction: dict[str, Any]          # ov / sentiment sources, extractor identity, failures, files saved
    lexicon: dict[str, str]             # path, sha256
    task_fingerprint: str
    grouping: dict[str, Any] | None = None
    intervals: dict[str, Any] = field(default_factory=dict)     # metric -> bootstrap interval (metrics.bootstrap)
    closed_set: dict[str, Any] | None = None                    # the closed-set view (unibench.closedset)

    def to_json(self) -> dict[str, Any]:
        # shallow: the fields are JSON already, and asdict's deep copy costs a tenth of a large replay
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FileReport":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def select_file(summary: TaskSummary, mode: str) -> FileResult | None:
    """Pick one answer file of a task summary: best | last | file:<name> (see :meth:`TaskSummary.select`)."""
    return summary.select(mode)


def selection_label(mode: str, summaries: Iterable[TaskSummary]) -> str:
    if mode != "best":
        return mode
    ns = sorted({s.n_files for s in summaries})
    if not ns:
        return "best"
    if ns == [1]:
        return "single"
    return f"best-of-{ns[0]}" if len(ns) == 1 else f"best-of-{ns[0]}..{ns[-1]}"


def selection_mode(label: str) -> str:
    return "best" if label.startswith("best") or label == "single" else label


# ---------------------------------------------------------------- leaderboard

def read_summary(path: Path) -> TaskSummary:
    """One task summary; UserError naming the file and what is wrong with it."""
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    return TaskSummary.from_json(read_json_file(path, "a task summary", _summary_problem))


def _summary_problem(data: Any) -> str:
    if not isinstance(data, dict):
        return f"holds {type(data).__name__}, expected an object"
    files = data.get("files")
    if not isinstance(files, list) or not files:
        return "no 'files' list"
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            return f"files[{i}] is not an object"
        for key, kinds in (("label", str), ("primary", (int, float)), ("order", int)):
            if not isinstance(f.get(key), kinds) or isinstance(f.get(key), bool):
                return f"files[{i}].{key} is missing or not a {getattr(kinds, '__name__', 'number')}"
        if not 0.0 <= f["primary"] <= 1.0:  # scores are fractions (NaN fails this too)
            return f"files[{i}].primary is {f['primary']!r}, not a score between 0 and 1"
        if not _text_list(f.get("flags", [])):
            return f"files[{i}].flags is not a list of text"
    if not _text_list(data.get("flags", [])):
        return "'flags' is not a list of text"
    for key in ("model", "level", "lexicon_sha256"):
        if not isinstance(data.get(key, ""), str):
            return f"'{key}' is not text"
    return ""


def _text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def load_summaries(output: Path, model: str, problems: list[str] | None = None) -> dict[str, TaskSummary]:
    """The model's task summaries. An unreadable one is left out; with ``problems`` it is named there
    (the caller warns and flags the row), without it the error stops the caller."""
    out = {}
    model_dir = output / safe_name(model)
    for task_id in TASKS:
        path = model_dir / task_id / "summary.json"
        if not path.exists():
            continue
        try:
            summary = read_summary(path)
            if summary.model and summary.model != model:  # two names that map to one folder
                raise UserError(f"{path}: holds results of model '{summary.model}', not '{model}'")
            out[task_id] = summary
        except UserError as exc:
            if problems is None:
                raise
            problems.append(f"{task_id}:{exc}")
    return out


def leaderboard_row(model: str, summaries: dict[str, TaskSummary], mode: str,
                    unreadable: Iterable[str] = ()) -> dict[str, str]:
    row: dict[str, str] = {"model": model, "selection": selection_label(mode, summaries.values())}
    values, flags = [], set()
    lexicons, levels = set(), set()
    for task_id in TASKS:
        summary = summaries.get(task_id)
        chosen = summary.select(mode) if summary else None
        if summary is None or chosen is None:
            row[task_id] = ""
            continue
        value = chosen.primary * 100
        row[task_id] = f"{value:.2f}"
        values.append(value)
        lexicons.add(summary.lexicon_sha256)
        levels.add(summary.level)
        flags.update(chosen.flags)
        flags.update(summary.flags)
    row["mean"] = f"{sum(values) / len(values):.2f}" if values else ""
    row["n_tasks"] = str(len(values))
    if len(lexicons) > 1:
        flags.add("mixed-lexicons")
    if len(levels) > 1:
        flags.add("mixed-levels")
    flags.update(f"level:{lv}" for lv in levels if lv != "level1")  # the paper reports level 1
    flags.update(f"unreadable-summary:{t}" for t in unreadable)
    row["flags"] = ";".join(sorted(str(f) for f in flags))
    return row


class LeaderboardProblem(Exception):
    """leaderboard.csv exists but is not one we wrote (the message says why); ``rows``: what could be salvaged."""

    def __init__(self, message: str, rows: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.rows = rows or []


def read_leaderboard(path: Path) -> list[dict[str, str]]:
    """The rows of a leaderboard; LeaderboardProblem when the file is not a leaderboard."""
    if not path.is_file():
        return []
    try:
        with open(path, "rb") as raw:
            raw.seek(0, os.SEEK_END)
            if raw.tell():
                raw.seek(-1, os.SEEK_END)
                if raw.read(1) != b"\n":  # we always end with a line break: this one was cut short
                    raise LeaderboardProblem("it ends in the middle of a row (cut short?)",
                                             _salvage(path))
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, strict=True)
            header = reader.fieldnames or []
            if len(set(header)) != len(header):
                raise LeaderboardProblem("its header names a column twice")
            foreign = [c for c in header if c not in LEADERBOARD_COLUMNS]
            missing = [c for c in LEADERBOARD_COLUMNS if c not in header]
            if foreign or missing:
                what = "; ".join(p for p in (f"foreign: {', '.join(foreign[:5])}" if foreign else "",
                                             f"missing: {', '.join(missing[:5])}" if missing else "") if p)
                salvaged = []
                if "model" in header and "selection" in header:  # a hand-edited leaderboard: keep its rows
                    salvaged = [{c: (r.get(c) or "") for c in LEADERBOARD_COLUMNS} for r in reader
                                if isinstance(r.get("model"), str) and r.get("model")]
                raise LeaderboardProblem(f"its columns are not the leaderboard's ({what})", salvaged)
            rows = []
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise LeaderboardProblem(f"line {reader.line_num} does not have {len(header)} fields")
                problem = _row_problem(row)
                if problem:
                    raise LeaderboardProblem(f"line {reader.line_num}: {problem}", rows)
                rows.append(dict(row))
            return rows
    except UnicodeDecodeError as exc:
        raise LeaderboardProblem(f"it is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise LeaderboardProblem(f"it is malformed CSV ({exc})") from None
    except OSError as exc:
        raise LeaderboardProblem(f"it cannot be read ({exc.strerror or exc})") from None


def _row_problem(row: dict[str, str]) -> str:
    """'' when a leaderboard row holds what we write: a model name, scores 0-100 or empty, a count."""
    if not row.get("model"):
        return "no model name"
    for column in (*TASKS, "mean"):
        value = row.get(column, "")
        if value:
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not 0.0 <= number <= 100.0:
                return f"'{column}' is '{value[:20]}', not a score between 0 and 100"
    if row.get("n_tasks") and not row["n_tasks"].isdigit():
        return f"'n_tasks' is '{row.get('n_tasks', '')[:20]}', not a count"
    return ""


def _salvage(path: Path) -> list[dict[str, str]]:
    """The complete rows of a leaderboard cut short (the last, partial line dropped)."""
    try:
        data = path.read_bytes()
        text = data[:data.rfind(b"\n") + 1].decode("utf-8")
        reader = csv.DictReader(text.splitlines(), strict=True)
        if reader.fieldnames != LEADERBOARD_COLUMNS:
            return []
        return [dict(r) for r in reader if None not in r and all(v is not None for v in r.values())]
    except (UnicodeDecodeError, csv.Error):
        return []


def _write_leaderboard(path: Path, rows: list[dict[str, str]]) -> None:
    rows.sort(key=lambda r: (r["model"], r["selection"]))
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LEADERBOARD_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def summary_models(output: Path) -> dict[str, str]:
    """model name -> folder, for every model folder of ``output`` holding a readable task summary."""
    models: dict[str, str] = {}
    if not output.is_dir():
        return models
    for model_dir in sorted(p for p in output.iterdir() if p.is_dir()):
        for task_id in TASKS:
            path = model_dir / task_id / "summary.json"
            if not path.is_file():
                continue
            try:
                name = read_summary(path).model
            except UserError:
                continue
            if isinstance(name, str) and safe_name(name) == model_dir.name:
                models.setdefault(name, model_dir.name)
                break
    return models


def rebuilt_rows(output: Path, keep: list[dict[str, str]], notes: list[str]) -> list[dict[str, str]]:
    """Every model's rows recomputed from its summaries: the best-of-N row, plus the other selections
    that ``keep`` (the old rows that could be read) held. Rows of models without summaries are kept."""
    modes: dict[str, set[str]] = {m: {"best"} for m in summary_models(output)}
    kept_as_is = []
    for r in keep:
        if r.get("model") in modes:
            modes[r["model"]].add(selection_mode(r.get("selection", "")))
        else:
            kept_as_is.append(r)
    rows = list(kept_as_is)
    for model, wanted in sorted(modes.items()):
        problems: list[str] = []
        summaries = load_summaries(output, model, problems)
        notes.extend(p.split(":", 1)[1] for p in problems)
        for mode in sorted(wanted):
            rows.append(leaderboard_row(model, summaries, mode, [p.split(":", 1)[0] for p in problems]))
    return rows


def _set_aside(path: Path) -> Path:
    backup = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(path, backup)
    return backup


def update_leaderboard(output: Path, model: str, mode: str,
                       notes: list[str] | None = None) -> list[dict[str, str]]:
    """Rebuild this model's row for this selection from disk; keep every other row.

    Under the output folder's lock, so concurrent runs never drop each other's rows. ``notes``
    collects what the user must hear (an unreadable summary, a leaderboard set aside and rebuilt).
    """
    notes = notes if notes is not None else []
    path = output / "leaderboard.csv"
    with output_lock(output):
        problems: list[str] = []
        summaries = load_summaries(output, model, problems)
        for p in problems:
            task_id, msg = p.split(":", 1)
            notes.append(f"{msg}; task {task_id} is left out of the row (flagged); rerun --task {task_id} "
                         "to write it again")
        try:
            old = read_leaderboard(path)
        except LeaderboardProblem as exc:
            backup = _set_aside(path)
            notes.append(f"{path}: {exc}; kept as {backup.name}, rows rebuilt from the summaries on disk")
            old = rebuilt_rows(output, exc.rows, notes)
        # every row of this model comes from the same summaries: recompute them all, not only this selection's
        modes = dict.fromkeys([mode, *(selection_mode(r.get("selection", "")) for r in old if r.get("model") == model)])
        unreadable = [p.split(":", 1)[0] for p in problems]
        rows = [r for r in old if r.get("model") != model]
        rows.extend(leaderboard_row(model, summaries, m, unreadable) for m in modes)
        _write_leaderboard(path, rows)
    return rows


def rebuild_leaderboard(output: Path, notes: list[str]) -> list[dict[str, str]]:
    """``report --rebuild``: every row recomputed from the summaries (a bad old file is set aside)."""
    path = output / "leaderboard.csv"
    with output_lock(output):
        try:
            old = read_leaderboard(path)
        except LeaderboardProblem as exc:
            backup = _set_aside(path)
            notes.append(f"{path}: {exc}; kept as {backup.name}")
            old = exc.rows
        rows = rebuilt_rows(output, old, notes)
        _write_leaderboard(path, rows)
    return rows


def update_run_metadata(path: Path, data: dict[str, Any]) -> None:
    """Write a model's run.json, keeping the task entries of other (possibly concurrent) runs."""
    with output_lock(path.parent.parent):
        old: Any = None
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                old = None  # unreadable metadata: replaced by this run's
        if isinstance(old, dict) and isinstance(old.get("tasks"), dict):
            data = {**data, "tasks": {**old["tasks"], **data.get("tasks", {})}}
        write_json(path, data)


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
    from unibench.strict import one_line

    rows = [{k: one_line(str(v)) for k, v in r.items()} for r in rows]  # a name holding a line break
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
