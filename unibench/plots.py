"""Report plots as PNG bytes, from the report data dict ("unibench-report/1", see unibench/reports.py).

matplotlib is an optional extra, imported only here and only when a plot is drawn, with the Agg
renderer (no display, no network). Every function returns the PNG's bytes; the same data gives the
same bytes (no timestamps in the file). Scores are on the 0-100 scale of the report.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

from unibench.errors import MissingExtraError, UserError
from unibench.fileio import safe_name

METRIC_NAMES = {"hit_rate": "hit rate", "waf": "WAF", "fscore": "F-score"}
WHEELS = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
OURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
DPI = 110


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure drawn by Agg (no pyplot: no global state, no display)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "plots", "the report plots") from None
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # drawn by Agg whatever backend the user's session (pyplot, Jupyter) selected
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # no Software/date metadata: the same data gives the same bytes
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


def _task_titles(data: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """task id -> (title, metric) in paper order."""
    return {t["id"]: (str(t.get("title") or t["id"]), str(t.get("metric") or "")) for t in data.get("tasks", [])}


def _model(data: dict[str, Any], model: str) -> dict[str, Any]:
    models = data.get("models") or {}
    if model not in models:
        known = ", ".join(sorted(models)) or "none"
        raise UserError(f"no model '{model}' in the report data (models: {known})")
    return models[model]


def _ordered_tasks(data: dict[str, Any], task_ids: list[str]) -> list[str]:
    order = list(_task_titles(data))
    return sorted(task_ids, key=lambda t: (order.index(t) if t in order else len(order), t))


# ---------------------------------------------------------------- the leaderboard as bars

def task_bars(data: dict[str, Any]) -> bytes:
    """Per task one bar per row of ours (95 % interval as error bar); published rows as grey ticks."""
    titles = _task_titles(data)
    ours = [r for r in data.get("rows", []) if not r.get("published")]
    published = [r for r in data.get("rows", []) if r.get("published")]
    shown = ours or published
    tasks = [t for t in titles if any(t in r.get("cells", {}) for r in shown)]
    if not tasks:
        raise UserError("the report data has no scores to plot")
    n_bars = max(len(ours), 1)
    with_published = bool(ours and published)   # published scores get a slot of their own beside ours
    width = 0.8 / (n_bars + with_published)
    fig = _figure(max(6.0, 1.0 + len(tasks) * (0.55 + 0.25 * n_bars)), 4.6)
    ax = fig.add_subplot()
    for i, row in enumerate(ours):
        xs, ys, err_lo, err_hi = [], [], [], []
        for j, t in enumerate(tasks):
            cell = row["cells"].get(t)
            if not cell or cell.get("value") is None:
                continue
            value = float(cell["value"])
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(value)
            lo, hi = cell.get("lo"), cell.get("hi")
            err_lo.append(value - lo if lo is not None else 0.0)
            err_hi.append(hi - value if hi is not None else 0.0)
        colour = OURS[i % len(OURS)]
        ax.bar(xs, ys, width * 0.92, color=colour, label=f"{row['model']} ({row.get('selection', '')})", zorder=2)
        ax.errorbar(xs, ys, yerr=[err_lo, err_hi], fmt="none", ecolor="#222222", elinewidth=1, capsize=3, zorder=3)
        if len(xs) * n_bars <= 60:  # the value at the bar's foot, clear of the error bar's ends
            for x, y, up in zip(xs, ys, err_hi):
                inside = y >= 16
                ax.text(x, 1.5 if inside else y + up + 1.0, f"{y:.2f}", ha="center", va="bottom",
                        fontsize=7 if n_bars > 1 else 8, rotation=90, color="white" if inside else "black",
                        zorder=4)
    if with_published:
        first = True
        for row in published:
            xs = [j + 0.4 - width / 2 for j, t in enumerate(tasks) if row["cells"].get(t, {}).get("value") is not None]
            ys = [row["cells"][t]["value"] for t in tasks if row["cells"].get(t, {}).get("value") is not None]
            ax.scatter(xs, ys, marker="_", s=(width * 60) ** 2, color="#555555", alpha=0.7, linewidths=1.2,
                       zorder=3, label="published rows (paper), one dash each" if first else None)
            first = False
    elif not ours:  # only published rows: draw them as the bars would be unreadable
        for i, row in enumerate(published[:12]):
            xs = [j for j, t in enumerate(tasks) if row["cells"].get(t, {}).get("value") is not None]
            ax.plot(xs, [row["cells"][tasks[j]]["value"] for j in xs], marker="o", lw=0.8, label=row["model"])
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{titles[t][0]}\n{METRIC_NAMES.get(titles[t][1], titles[t][1])}" for t in tasks],
                       fontsize=9)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_ylim(0, 108)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("score (0-100)")
    ax.grid(axis="y", color="#dddddd", zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title("Primary metric per task\n(error bars: 95 % bootstrap interval of the selected answer file)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, max(1, len(ours) + 1)),
              frameon=False)
    return _png(fig)


# ---------------------------------------------------------------- best-of-N: every answer file of a task

def short_labels(labels: list[str]) -> tuple[list[str], str]:
    """Tick labels for answer files and the x-axis name: checkpoint numbers when the files are checkpoints,
    else the labels without their common start and end, cut to 14 characters."""
    numbers = [re.search(r"checkpoint[_-]?0*(\d+)", label) for label in labels]
    if labels and all(numbers):
        return [m.group(1) for m in numbers], "checkpoint"  # type: ignore[union-attr]
    if len(labels) > 1:
        prefix = len(_common_prefix(labels))
        suffix = len(_common_prefix([label[::-1] for label in labels]))
        cut = [label[prefix:len(label) - suffix] if len(label) - suffix > prefix else label for label in labels]
    else:
        cut = list(labels)
    return [c if len(c) <= 14 else c[:13] + "…" for c in cut], "answer file"


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def multi_file_tasks(data: dict[str, Any], model: str) -> list[str]:
    tasks = _model(data, model).get("tasks", {})
    return _ordered_tasks(data, [t for t, v in tasks.items() if len(v.get("files", [])) > 1])


def metric_by_epoch(data: dict[str, Any], model: str) -> bytes:
    """One panel per task with several answer files: the primary metric (95 % band) against the file
    order, the selected (best) file starred: what best-of-N picks from."""
    tasks = multi_file_tasks(data, model)
    if not tasks:
        raise UserError(f"model '{model}' has one answer file per task: there is no best-of-N to plot")
    info = _model(data, model)["tasks"]
    titles = _task_titles(data)
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    n_max = max(len(info[t]["files"]) for t in tasks)
    fig = _figure(max(4.2, min(6.0, 2.2 + 0.45 * n_max)) * cols, 3.3 * rows)
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(rows, cols, k + 1)
        files = sorted(info[task]["files"], key=lambda f: f.get("order", 0))
        xs = list(range(len(files)))
        ys = [f["value"] for f in files]
        colour = OURS[k % len(OURS)]
        if all(f.get("lo") is not None and f.get("hi") is not None for f in files):
            ax.fill_between(xs, [f["lo"] for f in files], [f["hi"] for f in files], color=colour, alpha=0.15,
                            lw=0, label="95 % interval")
        ax.plot(xs, ys, marker="o", color=colour, lw=1.6, ms=4, label="score")
        best = next((i for i, f in enumerate(files) if f["label"] == info[task].get("selected")),
                    max(xs, key=lambda i: ys[i]))
        ax.plot([best], [ys[best]], marker="*", ms=15, color="#d62728", mec="black", mew=0.6, ls="none",
                label="selected (best) file", zorder=5)
        ax.annotate(f"{ys[best]:.2f}", (best, ys[best]), xytext=(0, 9), textcoords="offset points", ha="center",
                    fontsize=8, fontweight="bold", zorder=6)
        ticks, axis_name = short_labels([f["label"] for f in files])
        ax.set_xticks(xs)
        ax.set_xticklabels(ticks, fontsize=8, rotation=0 if max(len(t) for t in ticks) <= 4 else 35,
                           ha="center" if max(len(t) for t in ticks) <= 4 else "right")
        ax.set_xlabel(axis_name, fontsize=9)
        lows = [f["lo"] if f.get("lo") is not None else f["value"] for f in files]
        highs = [f["hi"] if f.get("hi") is not None else f["value"] for f in files]
        pad = max(2.0, 0.1 * (max(highs) - min(lows)))
        ax.set_ylim(max(0.0, min(lows) - pad), min(100.0, max(highs) + pad))
        title, metric = titles.get(task, (task, info[task].get("metric", "")))
        ax.set_title(f"{title} ({METRIC_NAMES.get(metric, metric)}), best of {len(files)}", fontsize=10)
        if k % cols == 0:
            ax.set_ylabel("score (0-100)", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(color="#eeeeee")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if k == 0:
            handles, names = ax.get_legend_handles_labels()
    fig.suptitle(f"{model}: primary metric of every answer file (y axis zoomed, not from 0)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if rows == 1 else 0.03, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    return _png(fig)


# ---------------------------------------------------------------- per wheel

def wheel_heatmap(data: dict[str, Any], model: str) -> bytes:
    """Tasks x wheel1..5 (and their mean) of the selected file's primary metric, annotated."""
    info = _model(data, model).get("tasks", {})
    titles = _task_titles(data)
    grid: list[list[float | None]] = []
    names = []
    for task in _ordered_tasks(data, list(info)):
        selected = next((f for f in info[task]["files"] if f["label"] == info[task].get("selected")), None)
        wheels = (selected or {}).get("per_wheel") or {}
        if not wheels:
            continue  # sentiment tasks have no wheels
        values = [wheels.get(w) for w in WHEELS]
        present = [v for v in values if v is not None]
        grid.append(values + [sum(present) / len(present) if present else None])
        title, metric = titles.get(task, (task, info[task].get("metric", "")))
        names.append(f"{title}\n{METRIC_NAMES.get(metric, metric)}")
    if not grid:
        raise UserError(f"model '{model}' has no task scored on the emotion wheels (sentiment tasks only)")
    import numpy as np

    values = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    fig = _figure(7.6, max(2.4, 1.2 + 0.55 * len(grid)))
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    lo, hi = math.floor(finite.min()) - 1, math.ceil(finite.max()) + 1
    image = ax.imshow(values, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
            dark = np.isfinite(v) and (v - lo) / max(hi - lo, 1e-9) < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black",
                    fontweight="bold" if j == len(WHEELS) else "normal")
    ax.axvline(len(WHEELS) - 0.5, color="white", lw=3)
    ax.set_xticks(range(len(WHEELS) + 1))
    ax.set_xticklabels([*WHEELS, "mean"], fontsize=9)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("score", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(f"{model}: selected answer file per emotion wheel (colours span these values only)", fontsize=10)
    return _png(fig)


# ---------------------------------------------------------------- closed set and rank agreement

def confusion_matrix(closed_set_summary: dict[str, Any], title: str) -> bytes:
    """True class x predicted class (+ 'no class'): colour = share of the true class, text = count."""
    import numpy as np

    classes = [str(c) for c in closed_set_summary.get("classes") or []]
    counts = np.array(closed_set_summary.get("confusion") or [], dtype=float)
    if not classes or counts.shape != (len(classes), len(classes) + 1):
        raise UserError(f"closed-set summary '{title}': the confusion matrix is not {len(classes)} x "
                        f"{len(classes) + 1} (classes x classes + 'no class')")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = 1.6 + 0.62 * (len(classes) + 1)
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.axvline(len(classes) - 0.5, color="#444444", lw=1)
    ax.set_xticks(range(len(classes) + 1))
    ax.set_xticklabels([*classes, "no class"], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)))
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("share of the true class (row)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    subtitle = []
    for key, name in (("accuracy", "accuracy"), ("weighted_f1", "weighted F1")):
        if isinstance(closed_set_summary.get(key), (int, float)):
            subtitle.append(f"{name} {closed_set_summary[key] * 100:.2f}")
    if closed_set_summary.get("n") is not None:
        subtitle.append(f"n = {closed_set_summary['n']}")
    ax.set_title(title + ("\n" + ", ".join(subtitle) if subtitle else ""), fontsize=10)
    return _png(fig)


def rank_agreement(names: list[str], matrix: list[list[float]], title: str) -> bytes:
    """Kendall tau between the model rankings under protocol variants: -1 (reversed) .. 1 (same)."""
    import numpy as np

    values = np.array(matrix, dtype=float)
    if values.shape != (len(names), len(names)) or not names:
        raise UserError(f"rank agreement '{title}': the matrix is {values.shape}, expected "
                        f"{len(names)} x {len(names)} for the variants {', '.join(names)}")
    size = 1.8 + 0.75 * len(names)
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            v = values[i, j]
            ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if np.isfinite(v) and abs(v) > 0.6 else "black")
    labels = [n if len(n) <= 24 else n[:23] + "…" for n in names]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(labels, fontsize=8)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("Kendall tau of the model rankings", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=10)
    return _png(fig)


# ---------------------------------------------------------------- all of them

def report_plots(data: dict[str, Any]) -> dict[str, bytes]:
    """Every plot the report data allows: name -> PNG bytes (names are file stems)."""
    plots: dict[str, bytes] = {}
    if any(r.get("cells") for r in data.get("rows", [])):
        plots["task_bars"] = task_bars(data)
    for model, info in (data.get("models") or {}).items():
        stem = safe_name(model)
        if multi_file_tasks(data, model):
            plots[f"{stem}-epochs"] = metric_by_epoch(data, model)
        if any(f.get("per_wheel") for t in info.get("tasks", {}).values() for f in t.get("files", [])):
            plots[f"{stem}-wheels"] = wheel_heatmap(data, model)
        for task, entry in info.get("tasks", {}).items():
            if entry.get("closed_set"):
                plots[f"{stem}-{task}-confusion"] = confusion_matrix(
                    entry["closed_set"], f"{model} · {_task_titles(data).get(task, (task, ''))[0]}: closed set")
    return plots


def write_report_plots(data: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Write every applicable plot as ``folder/<name>.png``; returns name -> path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the plot folder {folder} ({exc.strerror or exc})") from None
    written = {}
    for name, png in report_plots(data).items():
        path = folder / f"{name}.png"
        path.write_bytes(png)
        written[name] = path
    return written
