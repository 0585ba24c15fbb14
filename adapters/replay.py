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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unibench.adapters.base import Adapter, AnswerSet, ExtractionFailure, register_adapter
from unibench.answerfiles import (extraction_owner, is_answer_npz, read_answer_npz, read_answer_table,  # noqa: F401
                                  read_extraction_file, read_extraction_npz, read_provenance, split_answers)
from unibench.errors import UserError
from unibench.taskdata import TaskData


@dataclass
class ReplayOptions:
    path: Path
    name: str = ""       # leaderboard name; default: the run name if given, else the folder or file name
    run: str = ""        # run folder under results-<task>/ (default: the one with most answer files)


def attach_extractions(answer_set: AnswerSet, answer_path: Path) -> AnswerSet:
    stem = answer_path.with_suffix("")
    ov = Path(f"{stem}-openset.npz")
    senti = Path(f"{stem}-openset-sentiment.npz")
    made_by = read_provenance(stem)

    def source(path: Path, key: str) -> str:
        by = (made_by.get(key) or {}).get("source")
        return f"file:{path}" + (f" (made by {by})" if by else "")

    notes: list[str] = []
    if ov.is_file():
        answer_set.ov_labels, failed = read_extraction_file(ov, notes)
        answer_set.ov_source = source(ov, "ov")
        answer_set.extraction_failures.extend(ExtractionFailure("ov", n) for n in failed)
    if senti.is_file():
        answer_set.sentiments, failed = read_extraction_file(senti, notes)
        answer_set.sentiment_source = source(senti, "sentiment")
        answer_set.extraction_failures.extend(ExtractionFailure("sentiment", n) for n in failed)
    answer_set.warnings.extend(notes)
    for key, path in (("ov", ov), ("sentiment", senti)):
        entry = made_by.get(key) or {}
        if path.is_file() and entry.get("paper_protocol") is False:  # e.g. an earlier --extractor lexicon run
            flag = f"extractor:{entry.get('backend', 'unknown')}"
            if flag not in answer_set.extraction_flags:
                answer_set.extraction_flags.append(flag)
    return answer_set


@register_adapter
class ReplayAdapter(Adapter):
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
        if path.is_file():
            return path.stem
        try:
            return path.resolve().name
        except (OSError, RuntimeError):  # a link loop: answer_sets says what is wrong with the path
            return Path(os.path.abspath(path)).name

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
        notes: list[str] = []
        raw = read_answer_npz(path, notes) if path.suffix == ".npz" else read_answer_table(path, task.spec.id, notes)
        return answer_set(path, raw, notes)

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
        counts = {r: len([f for f in r.iterdir() if is_answer_npz(f) and f.is_file()]) for r in chosen}
        if not counts or max(counts.values()) == 0:
            raise UserError(f"replay: no answer .npz files under {task_dir}")
        best = max(counts.values())
        top = [r for r in chosen if counts[r] == best]
        if len(top) > 1:
            raise UserError(f"replay: several runs in {task_dir} ({', '.join(r.name for r in top)}); "
                            "choose one with --model-args run=NAME")
        run_dir = top[0]
        files = sorted(f for f in run_dir.iterdir() if is_answer_npz(f) and f.is_file())
        orphans = [f.name for f in run_dir.iterdir() if f.suffix == ".npz" and not is_answer_npz(f)
                   and (extraction_owner(f.name) == f.name or not (run_dir / extraction_owner(f.name)).is_file())]
        sets = []
        for i, f in enumerate(files):
            notes: list[str] = []
            s = answer_set(f, read_answer_npz(f, notes), notes, order=i)
            if len(chosen) > 1:
                s.warnings.append(f"run folder chosen: {run_dir.name} (most answer files among {len(chosen)})")
            if orphans:
                s.warnings.append(f"{len(orphans)} file(s) in {run_dir} are named like extraction files but have no "
                                  f"answer file beside them (e.g. {orphans[0]}); not scored (rename them to score "
                                  "them as answer files)")
            sets.append(s)
        return sets


def answer_set(path: Path, raw: dict[str, Any], notes: list[str], order: int = 0) -> AnswerSet:
    """An answer file's AnswerSet, its non-text answers set apart and its extraction files attached."""
    answers, rejected = split_answers(raw)
    s = AnswerSet(label=path.stem, answers=answers, source=str(path), order=order, rejected=rejected,
                  warnings=list(notes))
    return attach_extractions(s, path)
