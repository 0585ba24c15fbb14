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
from typing import Any, Iterable

from unibench.adapters.base import Adapter, AnswerSet, register_adapter
from unibench.errors import UserError
from unibench.safe_npz import check_unique_names, load_npz
from unibench.strict import loads_json, shown
from unibench.tasks.base import TaskData, read_csv_rows


@dataclass
class ReplayOptions:
    path: Path
    name: str = ""       # leaderboard name; default: the run name if given, else the folder or file name
    run: str = ""        # run folder under results-<task>/ (default: the one with most answer files)


def is_answer_npz(path: Path) -> bool:
    return path.suffix == ".npz" and "-openset" not in path.name and not path.name.endswith("-sentiment.npz")


def extraction_owner(name: str) -> str:
    """'x-openset-sentiment.npz' / 'x-openset.npz' -> 'x.npz': the answer file an extraction file belongs to."""
    stem = name[:-4]
    for suffix in ("-openset-sentiment", "-openset"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)] + ".npz"
    return name


def unique_names(pairs: Iterable[tuple[str, Any]], path: Path, what: str,
                 notes: list[str]) -> dict[str, Any]:
    """name -> value; a name given twice is counted once when both values agree (said in ``notes``),
    refused when they differ (the last copy must never silently win)."""
    pairs = list(pairs)
    check_unique_names(path, [n for n, _ in pairs], [v for _, v in pairs], what, notes)
    return dict(pairs)


def _text_name(name: Any, path: Path, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{path}: {where}sample name {shown(name)} is not text")
    return str(name)


def valid_text(text: str) -> str:
    """Text an extractor and the cache can take: lone surrogates (bytes that were not UTF-8) become U+FFFD."""
    try:
        text.encode("utf-8")
        return str(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def split_answers(raw: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(text answers, name -> why the rest is not text). A number, list, dict, bytes or null is never
    turned into a string and scored: it is a failed sample, counted and flagged."""
    answers, rejected = {}, {}
    for name, value in raw.items():
        if isinstance(value, str):
            answers[name] = valid_text(value)
        else:
            rejected[name] = f"answer is {type(value).__name__}, not text"
    return answers, rejected


def read_extraction_npz(path: Path) -> dict[str, str]:
    """An extraction file (arrays ``filenames`` and ``fileitems``) -> name -> item ('' where not text)."""
    return read_extraction_file(path)[0]


def read_extraction_file(path: Path, notes: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """An extraction file (arrays ``filenames`` and ``fileitems``) -> (name -> item, names whose item is
    not text: failed extractions)."""
    notes = notes if notes is not None else []
    data = load_npz(path, ["filenames", "fileitems"], notes=notes)
    try:
        names, items = list(data["filenames"]), list(data["fileitems"])
    except TypeError:
        raise UserError(f"{path}: 'filenames' and 'fileitems' must be arrays") from None
    if len(names) != len(items):
        raise UserError(f"{path}: 'filenames' has {len(names)} entries but 'fileitems' has {len(items)}")
    pairs = unique_names(((_text_name(n, path, "'filenames': "), i) for n, i in zip(names, items)),
                         path, "key 'filenames'", notes)
    failed = [n for n, i in pairs.items() if not isinstance(i, str)]
    return {n: (valid_text(i) if isinstance(i, str) else "") for n, i in pairs.items()}, failed


PROVENANCE_HINT = ("delete it together with the -openset*.npz files beside it to extract again, or restore "
                   "the note written by run_bench")


def read_provenance(stem: Path) -> dict:
    """Who made extraction files that this harness saved beside an answer file (none for the authors' files)."""
    path = Path(f"{stem}-extraction.json")
    if not path.is_file():
        return {}
    try:
        data = loads_json(path.read_bytes(), str(path))
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc}); {PROVENANCE_HINT}") from None
    except UserError as exc:
        raise UserError(f"{exc} (an extraction note); {PROVENANCE_HINT}") from None
    problem = _provenance_problem(data)
    if problem:
        raise UserError(f"{path}: not a valid extraction note ({problem}); {PROVENANCE_HINT}")
    return data


def _provenance_problem(data: Any) -> str:
    if not isinstance(data, dict):
        return f"holds {type(data).__name__}, expected an object with 'ov' / 'sentiment' entries"
    for key in ("ov", "sentiment"):
        entry = data.get(key)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            return f"'{key}' is {type(entry).__name__}, expected an object"
        for field_name, kind in (("source", str), ("backend", str), ("paper_protocol", bool)):
            if field_name in entry and not isinstance(entry[field_name], kind):
                return f"'{key}.{field_name}' is {type(entry[field_name]).__name__}, expected {kind.__name__}"
    return ""


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
        answer_set.extraction_failures.extend(f"ov:{n}" for n in failed)
    if senti.is_file():
        answer_set.sentiments, failed = read_extraction_file(senti, notes)
        answer_set.sentiment_source = source(senti, "sentiment")
        answer_set.extraction_failures.extend(f"sentiment:{n}" for n in failed)
    answer_set.warnings.extend(notes)
    for key, path in (("ov", ov), ("sentiment", senti)):
        entry = made_by.get(key) or {}
        if path.is_file() and entry.get("paper_protocol") is False:  # e.g. an earlier --extractor lexicon run
            flag = f"extractor:{entry.get('backend', 'unknown')}"
            if flag not in answer_set.extraction_flags:
                answer_set.extraction_flags.append(flag)
    return answer_set


def read_answer_npz(path: Path, notes: list[str] | None = None) -> dict[str, Any]:
    """name -> stored answer (any type: :func:`split_answers` sorts out what is not text)."""
    data = load_npz(path, ["name2reason"], notes=notes)["name2reason"]
    if not isinstance(data, dict):
        raise UserError(f"{path}: 'name2reason' holds {type(data).__name__}, expected a dict name -> answer")
    return {_text_name(k, path, "'name2reason': "): v for k, v in data.items()}


def read_answer_table(path: Path, task_id: str | None, notes: list[str] | None = None) -> dict[str, Any]:
    """JSONL or CSV rows with name, answer (and optional task) fields -> name -> stored answer."""
    notes = notes if notes is not None else []
    rows: list[tuple[int, dict]] = []
    if path.suffix == ".jsonl":
        try:
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    row = loads_json(line, f"{path}: line {lineno}")
                    if not isinstance(row, dict) or "name" not in row or "answer" not in row:
                        raise UserError(f"{path}: line {lineno}: needs 'name' and 'answer' fields")
                    rows.append((lineno, row))
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    elif path.suffix == ".csv":
        rows = [(i + 2, r) for i, r in enumerate(read_csv_rows(path, required=("name", "answer")))]
    else:
        raise UserError(f"{path}: answer files must be .npz, .jsonl or .csv")
    pairs = []
    for lineno, row in rows:
        task = row.get("task")
        if task is not None and not isinstance(task, str):
            raise UserError(f"{path}: line {lineno}: 'task' is {shown(task)}, not a task id")
        if task_id is not None and task not in (None, "", task_id):
            continue
        pairs.append((_text_name(row["name"], path, f"line {lineno}: "), row["answer"]))
    return unique_names(pairs, path, "answers", notes)


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
