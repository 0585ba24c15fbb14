"""The task registry, and the loader for the folder layout the benchmark ships.

The types (:class:`TaskSpec`, :class:`TaskData`) live in the leaf module
``unibench.taskdata`` so adapters can use them without importing tasks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unibench.errors import UserError
from unibench.labels import string_to_list
from unibench.strict import kind as _kind
from unibench.strict import read_csv_rows
from unibench.taskdata import TaskData, TaskSpec

TASKS: dict[str, TaskSpec] = {}          # the nine benchmark tasks
EXTRA_TASKS: dict[str, TaskSpec] = {}    # tasks outside the benchmark (in_benchmark=False)


def register_task(spec: TaskSpec) -> TaskSpec:
    (TASKS if spec.in_benchmark else EXTRA_TASKS)[spec.id] = spec
    return spec


def get_task(task_id: str) -> TaskSpec:
    try:
        return TASKS[task_id.lower()] if task_id.lower() in TASKS else EXTRA_TASKS[task_id.lower()]
    except KeyError:
        raise UserError(f"unknown task '{task_id}' (known: {', '.join([*TASKS, *EXTRA_TASKS])}, "
                        "or 'all' for the nine benchmark tasks)") from None


def resolve_tasks(value: str) -> list[TaskSpec]:
    if value.strip().lower() == "all":
        return list(TASKS.values())
    out = []
    for part in value.split(","):
        if part.strip():
            spec = get_task(part.strip())
            if spec not in out:
                out.append(spec)
    if not out:
        raise UserError("--task is empty: give 'all' or a comma list of task ids")
    return out


def resolve_data_root(value: str | None) -> Path:
    value = value or os.environ.get("UNIBENCH_DATA")
    if not value:
        raise UserError("no data root given: pass --data-root DIR or set UNIBENCH_DATA")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise UserError(f"data root not found: {root}")
    return root


# ---------------------------------------------------------------- loading

def _gt_value(spec: TaskSpec, value: Any) -> tuple[Any, str]:
    """A stored ground-truth value -> (the value scoring uses, '' or why it is not valid)."""
    import math

    import numpy as np

    if spec.gt_kind == "emo_index":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
            return None, f"'emo' is {_kind(value)}, expected an index into {list(spec.emotions)}"
        if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
            return None, f"'emo' is {_kind(value)}, expected a whole index into {list(spec.emotions)}"
        if not 0 <= int(value) < len(spec.emotions):
            return None, f"'emo' index {_kind(value)} is outside 0..{len(spec.emotions) - 1} ({list(spec.emotions)})"
        return spec.emotions[int(value)], ""
    if spec.gt_kind == "val":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
            return None, f"'val' is {_kind(value)}, expected a number"
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            return None, f"'val' is {_kind(value)}, expected a finite number"
        return number, ""
    if not isinstance(value, str) or not any(c.isalpha() for c in value):
        return None, f"'emo' is {_kind(value)}, expected an emotion word"
    return str(value), ""


def _bad_gt(spec: TaskSpec, path: Path, where: str, bad: list[tuple[str, str]], skip: bool,
            warnings: list[str], flags: list[str]) -> None:
    """Stop at invalid ground truth, or (``--skip-bad-gt``) say how many samples were left out and flag it."""
    if not bad:
        return
    first_name, first_why = bad[0]
    more = f" ({len(bad)} sample(s) like this)" if len(bad) > 1 else ""
    if not skip:
        raise UserError(f"{path}: {where}sample '{first_name}': {first_why}{more}; fix the file, or pass "
                        "--skip-bad-gt to leave such samples out (the row is then flagged)")
    warnings.append(f"[{spec.id}] {len(bad)} test sample(s) with invalid ground truth left out "
                    f"(--skip-bad-gt), e.g. '{first_name}': {first_why}")
    flags.append(f"bad-gt-skipped:{len(bad)}")


def _load_npz_gt(spec: TaskSpec, path: Path, skip_bad: bool = False) -> tuple[dict[str, Any], int, list[str], list[str]]:
    """(gt, samples in the split before skipping, warnings, flags)."""
    from unibench.safe_npz import load_npz

    if not path.is_file():
        raise UserError(f"[{spec.id}] ground-truth file not found: {path}")
    notes: list[str] = []
    corpus = load_npz(path, [spec.gt_key], notes=notes)[spec.gt_key]
    if not isinstance(corpus, dict):
        raise UserError(f"{path}: key '{spec.gt_key}' holds {type(corpus).__name__}, expected a dict name -> labels")
    gt: dict[str, Any] = {}
    bad: list[tuple[str, str]] = []
    field_name = "val" if spec.gt_kind == "val" else "emo"
    in_split = 0
    for name, item in corpus.items():
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{path}: key '{spec.gt_key}': sample name {_kind(name)} is not text")
        if spec.split == "session5" and not (len(name) > 4 and name[4] == "5"):
            continue
        in_split += 1
        if not isinstance(item, dict) or field_name not in item:
            raise UserError(f"{path}: key '{spec.gt_key}', sample '{name}': no '{field_name}' field")
        value, problem = _gt_value(spec, item[field_name])
        if problem:
            bad.append((name, problem))
            continue
        gt[str(name)] = value
    warnings = [f"[{spec.id}] {n}" for n in notes]
    flags: list[str] = []
    _bad_gt(spec, path, f"key '{spec.gt_key}', ", bad, skip_bad, warnings, flags)
    return gt, in_split, warnings, flags


def _load_csv_gt(spec: TaskSpec, path: Path, skip_bad: bool = False) -> tuple[dict[str, Any], int, list[str], list[str]]:
    if not path.is_file():
        raise UserError(f"[{spec.id}] ground-truth file not found: {path}")
    name_col, label_col = spec.gt_key.split(",")
    gt: dict[str, Any] = {}
    raw: dict[str, str] = {}
    bad: list[tuple[str, str]] = []
    warnings: list[str] = []
    agreeing: list[str] = []
    rows = read_csv_rows(path, required=(name_col, label_col))
    for row in rows:
        name, text = row[name_col], row[label_col]
        if name is None or not name.strip():
            raise UserError(f"{path}: a row has an empty '{name_col}'")
        if text is None:
            bad.append((name, f"no '{label_col}' value"))
            continue
        if name in raw:
            if raw[name] != text:
                conflicts = _csv_conflicts(rows, name_col, label_col)
                raise UserError(f"{path}: {len(conflicts)} sample name(s) appear more than once with different "
                                f"'{label_col}' values (e.g. '{conflicts[0]}'); remove the duplicates")
            agreeing.append(name)
            continue
        raw[name] = text
        labels = string_to_list(text)
        gt[name] = labels if labels else ["neutral"]  # empty list means neutral (published loader)
    if agreeing:
        warnings.append(f"[{spec.id}] {len(agreeing)} sample name(s) appear more than once in {path} with the "
                        f"same labels (e.g. '{agreeing[0]}'); counted once")
    flags: list[str] = []
    _bad_gt(spec, path, "", bad, skip_bad, warnings, flags)
    return gt, len(raw) + len(bad), warnings, flags


def _csv_conflicts(rows: list[dict[str, str]], name_col: str, label_col: str) -> list[str]:
    seen: dict[str, set] = {}
    for row in rows:
        seen.setdefault(row[name_col], set()).add(row[label_col])
    return [n for n, values in seen.items() if len(values) > 1]


def load_task(spec: TaskSpec, data_root: Path, check_count: bool = True, skip_bad_gt: bool = False) -> TaskData:
    """A task's test split, checked: every ground-truth value of the right type (else one error naming the
    file and a sample; ``skip_bad_gt`` leaves such samples out, flagged) and the protocol's sample count."""
    root = data_root / spec.folder
    if not root.is_dir():
        raise UserError(f"[{spec.id}] task folder not found: {root}")
    path = root / spec.gt_file
    loader = _load_csv_gt if spec.gt_kind == "openset" else _load_npz_gt
    gt, n_split, warnings, flags = loader(spec, path, skip_bad_gt)
    task = TaskData(spec=spec, root=root, gt=gt, warnings=warnings, flags=flags)
    if n_split != spec.expected_count:
        msg = (f"[{spec.id}] {path} ({spec.gt_key}) holds {n_split} test samples, the protocol has "
               f"{spec.expected_count}")
        if check_count:
            raise UserError(msg + " (pass --allow-count-mismatch to score anyway; results are then marked)")
        task.warnings.append(msg)
        task.flags.append("count-mismatch")
    if not gt:
        raise UserError(f"[{spec.id}] {path}: no valid test samples")
    return task
