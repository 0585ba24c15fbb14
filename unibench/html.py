"""One self-contained HTML report from the report data dict ("unibench-report/1", see unibench/reports.py).

The page is meant to be mailed to a co-author: CSS inline, plots embedded as base64 PNG data URIs,
no script, no external reference of any kind. Everything that comes from a results folder (model
names, answers, labels, paths) is untrusted and HTML-escaped.
"""
from __future__ import annotations

import base64
import csv
import json
import math
import shlex
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Callable

from unibench.errors import UserError
from unibench.fileio import atomic_open

WORST_SAMPLES = 10
ANSWER_CHARS = 600                        # a longer answer is cut in the table (the CSV keeps it whole)
METRIC_NAMES = {"hit_rate": "hit rate", "waf": "WAF", "fscore": "F-score"}
WHEELS = range(1, 6)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1320px;
 padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .5em;vertical-align:top}
th{background:#f3f3f3;text-align:center}
td.num{text-align:right;white-space:nowrap}
.ci{display:block;font-size:.78em;color:#666}
tr.published td{background:#f7f7f2;color:#555;font-style:italic}
.flag{display:inline-block;background:#fff3cd;border:1px solid #e0c36a;border-radius:3px;padding:0 .3em;margin:1px;
 font-size:.78em;font-style:normal}
.best{font-weight:bold}
.selected{background:#e8f4e8}
.note{color:#555;font-size:.9em}
.settings{background:#f6f8fa;border:1px solid #e1e4e8;padding:.6em 1em;border-radius:4px}
details{margin:.4em 0 .4em 1em;border:1px solid #e1e4e8;border-radius:4px;padding:.3em .6em}
summary{cursor:pointer;font-weight:600}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
img{max-width:100%;height:auto}
td.text{max-width:34em;word-wrap:break-word;white-space:pre-wrap}
.small{font-size:.8em}
code{font-size:.9em;word-break:break-all}
.scroll{overflow-x:auto}
td.model{white-space:nowrap}
table.leaderboard{font-size:.84em}
table.leaderboard td,table.leaderboard th{padding:.25em .35em}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 2) -> str:
    return "" if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
        else f"{value:.{digits}f}"


def _interval(lo: Any, hi: Any) -> str:
    return f"[{_num(lo)}, {_num(hi)}]" if _num(lo) and _num(hi) else ""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _flags(flags: Any) -> str:
    return "".join(f'<span class="flag">{_e(f)}</span>' for f in (flags or []))


def _task_info(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in data.get("tasks", []) if isinstance(t, dict) and t.get("id")]


def _title(data: dict[str, Any], task_id: str) -> str:
    return next((str(t.get("title") or task_id) for t in _task_info(data) if t["id"] == task_id), task_id)


# ---------------------------------------------------------------- header and leaderboard

def _header(data: dict[str, Any]) -> str:
    boot = data.get("bootstrap") or {}
    level = boot.get("level", 0.95)
    pct = f"{level * 100:g} %" if isinstance(level, (int, float)) else _e(level)
    return f"""<h1>MER-UniBench report</h1>
<p class="note">Results folder <code>{_e(data.get("output"))}</code> &middot; generated {_e(data.get("generated"))}
 &middot; unibench {_e(data.get("unibench"))} &middot; schema {_e(data.get("schema"))}</p>
<div class="settings">
<p>Scores of multimodal emotion-recognition models on the MER-UniBench tasks, on a 0-100 scale: the hit rate
 (basic emotion tasks), the weighted average F1 (WAF, sentiment tasks) and the F-score (open vocabulary), each the
 paper's primary metric of its task.</p>
<p><b>Intervals.</b> The small line under a score is its {pct} percentile bootstrap interval over the test samples
 ({_e(boot.get("resamples"))} resamples, seed {_e(boot.get("seed"))}): how far the score would move on another
 draw of test samples of the same size. Two overlapping intervals do not prove that two models are equal, and
 separate ones are only a rough sign of a difference; a paired comparison on the same samples answers that.</p>
<p><b>Selection.</b> A model that left several answer files per task (checkpoints, epochs) is reported as
 <i>best-of-N</i>: per task the file that scores best on the test set itself, as the paper does. That score is
 optimistic: the drill-down below gives, per task, the median file and the gain expected from picking the best
 of N files by chance alone. Published rows are the paper's numbers, without intervals.</p>
</div>"""


def _leaderboard(data: dict[str, Any]) -> str:
    tasks = _task_info(data)
    rows = [r for r in data.get("rows", []) if isinstance(r, dict)]
    best: dict[str, float] = {}
    for r in rows:
        for t in tasks:
            v = (r.get("cells") or {}).get(t["id"], {}).get("value")
            if isinstance(v, (int, float)):
                best[t["id"]] = max(best.get(t["id"], -1.0), round(v, 2))  # as shown: equal shown, both bold
        if isinstance(r.get("mean"), (int, float)):
            best["mean"] = max(best.get("mean", -1.0), round(r["mean"], 2))
    head = "".join(f'<th>{_e(t.get("title") or t["id"])}<br><span class="small">'
                   f'{_e(METRIC_NAMES.get(t.get("metric"), t.get("metric")))}</span></th>' for t in tasks)
    lines = [f'<div class="scroll"><table class="leaderboard"><thead><tr><th>model</th><th>selection</th>{head}'
             "<th>mean</th>"
             f'<th>tasks</th><th>flags</th></tr></thead><tbody>']
    for r in rows:
        cells = []
        for t in tasks:
            cell = (r.get("cells") or {}).get(t["id"]) or {}
            value = cell.get("value")
            if not isinstance(value, (int, float)):
                cells.append('<td class="num"></td>')
                continue
            cls = "num best" if round(value, 2) == best.get(t["id"]) else "num"
            ci = _interval(cell.get("lo"), cell.get("hi"))
            hint = f' title="file {_e(cell.get("file"))}"' if cell.get("file") else ""
            cells.append(f'<td class="{cls}"{hint}>{_num(value)}'
                         + (f'<span class="ci">{ci}</span>' if ci else "") + "</td>")
        mean = r.get("mean")
        mean_cls = "num best" if isinstance(mean, (int, float)) and round(mean, 2) == best.get("mean") else "num"
        row_cls = ' class="published"' if r.get("published") else ""
        lines.append(f'<tr{row_cls}><td class="model">{_e(r.get("model"))}</td><td>{_e(r.get("selection"))}</td>'
                     f'{"".join(cells)}<td class="{mean_cls}">{_num(mean)}</td><td class="num">'
                     f'{_e(r.get("n_tasks"))}</td><td>{_flags(r.get("flags"))}</td></tr>')
    lines.append("</tbody></table></div>")
    lines.append('<p class="note">Bold: the best value of a column. The mean is over the tasks a row has; '
                 "compare means only between rows with the same tasks.</p>")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

def _plots(data: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    """The plots section and the PNGs by name (the drill-down embeds the confusion matrices)."""
    try:
        from unibench.plots import report_plots

        plots = report_plots(data)
    except UserError as exc:  # MissingExtraError: no matplotlib; the page is useful without plots
        return f'<h2>Plots</h2><p class="note">No plots: {_e(exc)}</p>', {}
    has_published = any(r.get("published") for r in data.get("rows", []))
    captions = {"task_bars": "Primary metric per task and row; error bars are the 95 % bootstrap interval of the "
                             "selected file" + ("; grey dashes are the published rows." if has_published else ".")}
    parts = ["<h2>Plots</h2>"]
    for name, png in plots.items():
        if name.endswith("-confusion"):
            continue  # shown in its task's drill-down
        caption = captions.get(name, "")
        if name.endswith("-epochs"):
            caption = ("Every answer file of a task, in file order, with its 95 % interval band; the star is the "
                       "file the best-of-N row uses. The y axis is zoomed.")
        elif name.endswith("-wheels"):
            caption = ("The selected file's primary metric on each of the five emotion wheels (the task's score is "
                       "their mean); sentiment tasks have no wheels.")
        parts.append(f'<figure>{_img(png, name)}<figcaption>{_e(caption)}</figcaption></figure>')
    return "\n".join(parts), plots


# ---------------------------------------------------------------- worst samples

@dataclass
class ScoredSample:
    score: float            # 0-1
    row: dict[str, str]


def _float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _hit_score(row: dict[str, str]) -> float | None:
    hits = [v for v in (_float(row.get(f"hit_w{w}")) for w in WHEELS) if v is not None]
    return sum(hits) / len(hits) if hits else None


def _ov_score(row: dict[str, str]) -> float | None:
    scores = []
    for w in WHEELS:
        p = _float(row.get(f"precision_w{w}"))
        if p is None:
            continue  # the ground truth maps to nothing on this wheel
        r = _float(row.get(f"recall_w{w}")) or 0.0
        scores.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return sum(scores) / len(scores) if scores else None


def _sentiment_score(row: dict[str, str]) -> float | None:
    if row.get("kept") != "1":
        return None  # a neutral ground truth is not scored
    return _float(row.get("correct"))


def scored_samples(path: Path) -> tuple[str, list[ScoredSample]]:
    """(kind, every scored sample in file order) of a ``.samples.csv``: kind hit | ov | sentiment."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if "hit_w1" in columns:
                kind, score = "hit", _hit_score
            elif "precision_w1" in columns:
                kind, score = "ov", _ov_score
            elif "correct" in columns:
                kind, score = "sentiment", _sentiment_score
            else:
                raise UserError(f"{path}: not a per-sample file (no hit_w1, precision_w1 or correct column)")
            out = []
            for row in reader:
                value = score(row)
                if value is not None:
                    out.append(ScoredSample(value, {k: v or "" for k, v in row.items() if isinstance(k, str)}))
            return kind, out
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None


def worst_samples(path: Path, n: int = WORST_SAMPLES) -> tuple[str, list[ScoredSample], int]:
    """The n lowest-scored samples (ties in file order), their kind and how many samples were scored."""
    kind, samples = scored_samples(path)
    return kind, sorted(samples, key=lambda s: s.score)[:n], len(samples)


def _set(text: str) -> str:
    return ", ".join(p for p in text.split("|") if p)


def _cut(text: str) -> str:
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + "…"


def _wheel_sets(row: dict[str, str]) -> str:
    lines = []
    for w in WHEELS:
        gt, pred = row.get(f"gt_w{w}", ""), row.get(f"pred_w{w}", "")
        if gt or pred:
            lines.append(f"w{w}: {_e(_set(gt)) or '&empty;'} &larr; {_e(_set(pred)) or '&empty;'}")
    return "<br>".join(lines)


def _samples_section(output: Path, entry: dict[str, Any]) -> str:
    relative = entry.get("samples_csv")
    if not relative:
        return '<p class="note">No per-sample file for the selected answer file (the run had --log-samples none; rerun with --log-samples best to see the worst samples).</p>'
    path = Path(output) / str(relative)
    if not path.is_file():
        return f'<p class="note">Per-sample file <code>{_e(path)}</code> not found.</p>'
    try:
        kind, samples = scored_samples(path)
    except UserError as exc:
        return f'<p class="note">Worst samples not shown: {_e(exc)}</p>'
    worst = sorted(samples, key=lambda s: s.score)[:WORST_SAMPLES]
    if not worst:
        return f'<p class="note">No scored sample in <code>{_e(path)}</code>.</p>'
    total = len(samples)
    cut = worst[-1].score
    tied, shown = sum(1 for s in samples if s.score == cut), sum(1 for s in worst if s.score == cut)
    ties = (f" {tied} samples score {cut * 100:.1f}; the first {shown} of them in file order are shown."
            if tied > shown else "")
    how = {"hit": "per-sample score = mean hit over the wheels the ground truth maps to",
           "ov": "per-sample score = mean over the wheels of the sample's F (for ranking only: the task's "
                 "F-score comes from the mean precision and recall)",
           "sentiment": "the wrongly classified samples among those with a non-neutral ground truth"}[kind]
    if kind == "sentiment":
        head = "<th>sample</th><th>correct</th><th>answer</th><th>sentiment (extracted)</th><th>pred</th>" \
               "<th>ground truth</th><th>open labels</th>"
    else:
        head = "<th>sample</th><th>score</th><th>answer</th><th>extracted labels</th><th>ground truth</th>" \
               "<th>mapped per wheel (gt &larr; pred)</th>"
    lines = [f'<p class="small">The {len(worst)} lowest of {total} scored samples of the selected file ({_e(how)}); '
             f'from <code>{_e(relative)}</code>.{ties}</p>', f"<table><thead><tr>{head}</tr></thead><tbody>"]
    for s in worst:
        r = s.row
        answer = f'<td class="text">{_e(_cut(r.get("answer", "")))}</td>'
        if kind == "sentiment":
            lines.append(f'<tr><td>{_e(r.get("name"))}</td><td class="num">{"yes" if s.score else "no"}</td>{answer}'
                         f'<td>{_e(r.get("sentiment"))}</td><td>{_e(r.get("pred"))}</td><td>{_e(r.get("gt"))}</td>'
                         f'<td>{_e(r.get("ov_labels"))}</td></tr>')
        else:
            extracted = _e(_set(r.get("pred", "")))
            if r.get("ov_raw"):
                extracted += f'<span class="ci">raw: {_e(r.get("ov_raw"))}</span>'
            lines.append(f'<tr><td>{_e(r.get("name"))}</td><td class="num">{s.score * 100:.1f}</td>{answer}'
                         f'<td>{extracted}</td><td>{_e(_set(r.get("gt", "")))}</td>'
                         f'<td class="small">{_wheel_sets(r)}</td></tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


# ---------------------------------------------------------------- drill-down per model and task

def _selection_sentence(entry: dict[str, Any]) -> str:
    sel = entry.get("selection")
    if not isinstance(sel, dict):
        return '<p class="note">One answer file: no selection.</p>'
    return (f'<p>Picking the best of {_e(sel.get("n_files"))} files on the test set gives {_num(sel.get("best"))}, '
            f'{_num(sel.get("best_minus_median"))} above the median file ({_num(sel.get("median"))}; worst '
            f'{_num(sel.get("worst"))}, spread {_num(sel.get("spread"))}), while files that do not really differ '
            f'would put the best {_num(sel.get("expected_max_gain"))} above a typical file by chance alone, so read '
            f"the best-of-N score as optimistic by about that much.</p>")


def _files_table(entry: dict[str, Any]) -> str:
    lines = ["<table><thead><tr><th>#</th><th>answer file</th><th>score</th><th>95 % interval</th><th>flags</th>"
             "</tr></thead><tbody>"]
    for f in sorted(entry.get("files", []), key=lambda f: f.get("order", 0)):
        chosen = f.get("label") == entry.get("selected")
        mark = " &#9733; selected" if chosen else ""
        lines.append(f'<tr{" class=selected" if chosen else ""}><td class="num">{_e(f.get("order"))}</td>'
                     f'<td><code>{_e(f.get("label"))}</code>{mark}</td><td class="num">{_num(f.get("value"))}</td>'
                     f'<td class="num">{_interval(f.get("lo"), f.get("hi"))}</td><td>{_flags(f.get("flags"))}</td>'
                     "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _closed_set(entry: dict[str, Any], confusion_png: bytes | None) -> str:
    cs = entry.get("closed_set")
    if not isinstance(cs, dict):
        return ""
    facts = [f"{name} {_num(cs[key] * 100)}" for key, name in (("accuracy", "accuracy"), ("weighted_f1", "weighted F1"))
             if _num(cs.get(key))]
    facts += [f"{name} {_e(cs[key])}" for key, name in (("n", "n ="), ("n_no_class", "no class:"), ("mode", "mode"),
                                                         ("prompt", "prompt")) if cs.get(key) is not None]
    extension = (" <b>Class list extended beyond the published MER2023 six.</b>" if cs.get("extension") else "")
    return (f"<h4>Closed-set view</h4><p>{' &middot; '.join(facts)} {_flags(cs.get('flags'))}<br>"
            f'<span class="note">{_e(cs.get("note"))}</span>{extension}</p>'
            + (f"<figure>{_img(confusion_png, 'confusion matrix')}</figure>" if confusion_png else ""))


def _drilldown(data: dict[str, Any], output: Path, plots: dict[str, bytes]) -> str:
    from unibench.fileio import safe_name

    models = data.get("models") or {}
    if not models:
        return ""
    order = [t["id"] for t in _task_info(data)]
    parts = ["<h2>Per model and task</h2>"]
    for model, info in models.items():
        parts.append(f"<h3>{_e(model)}</h3>")
        tasks = info.get("tasks") or {}
        for task_id in sorted(tasks, key=lambda t: (order.index(t) if t in order else len(order), t)):
            entry = tasks[task_id]
            chosen = next((f for f in entry.get("files", []) if f.get("label") == entry.get("selected")), {})
            n = len(entry.get("files", []))
            summary = (f"{_e(_title(data, task_id))} &mdash; {_num(chosen.get('value'))} "
                       f"{_interval(chosen.get('lo'), chosen.get('hi'))} "
                       f"<span class=\"small\">{_e(METRIC_NAMES.get(entry.get('metric'), entry.get('metric')))}, "
                       f"{'best of ' + str(n) if n > 1 else 'one file'}</span> {_flags(entry.get('flags'))}")
            confusion = plots.get(f"{safe_name(model)}-{task_id}-confusion")
            parts.append(f"<details><summary>{summary}</summary>"
                         f"<p class=\"small\">level {_e(entry.get('level'))} &middot; lexicon "
                         f"<code>{_e(str(entry.get('lexicon_sha256') or '')[:12])}</code></p>"
                         f"{_files_table(entry)}{_selection_sentence(entry)}{_closed_set(entry, confusion)}"
                         f"<h4>Worst-scored samples</h4>{_samples_section(output, entry)}</details>")
    return "\n".join(parts)


# ---------------------------------------------------------------- provenance and robustness

PROVENANCE = ("command", "unibench", "python", "numpy", "platform", "lexicon", "extractor", "level", "select",
              "started")


def _provenance_value(key: str, value: Any) -> str:
    if key == "command" and isinstance(value, list):
        return f"<code>{_e(shlex.join(str(v) for v in value))}</code>"
    if key == "lexicon" and isinstance(value, dict):
        sha = str(value.get("sha256") or "")
        return f'<code title="{_e(sha)}">{_e(sha[:12])}</code> <span class="small">{_e(value.get("path"))}</span>'
    if isinstance(value, (dict, list)):
        return f"<code>{_e(json.dumps(value, ensure_ascii=False))}</code>"
    return _e(value)


def _provenance(data: dict[str, Any]) -> str:
    models = data.get("models") or {}
    head = "".join(f"<th>{_e(k)}</th>" for k in ("row", "selection", *PROVENANCE))
    lines = ["<h2>Provenance</h2>", f'<table class="small"><thead><tr>{head}</tr></thead><tbody>']
    published = [str(r.get("model")) for r in data.get("rows", []) if r.get("published")]
    for r in data.get("rows", []):
        if r.get("published"):
            continue
        prov = (models.get(r.get("model")) or {}).get("provenance") or {}
        values = "".join(f"<td>{_provenance_value(k, prov.get(k))}</td>" for k in PROVENANCE)
        lines.append(f'<tr><td class="model">{_e(r.get("model"))}</td><td>{_e(r.get("selection"))}</td>{values}</tr>')
    if published:
        lines.append(f'<tr class="published"><td class="model">{len(published)} published rows</td><td>published</td>'
                     f'<td colspan="{len(PROVENANCE)}">the paper\'s table as shipped with unibench '
                     f"(unibench/reference/paper_table.csv): {_e(', '.join(published))}</td></tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _agreements(value: Any) -> list[tuple[str, list[str], list[list[float]]]]:
    """The rank-agreement matrices of robustness.json: ``{task: {names, kendall_tau}}`` as the robustness
    command writes it, or one ``{title, names, matrix}`` or a list of them."""
    if isinstance(value, dict) and ("matrix" in value or "kendall_tau" in value):
        value = [value]
    elif isinstance(value, dict):
        value = [{"title": f"{k}: Kendall tau between rankings", **v} for k, v in value.items() if isinstance(v, dict)]
    out = []
    for i, item in enumerate(value if isinstance(value, list) else []):
        if not isinstance(item, dict):
            continue
        matrix = item.get("matrix", item.get("kendall_tau"))
        if isinstance(item.get("names"), list) and isinstance(matrix, list):
            out.append((str(item.get("title") or f"Rank agreement {i + 1}"), [str(n) for n in item["names"]], matrix))
    return out


def _robustness(output: Path, draw: Callable[[list[str], list[list[float]], str], bytes]) -> str:
    path = Path(output) / "robustness.json"
    if not path.is_file():
        return ""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        return f'<h2>Robustness</h2><p class="note">{_e(path)} could not be read ({_e(exc)}).</p>'
    if not isinstance(found, dict):
        return ""
    parts = ["<h2>Robustness</h2>"]
    summary = found.get("summary")
    if isinstance(summary, list) and summary:
        parts.append("<ul>" + "".join(f"<li>{_e(s)}</li>" for s in summary) + "</ul>")
    for title, names, matrix in _agreements(found.get("agreement")):
        try:
            parts.append(f"<figure>{_img(draw(names, matrix, title), title)}<figcaption>{_e(title)}: Kendall tau "
                         "between the model rankings under each pair of protocol variants (1: same order)."
                         "</figcaption></figure>")
        except (UserError, ValueError, TypeError) as exc:  # MissingExtraError too: the note says what to install
            parts.append(f'<p class="note">{_e(title)}: not drawn ({_e(exc)}).</p>')
    return "\n".join(parts) if len(parts) > 1 else ""


# ---------------------------------------------------------------- the page

def render_html(data: dict[str, Any], output: Path, report_path: Path, plot_folder: Path | None = None) -> Path:
    """Write the report of ``data`` (built from the results folder ``output``) as one HTML file; with
    ``plot_folder``, the plots it embeds are also written there as PNG files (``<name>.png``)."""
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise UserError("the report data has no 'rows' list (expected schema unibench-report/1)")
    plots_html, plots = _plots(data)
    if plot_folder is not None and plots:
        for name, png in plots.items():
            try:
                with atomic_open(Path(plot_folder) / f"{name}.png", "wb") as fh:
                    fh.write(png)
            except OSError as exc:
                raise UserError(f"cannot write {Path(plot_folder) / name}.png ({exc.strerror or exc})") from None
    from unibench.plots import rank_agreement
    body = "\n".join([_header(data), "<h2>Leaderboard</h2>", _leaderboard(data), plots_html,
                      _drilldown(data, Path(output), plots), _provenance(data),
                      _robustness(Path(output), rank_agreement)])
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>MER-UniBench report: {_e(data.get('output'))}</title><style>{CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")
    report_path = Path(report_path)
    try:
        with atomic_open(report_path) as fh:
            fh.write(page)
    except OSError as exc:
        raise UserError(f"cannot write the report {report_path} ({exc.strerror or exc})") from None
    return report_path
