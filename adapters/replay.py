"""`replay`: score answers that already exist, without running a model.

Layouts read (``--model-args path=...``):

* the original one, ``<path>/results-<task>/<run>/<answer>.npz`` with key
  ``name2reason`` (several answer files per task, e.g. checkpoints); the
  authors' extractions ``<answer>-openset.npz`` and
  ``<answer>-openset-sentiment.npz`` beside them are used when present;
* a JSONL or CSV file with ``name`` and ``answer`` columns (and optionally
  ``task``), or a folder holding ``<task>.jsonl`` / ``<task>.csv``; extraction
  files follow the same ``-openset.npz`` naming beside them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from unibench.adapters.base import Adapter, AnswerSet, register_adapter
from unibench.errors import UserError
from unibench.safe_npz import load_npz
from unibench.tasks.base import TaskData, read_csv_rows


@dataclass
class ReplayOptions:
    path: Path
    name: str = ""       # leaderboard name; default: the run name if given, else the folder or file name
    run: str = ""        # run folder under results-<task>/ (default: the one with most answer files)


def is_answer_npz(path: Path) -> bool:
    return path.suffix == ".npz" and "-openset" not in path.name and not path.name.endswith("-sentiment.npz")


def read_extraction_npz(path: Path) -> dict[str, str]:
    """An authors' extraction file: arrays ``filenames`` and ``fileitems``."""
    data = load_npz(path, ["filenames", "fileitems"])
    names, items = list(data["filenames"]), list(data["fileitems"])
    if len(names) != len(items):
        raise UserError(f"{path}: 'filenames' has {len(names)} entries but 'fileitems' has {len(items)}")
    return {str(n): str(i) for n, i in zip(names, items)}


def read_provenance(stem: Path) -> dict:
    """Who made extraction files that this harness saved beside an answer file (none for the authors' files)."""
    path = Path(f"{stem}-extraction.json")
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def attach_extractions(answer_set: AnswerSet, answer_path: Path) -> AnswerSet:
    stem = answer_path.with_suffix("")
    ov = Path(f"{stem}-openset.npz")
    senti = Path(f"{stem}-openset-sentiment.npz")
    made_by = read_provenance(stem)

    def source(path: Path, key: str) -> str:
        by = (made_by.get(key) or {}).get("source")
        return f"file:{path}" + (f" (made by {by})" if by else "")

    if ov.is_file():
        answer_set.ov_labels = read_extraction_npz(ov)
        answer_set.ov_source = source(ov, "ov")
    if senti.is_file():
        answer_set.sentiments = read_extraction_npz(senti)
        answer_set.sentiment_source = source(senti, "sentiment")
    for key, path in (("ov", ov), ("sentiment", senti)):
        entry = made_by.get(key) or {}
        if path.is_file() and entry.get("paper_protocol") is False:  # e.g. an earlier --extractor lexicon run
            flag = f"extractor:{entry.get('backend', 'unknown')}"
            if flag not in answer_set.flags:
                answer_set.flags.append(flag)
    return answer_set


def read_answer_npz(path: Path) -> dict[str, str]:
    data = load_npz(path, ["name2reason"])["name2reason"]
    if not isinstance(data, dict):
        raise UserError(f"{path}: 'name2reason' holds {type(data).__name__}, expected a dict name -> answer")
    return {str(k): ("" if v is None else str(v)) for k, v in data.items()}


def read_answer_table(path: Path, task_id: str | None) -> dict[str, str]:
    """JSONL or CSV rows with name, answer (and optional task) fields."""
    rows: list[dict] = []
    if path.suffix == ".jsonl":
        try:
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise UserError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from None
                    if not isinstance(row, dict) or "name" not in row or "answer" not in row:
                        raise UserError(f"{path}: line {lineno}: needs 'name' and 'answer' fields")
                    rows.append(row)
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    elif path.suffix == ".csv":
        rows = read_csv_rows(path, required=("name", "answer"))
    else:
        raise UserError(f"{path}: answer files must be .npz, .jsonl or .csv")
    out: dict[str, str] = {}
    for row in rows:
        if task_id is not None and row.get("task") not in (None, "", task_id):
            continue
        name = str(row["name"])
        if name in out:
            raise UserError(f"{path}: sample '{name}' appears twice")
        out[name] = "" if row["answer"] is None else str(row["answer"])
    return out


@register_adapter
class ReplayAdapter(Adapter):
    name = "replay"
    description = "score existing answers (original results-<task>/<run>/*.npz layout, or JSONL/CSV)"
    inputs = ()
    Options = ReplayOptions
    generates = False

    def model_id(self) -> str:
        if self.options.name:
            return self.options.name
        if self.options.run:  # e.g. results-ovmerd/<baseline>/: the run folder names the model
            return self.options.run
        path = Path(self.options.path)
        return path.stem if path.is_file() else path.resolve().name

    def answer_sets(self, task: TaskData) -> list[AnswerSet]:
        path = Path(self.options.path)
        if not path.exists():
            raise UserError(f"replay: answers not found: {path}")
        if path.is_file():
            return [self._from_table(path, task)]
        task_dir = path / f"results-{task.spec.id}"
        if task_dir.is_dir():
            return self._from_results_dir(task_dir, task)
        for ext in (".jsonl", ".csv", ".npz"):
            table = path / f"{task.spec.id}{ext}"
            if table.is_file():
                return [self._from_table(table, task)]
        raise UserError(f"replay: no answers for task '{task.spec.id}' under {path} "
                        f"(looked for results-{task.spec.id}/<run>/*.npz and {task.spec.id}.jsonl/.csv)")

    # ------------------------------------------------------------------
    def _from_table(self, path: Path, task: TaskData) -> AnswerSet:
        if path.suffix == ".npz":
            answers = read_answer_npz(path)
        else:
            answers = read_answer_table(path, task.spec.id)
        return attach_extractions(AnswerSet(label=path.stem, answers=answers, source=str(path)), path)

    def _from_results_dir(self, task_dir: Path, task: TaskData) -> list[AnswerSet]:
        runs = sorted(p for p in task_dir.iterdir() if p.is_dir())
        if self.options.run:
            chosen = [r for r in runs if r.name == self.options.run] or \
                     [r for r in runs if r.name.startswith(self.options.run)]
            if not chosen:
                raise UserError(f"replay: no run '{self.options.run}' in {task_dir} "
                                f"(runs: {', '.join(r.name for r in runs) or 'none'})")
        else:
            chosen = runs
        counts = {r: len([f for f in r.iterdir() if is_answer_npz(f)]) for r in chosen}
        if not counts or max(counts.values()) == 0:
            raise UserError(f"replay: no answer .npz files under {task_dir}")
        best = max(counts.values())
        top = [r for r in chosen if counts[r] == best]
        if len(top) > 1:
            raise UserError(f"replay: several runs in {task_dir} ({', '.join(r.name for r in top)}); "
                            "choose one with --model-args run=NAME")
        run_dir = top[0]
        files = sorted(f for f in run_dir.iterdir() if is_answer_npz(f))
        sets = []
        for i, f in enumerate(files):
            s = attach_extractions(AnswerSet(label=f.stem, answers=read_answer_npz(f), source=str(f), order=i), f)
            if len(chosen) > 1:
                s.warnings.append(f"run folder chosen: {run_dir.name} (most answer files among {len(chosen)})")
            sets.append(s)
        return sets
