"""`run_bench compare A B`: is A really better than B? Paired bootstrap per task and over the task mean.

A side is a model of the results folder (each task uses the answer file its leaderboard row uses,
``--select best|last``) or one answer file of a model, ``MODEL:FILE_LABEL``. Per task both sides have,
the per-sample scores (``<answer>.scores.npz``) are paired on the samples both answered and resampled
with the same counts (:func:`unibench.metrics.bootstrap.paired_difference`). The mean over tasks is the
difference of the two task means; tasks hold disjoint samples, so each task is resampled on its own (with
the counts of its paired difference) and the replicate differences are averaged across tasks.

Testing every task at 0.05 makes about 0.05·k false "significant" differences expected by chance, so the
per-task p-values come with Holm's adjustment and the mean over tasks is the one pre-specified test.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unibench.errors import UserError
from unibench.metrics.bootstrap import (DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, KIND_OF_FAMILY,
                                        MAX_RESAMPLES, SampleScores, paired_difference, percentile_interval,
                                        shifted_null_p)
from unibench.strict import ArgumentParser, one_line
from unibench.tasks.base import TASKS

ALPHA = 0.05
SHOWN_NAMES = 8


# ---------------------------------------------------------------- the two sides

@dataclass
class Side:
    """One side of the comparison: a model with a selection, or one answer file of a model."""

    spec: str                   # as the user wrote it
    model: str
    folder: Path                # OUTPUT/<safe model>
    mode: str                   # best | last | file:<label>
    summaries: dict[str, Any]   # task id -> TaskSummary

    @property
    def what(self) -> str:
        return f"{self.model}, {self.mode}" if not self.mode.startswith("file:") else \
            f"{self.model}, answer file {self.mode[5:]}"


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return (shown + f", ... ({len(names)} in all)") if len(names) > SHOWN_NAMES else (shown or "none")


def resolve_side(spec: str, output: Path, select: str, models: dict[str, str]) -> Side:
    """``MODEL`` or ``MODEL:FILE_LABEL`` -> a Side; UserError listing the models or files that exist."""
    from unibench.results import load_summaries

    if spec in models:
        model, label = spec, ""
    else:  # MODEL:FILE (a model name may itself hold ':', so try every split, longest model first)
        splits = [(spec[:i], spec[i + 1:]) for i in range(len(spec) - 1, 0, -1) if spec[i] == ":"]
        known = [(m, f) for m, f in splits if m in models]
        if not known:
            raise UserError(f"compare: unknown model '{one_line(spec)}' in {output} "
                            f"(models: {_listed(sorted(models))}; one answer file: MODEL:FILE_LABEL)")
        model, label = known[0]
    summaries = load_summaries(output, model)
    side = Side(spec, model, output / models[model], f"file:{label}" if label else select, summaries)
    if label and not any(s.select(side.mode) for s in summaries.values()):
        files = sorted({f.label for s in summaries.values() for f in s.files})
        raise UserError(f"compare: model '{model}' has no answer file '{one_line(label)}' in {output} "
                        f"(files: {_listed(files)})")
    return side


# ---------------------------------------------------------------- per-sample scores

def _shape_problem(data: dict[str, Any], kind: str) -> str:
    """What is wrong with the arrays' shapes ('' when nothing): the statistics need (n, 5) wheels."""
    names = np.asarray(data.get("names"))
    if names.ndim != 1:
        return "'names' is not a list"
    if len(set(names.tolist())) != len(names):
        return "'names' holds a sample twice"
    n = len(names)
    if kind in ("hit", "ov"):
        for key in (("hit",) if kind == "hit" else ("precision", "recall")):
            arr = np.asarray(data[key])
            if arr.shape != (n, 5) or not np.issubdtype(arr.dtype, np.floating):
                return f"'{key}' has shape {arr.shape} ({arr.dtype}), expected ({n}, 5) floats"
    else:
        for key in ("kept", "y_true", "y_pred"):
            if np.asarray(data[key]).shape != (n,):
                return f"'{key}' has shape {np.asarray(data[key]).shape}, expected ({n},)"
    return ""


def load_scores(path: Path, task_id: str) -> SampleScores:
    """One answer file's per-sample scores; UserError naming the file and saying to rerun the task."""
    from unibench.safe_npz import load_npz

    rerun = f"rerun --task {task_id} with this version of run_bench to write it"
    if not path.is_file():
        raise UserError(f"{path}: no per-sample scores ({rerun})")
    try:
        data = load_npz(path)
        scores = SampleScores.from_arrays(data)
        problem = _shape_problem(data, scores.kind)
    except UserError as exc:
        raise UserError(f"{one_line(str(exc))} ({rerun})") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: malformed per-sample scores ({one_line(str(exc))[:120]}; {rerun})") from None
    want = KIND_OF_FAMILY[TASKS[task_id].family]
    if not problem and scores.kind != want:
        problem = f"holds '{scores.kind}' scores, task {task_id} has '{want}' scores"
    if problem:
        raise UserError(f"{path}: malformed per-sample scores ({problem}; {rerun})")
    return scores


def scores_path(side: Side, task_id: str, label: str) -> Path:
    from unibench.fileio import safe_name

    return side.folder / task_id / f"{safe_name(label)}.scores.npz"


# ---------------------------------------------------------------- statistics

def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, in the input order: sorted p_(i) times (k - i), running maximum, cap 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class TaskComparison:
    task: str
    metric: str
    a_file: str
    b_file: str
    a: float                     # on the paired samples, 0-1
    b: float
    difference: float
    lo: float
    hi: float
    p_value: float
    n: int                       # samples paired (both hold them, both answered)
    unanswered: int              # held by both, left out because one side (or both) had no answer
    only_a: int                  # samples only A's file holds (e.g. B ran with --limit)
    only_b: int
    p_holm: float = 1.0
    replicates: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "replicates"}


@dataclass
class MeanComparison:
    tasks: list[str]
    a: float
    b: float
    difference: float
    lo: float
    hi: float
    p_value: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare_task(task_id: str, a_file: str, b_file: str, a: SampleScores, b: SampleScores,
                 resamples: int, seed: int) -> TaskComparison:
    metric = TASKS[task_id].primary_metric
    common = set(a.names) & set(b.names)
    a_answered = dict(zip(a.names, a.answered.tolist()))
    b_answered = dict(zip(b.names, b.answered.tolist()))
    n = sum(1 for name in common if a_answered[name] and b_answered[name])
    if n == 0:
        raise _NotCompared(f"no sample that both answered ({len(common)} held by both)")
    pd = paired_difference(a, b, metric, resamples, seed, DEFAULT_LEVEL)
    return TaskComparison(task_id, metric, a_file, b_file, pd.a, pd.b, pd.difference, pd.lo, pd.hi, pd.p_value,
                          pd.n, len(common) - n, a.n - len(common), b.n - len(common), replicates=pd.replicates)


def compare_mean(rows: list[TaskComparison]) -> MeanComparison:
    """Difference of the task means; its replicates are the mean over tasks of each task's replicates
    (tasks are disjoint sets of samples, each resampled with its own paired counts)."""
    d_star = np.mean(np.stack([r.replicates for r in rows]), axis=0)
    a = float(np.mean([r.a for r in rows]))
    b = float(np.mean([r.b for r in rows]))
    d = float(np.mean([r.difference for r in rows]))
    lo, hi = percentile_interval(d_star, DEFAULT_LEVEL)
    return MeanComparison([r.task for r in rows], a, b, d, lo, hi, shifted_null_p(d, d_star))


class _NotCompared(Exception):
    """A task both sides have but that cannot be compared (the message says why)."""


# ---------------------------------------------------------------- the comparison

@dataclass
class Comparison:
    a: Side
    b: Side
    resamples: int
    seed: int
    tasks: list[TaskComparison]
    not_compared: list[tuple[str, str]]          # (task, reason)
    mean: MeanComparison | None

    @property
    def caveat(self) -> str:
        k = len(self.tasks)
        return (f"{k} task(s) tested at {ALPHA}: about {ALPHA * k:.2f} false 'significant' difference(s) are "
                "expected by chance alone even when A and B do not differ; read the Holm-adjusted p-values for "
                "per-task claims. The mean over tasks is the single pre-specified comparison.")

    def notes(self) -> list[str]:
        out = []
        for r in self.tasks:
            if r.only_a or r.only_b:
                out.append(f"{r.task}: A and B hold different samples (A {r.n + r.unanswered + r.only_a}, "
                           f"B {r.n + r.unanswered + r.only_b}); paired on the {r.n + r.unanswered} both hold"
                           + (f", of which {r.n} both answered" if r.unanswered else ""))
            elif r.unanswered:
                out.append(f"{r.task}: {r.unanswered} sample(s) left out because A or B had no answer")
        for label, side, key in (("A", self.a, "a_file"), ("B", self.b, "b_file")):
            if not side.mode.startswith("file:"):
                used = ", ".join(f"{r.task} {getattr(r, key)}" for r in self.tasks)
                out.append(f"{label} ({side.what}) uses: {used or 'no task'}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"a": {"spec": self.a.spec, "model": self.a.model, "selection": self.a.mode},
                "b": {"spec": self.b.spec, "model": self.b.model, "selection": self.b.mode},
                "resamples": self.resamples, "seed": self.seed, "level": DEFAULT_LEVEL,
                "method": "paired percentile bootstrap over test samples; p-value from replicates shifted "
                          "to mean zero",
                "tasks": [r.to_json() for r in self.tasks],
                "not_compared": [{"task": t, "reason": why} for t, why in self.not_compared],
                "mean": self.mean.to_json() if self.mean else None,
                "notes": self.notes(), "caveat": self.caveat}


def compare(a: Side, b: Side, task_ids: list[str], resamples: int, seed: int,
            explicit: bool = False) -> Comparison:
    """``explicit``: the tasks were named (--task), so one that neither side has is listed as not compared."""
    rows: list[TaskComparison] = []
    skipped: list[tuple[str, str]] = []
    for task_id in task_ids:
        sa, sb = a.summaries.get(task_id), b.summaries.get(task_id)
        if sa is None and sb is None and not explicit:
            continue
        fa = sa.select(a.mode) if sa else None
        fb = sb.select(b.mode) if sb else None
        missing = [f"{name} ({side.what}) has no {'results' if s is None else 'such answer file'}"
                   for name, side, s, f in (("A", a, sa, fa), ("B", b, sb, fb)) if f is None]
        if sa is None and sb is None:
            missing = ["neither A nor B has results"]
        if missing:
            skipped.append((task_id, "; ".join(missing)))
            continue
        assert fa is not None and fb is not None
        scores_a = load_scores(scores_path(a, task_id, fa.label), task_id)
        scores_b = load_scores(scores_path(b, task_id, fb.label), task_id)
        try:
            rows.append(compare_task(task_id, fa.label, fb.label, scores_a, scores_b, resamples, seed))
        except _NotCompared as exc:
            skipped.append((task_id, str(exc)))
    for row, adjusted in zip(rows, holm([r.p_value for r in rows])):
        row.p_holm = adjusted
    return Comparison(a, b, resamples, seed, rows, skipped, compare_mean(rows) if rows else None)


# ---------------------------------------------------------------- printing

def _pts(v: float, signed: bool = False) -> str:
    return f"{v * 100:+.2f}" if signed else f"{v * 100:.2f}"


def _p(v: float) -> str:
    return f"{v:.3f}"


COLUMNS = ["task", "metric", "A", "B", "A-B", "95% interval", "p", "p (Holm)", "n paired", "left out"]


def _table_rows(c: Comparison) -> list[list[str]]:
    rows = [[r.task, r.metric, _pts(r.a), _pts(r.b), _pts(r.difference, True),
             f"[{_pts(r.lo, True)}, {_pts(r.hi, True)}]", _p(r.p_value), _p(r.p_holm), str(r.n),
             str(r.unanswered)] for r in c.tasks]
    if c.mean:
        m = c.mean
        rows.append([f"mean ({len(m.tasks)} tasks)", "primary", _pts(m.a), _pts(m.b), _pts(m.difference, True),
                     f"[{_pts(m.lo, True)}, {_pts(m.hi, True)}]", _p(m.p_value), "-",
                     str(sum(r.n for r in c.tasks)), str(sum(r.unanswered for r in c.tasks))])
    return rows


def _header(c: Comparison) -> list[str]:
    return [f"A = {one_line(c.a.spec)} ({c.a.what})", f"B = {one_line(c.b.spec)} ({c.b.what})",
            f"paired bootstrap over the test samples both answered: {c.resamples} resamples, seed {c.seed}, "
            f"{DEFAULT_LEVEL:.0%} percentile intervals; scores x100; the mean over tasks resamples each task "
            "on its own"]


def format_text(c: Comparison) -> str:
    lines = _header(c) + [""]
    rows = _table_rows(c)
    if rows:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(COLUMNS)]
        fmt = lambda cells: "  ".join(v.ljust(w) if i < 2 else v.rjust(w)  # noqa: E731
                                      for i, (v, w) in enumerate(zip(cells, widths)))
        lines += [fmt(COLUMNS), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows[:-1]),
                  "  ".join("-" * w for w in widths), fmt(rows[-1])]
    else:
        lines.append("no task both sides have: nothing compared")
    if c.not_compared:
        lines += ["", "not compared:", *(f"  {t}: {why}" for t, why in c.not_compared)]
    notes = c.notes()
    if notes:
        lines += ["", "notes:", *(f"  {n}" for n in notes)]
    lines += ["", f"caveat: {c.caveat}"]
    return "\n".join(lines)


def format_md(c: Comparison) -> str:
    lines = [f"- {h}" for h in _header(c)] + [""]
    rows = _table_rows(c)
    if rows:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
    else:
        lines.append("No task both sides have: nothing compared.")
    if c.not_compared:
        lines += ["", "Not compared:", "", *(f"- {t}: {why}" for t, why in c.not_compared)]
    notes = c.notes()
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    lines += ["", f"**Caveat.** {c.caveat}"]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def _task_ids(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(TASKS)
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        raise UserError(f"compare: unknown task(s) {', '.join(one_line(t) for t in unknown)} "
                        f"(tasks: {', '.join(TASKS)})")
    return [t for t in TASKS if t in wanted]   # paper column order


def main(argv: list[str]) -> int:
    from unibench.results import summary_models

    p = ArgumentParser(prog="run_bench compare",
                       description="paired bootstrap comparison of two models (or two answer files)")
    p.add_argument("a", metavar="A", help="a model of the results folder, or MODEL:FILE_LABEL for one answer file")
    p.add_argument("b", metavar="B", help="the other side, written the same way")
    p.add_argument("--output", default="results", help="results folder (default: results/)")
    p.add_argument("--task", default="all", help="'all' or a comma list of task ids")
    p.add_argument("--select", choices=("best", "last"), default="best",
                   help="the answer file a MODEL side uses per task (default: best, as its leaderboard row)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                   help=f"bootstrap resamples (default {DEFAULT_RESAMPLES}, at most {MAX_RESAMPLES})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"bootstrap seed (default {DEFAULT_SEED})")
    p.add_argument("--format", choices=("text", "md", "json"), default="text")
    args = p.parse_args(argv)
    if not 1 <= args.resamples <= MAX_RESAMPLES:
        raise UserError(f"compare: --resamples must be between 1 and {MAX_RESAMPLES}")
    if args.seed < 0:
        raise UserError("compare: --seed must be 0 or more")
    output = Path(args.output)
    if not output.is_dir():
        raise UserError(f"compare: no results folder {output} (pass --output DIR)")
    task_ids = _task_ids(args.task)
    models = summary_models(output)
    if not models:
        raise UserError(f"compare: no model results in {output}: run a model first")
    a = resolve_side(args.a, output, args.select, models)
    b = resolve_side(args.b, output, args.select, models)
    result = compare(a, b, task_ids, args.resamples, args.seed, explicit=args.task not in ("", "all"))
    if args.format == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(format_md(result) if args.format == "md" else format_text(result))
    return 0
