"""`run_bench report`: the leaderboard, tables for papers and model cards, what best-of-N costs, reproduction.

Two halves:

* data: :func:`report_data` reads a results folder (``leaderboard.csv`` for the rows, each task's
  ``summary.json``, the per-file JSON and ``.scores.npz``, the model's ``run.json``) into one dict, the
  "unibench-report/1" schema shared with ``unibench.html`` and ``unibench.plots``;
* renderers: small functions turning that dict into a terminal table, Markdown, LaTeX (booktabs), CSV,
  JSON or (through ``unibench.html``) HTML, and :func:`reproduction` comparing one of our rows with a
  published row task by task.

Internally the dict is built at full precision (a reproduction verdict compares our value rounded to two
decimals with the published two decimals, so no earlier rounding may shift it); ``report_data`` rounds
its scores to four decimals for the outside world.
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unibench.errors import UserError
from unibench.strict import ArgumentParser, one_line

SCHEMA = "unibench-report/1"
TITLES = {"mer2023": "MER2023", "mer2024": "MER2024", "meld": "MELD", "iemocapfour": "IEMOCAP",
          "cmumosi": "CMU-MOSI", "cmumosei": "CMU-MOSEI", "sims": "SIMS", "simsv2": "SIMS v2",
          "ovmerdplus": "OV-MERD+"}
METRIC_NAMES = {"hit_rate": "hit rate", "waf": "WAF", "fscore": "EW F-score"}
FORMATS = ("text", "md", "latex", "csv", "json", "html")
REPRODUCE_FORMATS = ("text", "md", "json")
UNROUNDED_KEYS = {"provenance", "closed_set"}   # passed through as written (fractions, versions, ...)


# ================================================================ data

@dataclass
class _Folder:
    """A results folder being read: where it is, the bootstrap settings, and files read once."""

    output: Path
    resamples: int
    seed: int
    _scores: dict[Path, Any] = field(default_factory=dict)
    _intervals: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def scores(self, path: Path) -> Any:
        """The per-sample scores of one answer file (metrics.bootstrap.SampleScores), None when not written."""
        if path not in self._scores:
            self._scores[path] = _read_scores(path) if path.is_file() else None
        return self._scores[path]

    def intervals(self, path: Path) -> dict[str, Any]:
        """Intervals computed here from one file's per-sample scores (a run that stored none), once per file:
        the leaderboard cell and the drill-down both show the selected file's."""
        if path not in self._intervals:
            from unibench.metrics.bootstrap import intervals

            scores = self.scores(path)
            self._intervals[path] = {} if scores is None else intervals(scores, self.resamples, self.seed)
        return self._intervals[path]


def _read_scores(path: Path) -> Any:
    from unibench.metrics.bootstrap import SampleScores
    from unibench.safe_npz import load_npz

    try:
        return SampleScores.from_arrays(load_npz(path))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not per-sample scores ({one_line(str(exc))[:120]}); rerun the task to "
                        "write it again") from None


def _read_object(path: Path, what: str) -> dict[str, Any] | None:
    """A JSON object file; None when absent (older runs), UserError naming it when it cannot be read."""
    from unibench.strict import read_json_file

    if not path.exists():
        return None
    return read_json_file(path, what, lambda d: "" if isinstance(d, dict) else f"holds {type(d).__name__}")


def _percent(value: Any) -> float | None:
    return None if value is None else float(value) * 100


def report_data(output: Path, paper: bool = False, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Everything a report shows, as the "unibench-report/1" dict (scores 0-100, four decimals)."""
    return _rounded(collect(Path(output), paper, resamples, seed))


def collect(output: Path, paper: bool = False, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """:func:`report_data` at full precision."""
    from unibench import __version__
    from unibench.metrics.bootstrap import DEFAULT_LEVEL
    from unibench.results import load_summaries, safe_name
    from unibench.tasks.base import TASKS

    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a results folder")
    folder = _Folder(output, resamples, seed)
    board = _our_rows(output)
    rows, models = [], {}
    for model in dict.fromkeys(r["model"] for r in board):
        model_dir = output / safe_name(model)
        summaries = load_summaries(output, model) if model_dir.is_dir() else {}  # unreadable: UserError
        for board_row in (r for r in board if r["model"] == model):
            rows.append(_our_row(folder, model_dir, board_row, summaries))
        if summaries:
            models[model] = _drilldown(folder, model, model_dir, summaries)
    if paper:
        rows.extend(_published_rows())
    return {
        "schema": SCHEMA, "generated": time.strftime("%Y-%m-%dT%H:%M:%S"), "unibench": __version__,
        "output": str(output),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": DEFAULT_LEVEL},
        "tasks": [{"id": t, "title": TITLES.get(t, t), "metric": spec.primary_metric, "family": spec.family}
                  for t, spec in TASKS.items()],
        "rows": rows, "models": models,
    }


def read_board(path: Path) -> list[dict[str, str]]:
    """leaderboard.csv's rows ([] when absent); one line saying how to rebuild it when it is not ours."""
    from unibench.results import LeaderboardProblem, read_leaderboard

    try:
        return read_leaderboard(path)
    except LeaderboardProblem as exc:
        raise UserError(f"{path}: {exc}; run_bench report --output {path.parent} --rebuild keeps it aside and "
                        "rebuilds it from the summaries on disk") from None


def _our_rows(output: Path) -> list[dict[str, str]]:
    """The leaderboard's rows; without a leaderboard.csv, each model's best-of-N row computed from its summaries."""
    from unibench.results import leaderboard_row, load_summaries, summary_models

    path = output / "leaderboard.csv"
    rows = read_board(path)
    if not path.is_file():
        rows = [leaderboard_row(m, load_summaries(output, m), "best") for m in summary_models(output)]
    return rows


def _our_row(folder: _Folder, model_dir: Path, board_row: dict[str, str], summaries: dict) -> dict[str, Any]:
    """One leaderboard row with, per task, the selected file's value, interval and name."""
    from unibench.results import selection_mode
    from unibench.tasks.base import TASKS

    mode = selection_mode(board_row.get("selection", ""))
    cells: dict[str, Any] = {}
    for task_id, spec in TASKS.items():
        summary = summaries.get(task_id)
        chosen = summary.select(mode) if summary is not None else None
        if chosen is not None:
            lo, hi = _interval(folder, model_dir / task_id, summary, chosen)
            cells[task_id] = {"value": chosen.primary * 100, "lo": lo, "hi": hi, "file": chosen.label,
                              "n_files": summary.n_files, "metric": spec.primary_metric}
        elif board_row.get(task_id) and not summaries:  # a row kept without results on disk: its values only
            cells[task_id] = {"value": float(board_row[task_id]), "lo": None, "hi": None, "file": None,
                              "n_files": None, "metric": spec.primary_metric}
    values = [c["value"] for c in cells.values()]
    return {"model": board_row["model"], "selection": board_row.get("selection", ""), "published": False,
            "flags": [f for f in (board_row.get("flags") or "").split(";") if f],
            "mean": sum(values) / len(values) if values else None, "n_tasks": len(values), "cells": cells}


def _interval(folder: _Folder, task_dir: Path, summary: Any, chosen: Any) -> tuple[float | None, float | None]:
    """The 95 % interval of one file's primary score: as the run stored it, else from its per-sample scores."""
    from unibench.results import safe_name

    if chosen.interval:
        return _percent(chosen.interval[0]), _percent(chosen.interval[1])
    found = folder.intervals(task_dir / f"{safe_name(chosen.label)}.scores.npz").get(summary.primary_metric)
    return (None, None) if found is None else (found.lo * 100, found.hi * 100)


def _published_rows() -> list[dict[str, Any]]:
    from unibench.results import read_paper_rows
    from unibench.tasks.base import TASKS

    rows = []
    for r in read_paper_rows():
        cells = {t: {"value": float(r[t]), "lo": None, "hi": None, "file": None, "n_files": None,
                     "metric": spec.primary_metric} for t, spec in TASKS.items() if r.get(t)}
        rows.append({"model": r["model"], "selection": "published", "published": True, "flags": [],
                     "mean": float(r["mean"]) if r.get("mean") else None, "n_tasks": len(cells), "cells": cells})
    return rows


def _drilldown(folder: _Folder, model: str, model_dir: Path, summaries: dict) -> dict[str, Any]:
    """A model's provenance and, per task, every answer file and what picking the best of them costs."""
    from unibench.results import safe_name, selection_mode

    provenance = _read_object(model_dir / "run.json", "a run's metadata") or {}
    mode = selection_mode(str(provenance.get("select") or "best"))
    tasks = {}
    for task_id, summary in summaries.items():
        task_dir = model_dir / task_id
        selected = summary.select(mode) or summary.select("best")
        files, closed_set = [], None
        for f in sorted(summary.files, key=lambda f: f.order):
            report = _read_object(task_dir / f"{safe_name(f.label)}.json", "an answer file's report") or {}
            lo, hi = _interval(folder, task_dir, summary, f)
            files.append({"label": f.label, "order": f.order, "value": f.primary * 100, "lo": lo, "hi": hi,
                          "flags": list(f.flags), "per_wheel": _per_wheel(report, summary.primary_metric),
                          "extraction": _extraction(report, f.extraction)})
            if f is selected:
                closed_set = report.get("closed_set")
        samples = task_dir / f"{safe_name(selected.label)}.samples.csv"
        tasks[task_id] = {
            "metric": summary.primary_metric, "level": summary.level, "lexicon_sha256": summary.lexicon_sha256,
            "flags": list(summary.flags), "selected": selected.label, "files": files,
            "selection": _selection(folder, task_dir, summary), "closed_set": closed_set,
            "samples_csv": samples.relative_to(folder.output).as_posix() if samples.is_file() else None,
        }
    return {"folder": model_dir.name, "provenance": provenance, "tasks": tasks}


def _per_wheel(report: dict[str, Any], metric: str) -> dict[str, float]:
    wheels = report.get("per_wheel")
    if not isinstance(wheels, dict):
        return {}
    return {w: float(v[metric]) * 100 for w, v in wheels.items()
            if isinstance(v, dict) and isinstance(v.get(metric), (int, float))}


def _extraction(report: dict[str, Any], fallback: dict[str, str]) -> dict[str, Any]:
    found = report.get("extraction") if isinstance(report.get("extraction"), dict) else fallback
    return {"ov": found.get("ov", ""), "sentiment": found.get("sentiment", ""), "extractor": found.get("extractor")}


def _selection(folder: _Folder, task_dir: Path, summary: Any) -> dict[str, Any] | None:
    """Best, median, worst of a task's answer files and the gain a best-of-N pick gets from noise alone;
    None with one file or when a file has no per-sample scores (older runs, --bootstrap 0)."""
    from unibench.metrics.bootstrap import selection_cost
    from unibench.results import safe_name

    if summary.n_files < 2:
        return None
    scores = [folder.scores(task_dir / f"{safe_name(f.label)}.scores.npz") for f in summary.files]
    if any(s is None for s in scores):
        return None
    cost = selection_cost(scores, summary.primary_metric, folder.resamples, folder.seed)
    return {"n_files": cost.n_files, "best": cost.best * 100, "median": cost.median * 100,
            "worst": cost.worst * 100, "spread": cost.spread * 100,
            "expected_max_gain": cost.expected_max_gain * 100, "best_minus_median": cost.best_minus_median * 100}


def _rounded(value: Any, key: str = "") -> Any:
    if key in UNROUNDED_KEYS:
        return value
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# ================================================================ renderers

def _two(value: float | None, empty: str = "--") -> str:
    return empty if value is None else f"{value:.2f}"


def _interval_text(cell: dict[str, Any] | None) -> str:
    if not cell or cell.get("lo") is None or cell.get("hi") is None:
        return ""
    return f"[{cell['lo']:.2f}, {cell['hi']:.2f}]"


def _legend(data: dict[str, Any]) -> str:
    b = data["bootstrap"]
    return (f"Scores x100: hit rate (MER2023, MER2024, MELD, IEMOCAP), WAF (CMU-MOSI, CMU-MOSEI, SIMS, SIMS v2), "
            f"EW F-score (OV-MERD+); [lo, hi]: {b['level']:.0%} percentile bootstrap interval over the test samples "
            f"({b['resamples']} resamples, seed {b['seed']}) of the answer file the cell uses; selection: best-of-N "
            "= per task the best of N answer files (checkpoints), as the paper reports; 'last', 'file:NAME' or "
            "'single' = that one file; 'published' = the paper's table.")


def render_text(data: dict[str, Any]) -> str:
    """The terminal table, then what best-of-N costs."""
    from unibench.results import format_table

    rows = [{"model": r["model"], "selection": r["selection"], "mean": _two(r["mean"], ""),
             "n_tasks": str(r["n_tasks"]), "flags": ";".join(r["flags"]),
             **{t: _two(c["value"]) for t, c in r["cells"].items()}} for r in data["rows"]]
    parts = [format_table(rows, highlight={r["model"] for r in data["rows"] if not r["published"]})]
    for model, tasks in _selection_sections(data):
        lines = [f"selection: {model}",
                 "  task       files    best  median   worst  spread  noise gain  best-median"]
        for task_id, s in tasks:
            lines.append(f"  {TITLES.get(task_id, task_id):<9}  {s['n_files']:>5}  {s['best']:6.2f}  "
                         f"{s['median']:6.2f}  {s['worst']:6.2f}  {s['spread']:6.2f}  {s['expected_max_gain']:10.2f}"
                         f"  {s['best_minus_median']:11.2f}")
        lines += [f"  {TITLES.get(t, t)}: {_selection_sentence(s)}" for t, s in tasks]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _selection_sections(data: dict[str, Any]) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """(model, [(task, selection block)]) for the models with several answer files on some task."""
    out = []
    for model, entry in data["models"].items():
        tasks = [(t, v["selection"]) for t, v in entry["tasks"].items() if v.get("selection")]
        if tasks:
            out.append((model, tasks))
    return out


def _selection_sentence(s: dict[str, Any]) -> str:
    n = s["n_files"]
    return (f"the best-of-{n} row sits {s['best_minus_median']:.2f} points above the median file; "
            f"{s['expected_max_gain']:.2f} points of a best-of-{n} pick are expected from sampling noise alone.")


def _md_escape(text: str) -> str:
    return one_line(str(text)).replace("\\", "\\\\").replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]], left: tuple[int, ...]) -> list[str]:
    """A Markdown table; numbers right-aligned, the columns in ``left`` left-aligned."""
    align = ["---" if i in left else "---:" for i in range(len(header))]
    return ["| " + " | ".join(line) + " |" for line in [header, align, *rows]]


def render_markdown(data: dict[str, Any]) -> str:
    """A Markdown table for a README or model card (values with their intervals), a legend, the selection costs."""
    tasks = [t["id"] for t in data["tasks"]]
    header = ["Model", "Selection", *(TITLES.get(t, t) for t in tasks), "Mean", "Tasks"]
    body = []
    for r in data["rows"]:
        cells = [" ".join(p for p in (_two(r["cells"][t]["value"]), _interval_text(r["cells"][t])) if p)
                 if t in r["cells"] else "--" for t in tasks]
        body.append([_md_escape(r["model"]), _md_escape(r["selection"]), *cells, _two(r["mean"]), str(r["n_tasks"])])
    lines = _md_table(header, body, (0, 1)) + ["", _legend(data)]
    for model, sel in _selection_sections(data):
        lines += ["", f"### Selection: {_md_escape(model)}", ""]
        lines += _md_table(["Task", "Files", "Best", "Median", "Worst", "Spread", "Noise gain", "Best - median"],
                           [[TITLES.get(t, t), str(s["n_files"]), *(f"{s[k]:.2f}" for k in
                             ("best", "median", "worst", "spread", "expected_max_gain", "best_minus_median"))]
                            for t, s in sel], (0,))
        lines += [""] + [f"- {TITLES.get(t, t)}: {_selection_sentence(s)}" for t, s in sel]
    return "\n".join(lines)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in one_line(str(text)))


def _best_per_column(rows: list[dict[str, Any]], tasks: list[str]) -> dict[str, str]:
    """Per column the best value shown (two decimals; ties all bold). Means compare only rows covering as
    many tasks as the most complete row: a two-task mean is not comparable with a nine-task one."""
    best = {}
    for t in tasks:
        values = [r["cells"][t]["value"] for r in rows if t in r["cells"]]
        if values:
            best[t] = _two(max(values))
    full = max((r["n_tasks"] for r in rows), default=0)
    means = [r["mean"] for r in rows if r["mean"] is not None and r["n_tasks"] == full]
    if means:
        best["mean"] = _two(max(means))
    return best


def _latex_value(value: float | None, best: str | None) -> str:
    text = _two(value)
    return rf"\textbf{{{text}}}" if value is not None and text == best else text


def render_latex(data: dict[str, Any]) -> str:
    """The paper's table (booktabs, two decimals, the best per column in bold), then our intervals and
    what best-of-N costs in smaller tables."""
    tasks = [t["id"] for t in data["tasks"]]
    rows = data["rows"]
    best = _best_per_column(rows, tasks)
    head = " & ".join(["Model", "Selection", *(latex_escape(TITLES.get(t, t)) for t in tasks), "Mean",
                       r"\#Tasks"]) + r" \\"
    lines = [r"% MER-UniBench results (unibench report); needs \usepackage{booktabs}",
             "% " + _legend(data).replace("%", r"\%"),
             r"\begin{table*}[t]", r"\centering", r"\begin{tabular}{ll" + "c" * (len(tasks) + 2) + "}",
             r"\toprule", head, r"\midrule"]
    for i, r in enumerate(rows):
        if i and r["published"] and not rows[i - 1]["published"]:
            lines.append(r"\midrule")
        cells = [_latex_value(r["cells"][t]["value"] if t in r["cells"] else None, best.get(t)) for t in tasks]
        mean = _latex_value(r["mean"], best.get("mean") if r["n_tasks"] == max(x["n_tasks"] for x in rows) else None)
        lines.append(" & ".join([latex_escape(r["model"]), latex_escape(r["selection"]), *cells, mean,
                                 str(r["n_tasks"])]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{MER-UniBench. Bold: the best value of each column among the rows shown.}",
              r"\label{tab:mer-unibench}", r"\end{table*}"]
    lines += _latex_intervals(data, tasks)
    for model, sel in _selection_sections(data):
        lines += _latex_selection(model, sel)
    return "\n".join(lines)


def _latex_intervals(data: dict[str, Any], tasks: list[str]) -> list[str]:
    ours = [r for r in data["rows"] if not r["published"] and any(c.get("lo") is not None for c in r["cells"].values())]
    if not ours:
        return []
    level = f"{data['bootstrap']['level']:.0%}".replace("%", r"\%")
    lines = ["", r"\begin{table*}[t]", r"\centering", r"\scriptsize", r"\begin{tabular}{ll" + "c" * len(tasks) + "}",
             r"\toprule", " & ".join(["Model", "Selection", *(latex_escape(TITLES.get(t, t)) for t in tasks)]) + r" \\",
             r"\midrule"]
    for r in ours:
        cells = [_interval_text(r["cells"].get(t)) or "--" for t in tasks]
        lines.append(" & ".join([latex_escape(r["model"]), latex_escape(r["selection"]), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{level} percentile bootstrap intervals over the test samples "
              rf"({data['bootstrap']['resamples']} resamples) of the answer file each cell uses.}}", r"\end{table*}"]
    return lines


def _latex_selection(model: str, sel: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["", r"\begin{table}[t]", r"\centering", r"\scriptsize", r"\begin{tabular}{lcccccc}", r"\toprule",
             r"Task & Files & Best & Median & Worst & Spread & Noise gain \\", r"\midrule"]
    for t, s in sel:
        lines.append(" & ".join([latex_escape(TITLES.get(t, t)), str(s["n_files"]), *(f"{s[k]:.2f}" for k in
                                 ("best", "median", "worst", "spread", "expected_max_gain"))]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{Selection for {latex_escape(model)}: "
              + " ".join(latex_escape(f"{TITLES.get(t, t)}: {_selection_sentence(s)}") for t, s in sel) + "}",
              r"\end{table}"]
    return lines


def render_csv(data: dict[str, Any]) -> str:
    """One row per model x selection: each task's value and interval, the mean (not leaderboard.csv's columns)."""
    tasks = [t["id"] for t in data["tasks"]]
    columns = ["model", "selection", "published", *(f"{t}{s}" for t in tasks for s in ("", "_lo", "_hi")),
               "mean", "n_tasks", "flags"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in data["rows"]:
        row = {"model": r["model"], "selection": r["selection"], "published": int(r["published"]),
               "mean": _two(r["mean"], ""), "n_tasks": r["n_tasks"], "flags": ";".join(r["flags"])}
        for t, c in r["cells"].items():
            row.update({t: _two(c["value"], ""), f"{t}_lo": _two(c["lo"], ""), f"{t}_hi": _two(c["hi"], "")})
        writer.writerow(row)
    return buffer.getvalue().rstrip("\n")


def render_json(data: dict[str, Any]) -> str:
    return json.dumps(_rounded(data), indent=1, ensure_ascii=False)


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "text": render_text, "md": render_markdown, "latex": render_latex, "csv": render_csv, "json": render_json}


def write_html(data: dict[str, Any], output: Path, report_path: Path) -> Path:
    try:
        from unibench.html import render_html
    except ModuleNotFoundError as exc:
        if exc.name != "unibench.html":
            raise
        raise UserError("--format html needs unibench/html.py (render_html), which this installation lacks; "
                        "use --format md or latex") from None
    return render_html(_rounded(data), output, report_path, plot_folder=report_path.with_name("report-plots"))


# ================================================================ reproduction

@dataclass
class TaskComparison:
    task: str
    ours: float | None
    published: float | None
    lo: float | None
    hi: float | None
    file: str | None

    @property
    def difference(self) -> float | None:
        return None if self.ours is None or self.published is None else self.ours - self.published

    @property
    def verdict(self) -> str:
        if self.ours is None:
            return "not run"
        if self.published is None:
            return "not published"
        if f"{self.ours:.2f}" == f"{self.published:.2f}":
            return "equal"
        if self.lo is None or self.hi is None:
            return "differs (no interval)"
        return "within interval" if self.lo <= self.published <= self.hi else "outside interval"

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "ours": self.ours, "published": self.published, "difference": self.difference,
                "lo": self.lo, "hi": self.hi, "file": self.file, "verdict": self.verdict}


def _our_model_row(data: dict[str, Any], model: str) -> dict[str, Any]:
    """The best-of-N (or only) row of MODEL: exact name, else the one name equal ignoring case."""
    ours = [r for r in data["rows"] if not r["published"]]
    names = list(dict.fromkeys(r["model"] for r in ours))
    name = model if model in names else next((n for n in names if n.lower() == model.lower()), None)
    if name is None:
        raise UserError(f"--reproduce {model}: no such model in {data['output']} "
                        f"(models: {', '.join(names) or 'none'})")
    rows = [r for r in ours if r["model"] == name]
    return next((r for r in rows if r["selection"].startswith("best") or r["selection"] == "single"), rows[0])


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _published_candidates(data: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """Published rows whose name matches ours: 'affectgpt' -> AffectGPT (AT), (VT), (AVT)."""
    published = [r for r in data["rows"] if r["published"]]
    exact = [r for r in published if r["model"].lower() == model.lower()]
    if exact:
        return exact
    base = [r for r in published if _key(r["model"].split(" (")[0]) == _key(model)]
    if base:
        return base
    return [r for r in published if _key(r["model"].split(" (")[0]) and _key(r["model"].split(" (")[0]) in _key(model)]


def _compare(ours: dict[str, Any], paper: dict[str, Any], tasks: list[str]) -> list[TaskComparison]:
    out = []
    for t in tasks:
        mine, theirs = ours["cells"].get(t), paper["cells"].get(t)
        out.append(TaskComparison(t, mine["value"] if mine else None, theirs["value"] if theirs else None,
                                  mine.get("lo") if mine else None, mine.get("hi") if mine else None,
                                  mine.get("file") if mine else None))
    return out


def _rank(comparisons: list[TaskComparison]) -> tuple[int, int, float]:
    """Most equal tasks, then most inside our interval, then the smallest mean absolute difference."""
    verdicts = [c.verdict for c in comparisons]
    diffs = [abs(c.difference) for c in comparisons if c.difference is not None]
    return verdicts.count("equal"), verdicts.count("within interval"), -(sum(diffs) / len(diffs) if diffs else 0.0)


def reproduction(data: dict[str, Any], model: str, paper_row: str | None = None) -> dict[str, Any]:
    """Our row for MODEL against a published row, task by task, and what was used to get ours.

    ``data`` must hold the published rows (``collect(..., paper=True)``)."""
    tasks = [t["id"] for t in data["tasks"]]
    ours = _our_model_row(data, model)
    published = [r for r in data["rows"] if r["published"]]
    if paper_row is not None:
        chosen = next((r for r in published if r["model"].lower() == paper_row.strip().lower()), None)
        if chosen is None:
            raise UserError(f"--paper-row {paper_row}: no such published row (rows: "
                            f"{', '.join(r['model'] for r in published)})")
        candidates, how = [chosen], "chosen with --paper-row"
    else:
        candidates = _published_candidates(data, ours["model"])
        if not candidates:
            raise UserError(f"--reproduce {model}: no published row matches the name; pass --paper-row NAME "
                            f"(rows: {', '.join(r['model'] for r in published)})")
        chosen = max(candidates, key=lambda r: _rank(_compare(ours, r, tasks)))
        how = ("the only published row matching the name" if len(candidates) == 1 else
               f"of the published rows matching the name ({', '.join(r['model'] for r in candidates)}), the one "
               "with the most equal tasks; --paper-row NAME chooses another")
    comparisons = _compare(ours, chosen, tasks)
    return {"model": ours["model"], "selection": ours["selection"], "paper_row": chosen["model"], "how": how,
            "candidates": [r["model"] for r in candidates], "output": data["output"],
            "tasks": [c.to_json() for c in comparisons],
            "counts": {v: [c.verdict for c in comparisons].count(v) for v in
                       ("equal", "within interval", "outside interval", "differs (no interval)", "not run")},
            "used": _what_was_used(data, ours, tasks),
            "selection_costs": {t: s for model, sel in _selection_sections(data) if model == ours["model"]
                                for t, s in sel}}


def _what_was_used(data: dict[str, Any], row: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    entry = data["models"].get(row["model"], {"provenance": {}, "tasks": {}})
    prov = entry["provenance"]
    per_task = entry["tasks"]
    extractors = []
    for t, c in row["cells"].items():
        files = {f["label"]: f for f in per_task.get(t, {}).get("files", [])}
        found = files.get(c.get("file") or "", {}).get("extraction", {}).get("extractor")
        extractors.append(_describe_extractor(found if found is not None else prov.get("extractor")))
    adapter = prov.get("adapter") if isinstance(prov.get("adapter"), dict) else {}
    args = adapter.get("args") if isinstance(adapter.get("args"), dict) else {}
    device = {k: v for k in ("device", "dtype", "torch_dtype", "decoding")
              for v in [adapter.get(k, args.get(k))] if v not in (None, "")}
    versions = {k: prov[k] for k in ("unibench", "python", "numpy", "torch", "transformers", "vllm", "platform")
                if prov.get(k)}
    if isinstance(prov.get("versions"), dict):
        versions.update(prov["versions"])
    lexicon = prov.get("lexicon") if isinstance(prov.get("lexicon"), dict) else {}
    return {
        "selection": row["selection"], "files": {t: c.get("file") for t, c in row["cells"].items()},
        "lexicon_sha256": sorted({v["lexicon_sha256"] for v in per_task.values() if v.get("lexicon_sha256")})
        or ([lexicon["sha256"]] if lexicon.get("sha256") else []),
        "lexicon_path": lexicon.get("path"),
        "level": sorted({v["level"] for v in per_task.values() if v.get("level")}) or
        ([prov["level"]] if prov.get("level") else []),
        "extractor": sorted(set(e for e in extractors if e)),
        "adapter": {"adapter": adapter.get("adapter"), "args": args} if adapter else None,
        "device": device, "versions": versions, "started": prov.get("started"),
        "not_run": [t for t in tasks if t not in row["cells"]],
    }


def _describe_extractor(identity: Any) -> str:
    if identity is None:
        return ""
    if not isinstance(identity, dict):
        return str(identity)
    parts = [str(identity.get("backend", "extractor"))]
    if identity.get("model"):
        parts.append(f"model {identity['model']}")
    decoding = identity.get("decoding_mode") or identity.get("decoding")
    if decoding:
        parts.append(f"decoding {json.dumps(decoding, sort_keys=True) if isinstance(decoding, dict) else decoding}")
    return ", ".join(parts)


def _used_lines(used: dict[str, Any]) -> list[str]:
    files = "; ".join(f"{TITLES.get(t, t)}: {f}" for t, f in used["files"].items() if f)
    adapter = used["adapter"]
    lines = [f"selection: {used['selection']}" + (f" ({files})" if files else ""),
             f"lexicon: sha256 {', '.join(used['lexicon_sha256']) or 'not recorded'}"
             + (f" ({used['lexicon_path']})" if used["lexicon_path"] else ""),
             f"level: {', '.join(used['level']) or 'not recorded'}",
             f"extractor: {'; '.join(used['extractor']) or 'not recorded'}"]
    if adapter:
        args = ", ".join(f"{k}={v}" for k, v in adapter["args"].items() if v not in ("", None))
        lines.append(f"adapter: {adapter['adapter']}" + (f" ({args})" if args else ""))
    lines.append("device/dtype: " + (", ".join(f"{k} {v}" for k, v in used["device"].items()) or "not recorded"))
    lines.append("versions: " + (", ".join(f"{k} {v}" for k, v in used["versions"].items()) or "not recorded"))
    if used["not_run"]:
        lines.append(f"not run: {', '.join(TITLES.get(t, t) for t in used['not_run'])}")
    return lines


def _signed(value: float | None) -> str:
    if value is None:
        return "--"
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def _comparison_cells(c: dict[str, Any]) -> list[str]:
    return [TITLES.get(c["task"], c["task"]), _two(c["ours"]), _two(c["published"]), _signed(c["difference"]),
            _interval_text(c) or "--", c["verdict"]]


def _summary_line(rep: dict[str, Any]) -> str:
    return ", ".join(f"{n} {v}" for v, n in rep["counts"].items() if n)


def render_reproduction_text(rep: dict[str, Any]) -> str:
    header = ["task", "ours", "published", "diff", "our 95% interval", "verdict"]
    rows = [_comparison_cells(c) for c in rep["tasks"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    table = ["  ".join(v.ljust(w) if i in (0, 4, 5) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
             .rstrip() for r in [header, *rows]]
    lines = [f"reproduction: {rep['model']} ({rep['selection']}) against the published row {rep['paper_row']}",
             f"published row: {rep['how']}", "", *table, "", f"summary: {_summary_line(rep)}", "",
             "what was used", *(f"  {line}" for line in _used_lines(rep["used"]))]
    if rep["selection_costs"]:
        lines += ["", "selection"] + [f"  {TITLES.get(t, t)}: {_selection_sentence(s)}"
                                      for t, s in rep["selection_costs"].items()]
    return "\n".join(lines)


def render_reproduction_markdown(rep: dict[str, Any]) -> str:
    lines = [f"## Reproduction: {_md_escape(rep['model'])} ({_md_escape(rep['selection'])}) against "
             f"{_md_escape(rep['paper_row'])}", "", f"Published row: {_md_escape(rep['how'])}.", ""]
    lines += _md_table(["Task", "Ours", "Published", "Difference", "Our 95 % interval", "Verdict"],
                       [_comparison_cells(c) for c in rep["tasks"]], (0, 4, 5))
    lines += ["", f"Summary: {_summary_line(rep)}.", "", "### What was used", ""]
    lines += [f"- {_md_escape(line)}" for line in _used_lines(rep["used"])]
    if rep["selection_costs"]:
        lines += ["", "### Selection", ""] + [f"- {TITLES.get(t, t)}: {_selection_sentence(s)}"
                                              for t, s in rep["selection_costs"].items()]
    return "\n".join(lines)


REPRODUCTION_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "text": render_reproduction_text, "md": render_reproduction_markdown,
    "json": lambda rep: json.dumps(_rounded(rep), indent=1, ensure_ascii=False)}


# ================================================================ command line

def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="run_bench report",
                       description="print the leaderboard, or a table for a paper / model card, or a reproduction")
    p.add_argument("--output", default="results", help="results folder (default: results/)")
    p.add_argument("--paper", action="store_true", help="include the published rows")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild leaderboard.csv from the summaries on disk (a bad old file is kept aside)")
    p.add_argument("--format", choices=FORMATS,
                   help="text (the table and what best-of-N costs), md, latex (booktabs), csv, json (the report "
                        "data), html; default: the plain leaderboard table")
    p.add_argument("--to", "--report-file", dest="to", metavar="PATH",
                   help="write the report here (default: standard output; html: OUTPUT/report.html)")
    p.add_argument("--reproduce", metavar="MODEL", help="compare MODEL's row with a published row, task by task")
    p.add_argument("--paper-row", metavar="NAME", help="the published row to compare with, e.g. 'AffectGPT (AVT)'")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples where computed here (1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a results folder")
    from unibench.metrics.bootstrap import MAX_RESAMPLES

    if args.resamples > MAX_RESAMPLES:
        raise UserError(f"--resamples {args.resamples}: at most {MAX_RESAMPLES} (memory grows with resamples x "
                        "test samples)")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, got {args.seed}")
    if args.resamples < 1:
        raise UserError(f"--resamples must be at least 1, got {args.resamples}")
    if args.paper_row is not None and args.reproduce is None:
        raise UserError("--paper-row needs --reproduce MODEL")
    if args.rebuild:
        _rebuild(output)
    if args.reproduce is not None:
        return _reproduce(args, output)
    if args.format is None:
        return _plain_table(output, args.paper)
    data = collect(output, args.paper, args.resamples, args.seed)
    if not data["rows"]:
        raise UserError(f"no leaderboard at {output / 'leaderboard.csv'}: run a model first")
    if args.format == "html":
        path = write_html(data, output, Path(args.to) if args.to else output / "report.html")
        plots = path.with_name("report-plots")
        print(f"wrote {path}" + (f" (plots also as PNG files in {plots}/)" if plots.is_dir() else ""),
              file=sys.stderr)
        return 0
    _emit(RENDERERS[args.format](data), args.to)
    return 0


def _rebuild(output: Path) -> None:
    from unibench.results import check_output_folder, rebuild_leaderboard

    check_output_folder(output)
    notes: list[str] = []
    rows = rebuild_leaderboard(output, notes)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"rebuilt {output / 'leaderboard.csv'}: {len(rows)} row(s)", file=sys.stderr)


def _plain_table(output: Path, paper: bool) -> int:
    """The leaderboard as it is on disk (published rows first with --paper), ours marked with '*'."""
    from unibench.results import format_table, read_paper_rows

    path = output / "leaderboard.csv"
    rows = read_board(path)
    if not rows and not paper:
        raise UserError(f"no leaderboard at {path}: run a model first")
    print(format_table((read_paper_rows() if paper else []) + rows, highlight={r["model"] for r in rows}))
    return 0


def _reproduce(args: Any, output: Path) -> int:
    fmt = args.format or "text"
    if fmt not in REPRODUCE_FORMATS:
        raise UserError(f"--reproduce writes {', '.join(REPRODUCE_FORMATS)}, not --format {fmt}")
    rep = reproduction(collect(output, True, args.resamples, args.seed), args.reproduce, args.paper_row)
    _emit(REPRODUCTION_RENDERERS[fmt](rep), args.to)
    return 0


def _emit(text: str, to: str | None) -> None:
    if to is None:
        print(text)
        return
    from unibench.fileio import atomic_open

    path = Path(to)
    if path.is_dir():
        raise UserError(f"--to {path} is a folder; pass a file name")
    try:
        with atomic_open(path) as fh:
            fh.write(text + "\n")
    except OSError as exc:
        raise UserError(f"--to {path}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {path}", file=sys.stderr)
