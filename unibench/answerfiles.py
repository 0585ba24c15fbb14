"""The answer-file layout of the benchmark: reading and writing answers and their extractions.

* answers: ``results-<task>/<run>/<answer>.npz``, key ``name2reason`` (a
  pickled dict name -> answer text), or a JSONL / CSV table with ``name`` and
  ``answer`` columns (optionally ``task``);
* extractions beside them: ``<answer>-openset.npz`` (prompt A's label lists)
  and ``<answer>-openset-sentiment.npz`` (prompt B's sentiments), unicode
  arrays ``filenames`` and ``fileitems``; and ``<answer>-extraction.json``,
  the note saying which extractor made files this harness saved there.

Leaf module: the replay adapter, the extraction stage, the inference runner
and the grouping metric all read and write through it. Every reader refuses
what would silently change a score: names that are not text, a name given
twice with different content, a malformed note.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from unibench.errors import UserError
from unibench.fileio import atomic_open
from unibench.safe_npz import check_unique_names, load_npz
from unibench.strict import loads_json, read_csv_rows, read_json_file, shown


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
            answers[name] = value
        else:
            rejected[name] = f"answer is {type(value).__name__}, not text"
    try:  # one check for the whole file; per answer only when some text is not valid Unicode
        "".join(answers.values()).encode("utf-8")
    except UnicodeEncodeError:
        answers = {n: valid_text(a) for n, a in answers.items()}
    return answers, rejected


def read_extraction_npz(path: Path) -> dict[str, str]:
    """An extraction file (arrays ``filenames`` and ``fileitems``) -> name -> item ('' where not text)."""
    return read_extraction_file(path)[0]


def read_extraction_file(path: Path, notes: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """An extraction file (arrays ``filenames`` and ``fileitems``) -> (name -> item, names whose item is
    not text: failed extractions)."""
    notes = notes if notes is not None else []
    data = load_npz(path, ["filenames", "fileitems"], notes=notes)
    try:  # tolist(): plain str out of a unicode array in one call (the usual case: no pickle)
        names, items = _as_list(data["filenames"]), _as_list(data["fileitems"])
    except TypeError:
        raise UserError(f"{path}: 'filenames' and 'fileitems' must be arrays") from None
    if len(names) != len(items):
        raise UserError(f"{path}: 'filenames' has {len(names)} entries but 'fileitems' has {len(items)}")
    names = _text_names(names, path, "'filenames': ")
    pairs = unique_names(zip(names, items), path, "key 'filenames'", notes)
    failed = [n for n, i in pairs.items() if not isinstance(i, str)]
    texts, _ = split_answers({n: i for n, i in pairs.items() if isinstance(i, str)})
    return {n: texts.get(n, "") for n in pairs}, failed


def _as_list(value: Any) -> list[Any]:
    return value.tolist() if hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1 else list(value)


def _text_names(names: list[Any], path: Path, where: str) -> list[str]:
    """Every name is non-empty text (checked per name only when the fast check fails)."""
    if all(type(n) is str and n and not n.isspace() for n in names):
        return names
    return [_text_name(n, path, where) for n in names]


PROVENANCE_HINT = ("delete it together with the -openset*.npz files beside it to extract again, or restore "
                   "the note written by run_bench")


def read_provenance(stem: Path) -> dict:
    """Who made extraction files that this harness saved beside an answer file (none for the authors' files)."""
    path = Path(f"{stem}-extraction.json")
    if not path.is_file():
        return {}
    try:
        return read_json_file(path, "a valid extraction note", _provenance_problem)
    except UserError as exc:
        raise UserError(f"{exc} (an extraction note); {PROVENANCE_HINT}") from None


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


def read_answer_npz(path: Path, notes: list[str] | None = None) -> dict[str, Any]:
    """name -> stored answer (any type: :func:`split_answers` sorts out what is not text)."""
    data = load_npz(path, ["name2reason"], notes=notes)["name2reason"]
    if not isinstance(data, dict):
        raise UserError(f"{path}: 'name2reason' holds {type(data).__name__}, expected a dict name -> answer")
    _text_names(list(data), path, "'name2reason': ")
    return {str(k): v for k, v in data.items()}


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


def answer_stem(source: str) -> str:
    """'…/checkpoint_000030_loss_0.602.npz' -> '…/checkpoint_000030_loss_0.602'."""
    path = Path(source)
    return str(path.with_suffix("")) if path.suffix else source


def provenance_path(stem: str | Path) -> Path:
    """``<answer>-extraction.json``: who made the extraction files saved beside an answer file."""
    return Path(f"{stem}-extraction.json")


def write_name2reason(path: Path, answers: dict[str, str]) -> None:
    """The original answer-file layout: one npz, key ``name2reason`` -> dict name -> answer."""
    import numpy as np

    with atomic_open(path, "wb") as fh:
        np.savez(fh, name2reason=np.array(dict(answers), dtype=object))


def save_extraction_npz(path: Path, mapping: dict[str, str]) -> None:
    """The original layout: unicode arrays ``filenames`` and ``fileitems`` (no pickle)."""
    import numpy as np

    names = list(mapping)
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, filenames=np.array(names, dtype=str),
                            fileitems=np.array([mapping[n] for n in names], dtype=str))
