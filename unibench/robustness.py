"""`run_bench robustness`: how much a ranking depends on choices the protocol fixed arbitrarily.

The protocol scores a basic or open-vocabulary task as the mean over five
emotion wheels, at level 1, with one lexicon revision, with the emotion-wheel
F-score (OV) and with one extraction of the labels. Each of those is a choice.
This command scores every *unit* (an answer file, or a run folder's answer
file) once per lexicon and level, derives one score per unit for every
variant (each wheel alone comes free from the per-wheel numbers), ranks the
units under each variant and says how far each ranking agrees with the
protocol's: Kendall's tau-b, Spearman's rho, how many units change rank, and
whether the top unit changes.

Variants that do not apply are named with the reason (sentiment tasks have
no wheels; a grouping cache made for other predictions cannot score these;
a second extraction exists only where ``<stem>-openset-<tag>.npz`` does).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from unibench.adapters.base import AnswerSet
from unibench.errors import UserError
from unibench.metrics.lexicon import Lexicon
from unibench.metrics.scores import WHEEL_IDS, TaskScore
from unibench.taskdata import SENTIMENT, TaskData, TaskSpec

SCHEMA = "unibench-robustness/1"
PROTOCOL = "protocol"
UNIT_MODES = ("models", "files")


# ---------------------------------------------------------------- the units

@dataclass
class Unit:
    """One thing being ranked: an answer file, named ``run/stem`` when several run folders are ranked."""

    label: str
    answers: AnswerSet


def replay_options(answers: str, model_args: str | None) -> Any:
    from unibench.adapters.replay import ReplayOptions
    from unibench.modelargs import build_options, parse_kv

    if "path" in parse_kv(model_args):
        raise UserError("--model-args: give the answers folder as ANSWERS, not as path=")
    options = build_options(ReplayOptions, ",".join(p for p in ("path=.", model_args or "") if p),
                            owner="model 'replay'")
    return dataclasses.replace(options, path=Path(answers).expanduser())


def run_folders(options: Any, spec: TaskSpec) -> list[Path]:
    """The run folders under ``results-<task>/`` that hold answer files (none for a JSONL/CSV layout)."""
    from unibench.answerfiles import is_answer_npz

    task_dir = Path(options.path) / f"results-{spec.id}"
    if not task_dir.is_dir():
        return []
    runs = sorted(p for p in task_dir.iterdir() if p.is_dir())
    if options.run:
        runs = [r for r in runs if r.name == options.run] or [r for r in runs if r.name.startswith(options.run)]
    return [r for r in runs if any(is_answer_npz(f) and f.is_file() for f in r.iterdir())]


def default_unit(options: Any, spec: TaskSpec) -> str:
    """``models`` when the answers hold several run folders (e.g. ten baselines), else ``files``."""
    return "models" if len(run_folders(options, spec)) > 1 else "files"


def load_units(options: Any, task: TaskData, unit: str) -> list[Unit]:
    from unibench.adapters.replay import ReplayAdapter
    from unibench.runner import check_extractions

    if unit == "models":
        runs = run_folders(options, task.spec)
        if not runs:
            raise UserError(f"[{task.spec.id}] --unit models needs run folders: no results-{task.spec.id}/<run>/ "
                            f"with answer files under {options.path}")
        units = [Unit(f"{r.name}/{s.label}", s) for r in runs
                 for s in ReplayAdapter(dataclasses.replace(options, run=r.name)).answer_sets(task)]
    else:
        units = [Unit(s.label, s) for s in ReplayAdapter(options).answer_sets(task)]
    if len(units) < 2:
        raise UserError(f"[{task.spec.id}] {len(units)} answer file(s) under {options.path}: a ranking needs "
                        "at least two units (several answer files, or --unit models with several run folders)")
    check_extractions(task.spec, [u.answers for u in units], None)
    return units


# ---------------------------------------------------------------- the variants

@dataclass
class Variant:
    name: str
    description: str          # what the variant changes, in words
    phrase: str               # how a finding line names it ("wheel 3 alone")
    scores: list[float]       # one per unit, 0-1


@dataclass
class TaskRobustness:
    spec: TaskSpec
    units: list[str]
    variants: list[Variant]
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants]


def wheel_variants(spec: TaskSpec, base: list[TaskScore]) -> list[Variant]:
    metric = spec.primary_metric
    return [Variant(f"wheel{w}", f"{metric} on wheel {w} alone (the protocol averages the five wheels)",
                    f"wheel {w} alone", [s.per_wheel[f"wheel{w}"][metric] for s in base]) for w in WHEEL_IDS]


def grouping_variant(task: TaskData, units: list[Unit], cache_dir: Path) -> tuple[Variant | None, str]:
    """The §6 grouping metric from cached groupings, when they cover every unit's labels (else a note)."""
    from unibench.metrics.grouping import grouping_scores, load_grouping_cache

    cache = load_grouping_cache(cache_dir)
    scores, uncovered = [], []
    for u in units:
        ov = {n: v for n, v in (u.answers.ov_labels or {}).items() if n not in u.answers.rejected}
        try:
            scores.append(grouping_scores(task.gt, ov, cache=cache, cache_label=str(cache_dir)).metrics["average"])
        except UserError as exc:  # groupings missing or made for another prediction: only an LLM could fill them
            uncovered.append((u.label, str(exc)))
    if uncovered:
        label, why = uncovered[0]
        why = why.split(": ", 1)[-1].split("; pass an LLM")[0]
        return None, (f"grouping metric: not available: the cached groupings in {cache_dir} cover "
                      f"{len(units) - len(uncovered)} of {len(units)} units (e.g. {label}: {why}); "
                      "regrouping needs an LLM (run_bench --ov-metric grouping --extractor ...)")
    return Variant("grouping", "the LLM synonym-grouping metric (spec §6; average of accuracy and recall, "
                   f"groupings from {cache_dir}) instead of the emotion-wheel F-score", "the grouping metric",
                   scores), ""


def second_extractions(spec: TaskSpec, units: list[Unit]) -> dict[str, list[Path]]:
    """tag -> one file per unit, for every ``<stem>-openset-<tag>.npz`` (sentiment tasks:
    ``<stem>-openset-sentiment-<tag>.npz``) that exists beside every unit's answer file."""
    found: dict[str, list[Path]] = {}
    for u in units:
        source = Path(u.answers.source)
        if source.suffix != ".npz":
            return {}
        stem = source.with_suffix("").name
        prefix = f"{stem}-openset-sentiment-" if spec.family == SENTIMENT else f"{stem}-openset-"
        for path in sorted(source.parent.glob(glob.escape(prefix) + "*.npz")):
            tag = path.name[len(prefix):-4]
            if tag and not (spec.family != SENTIMENT and tag.startswith("sentiment")):
                found.setdefault(tag, []).append(path)
    return {tag: paths for tag, paths in found.items() if len(paths) == len(units)}


def extractor_variants(task: TaskData, units: list[Unit], lexicon: Lexicon) -> tuple[list[Variant], str]:
    from unibench.answerfiles import read_extraction_file
    from unibench.runner import score_answer_set

    spec = task.spec
    tags = second_extractions(spec, units)
    if not tags:
        where = "-openset-sentiment-<tag>.npz" if spec.family == SENTIMENT else "-openset-<tag>.npz"
        return [], (f"second extractor: not available (each answer file has one extraction; a second would be "
                    f"<stem>{where} beside every answer file)")
    out = []
    for tag, paths in sorted(tags.items()):
        scores = []
        for u, path in zip(units, paths):
            items, _ = read_extraction_file(path)
            alt = dataclasses.replace(u.answers, **({"sentiments": items} if spec.family == SENTIMENT
                                                    else {"ov_labels": items}))
            scores.append(score_answer_set(task, alt, lexicon, "level1", rows=False).metrics[spec.primary_metric])
        out.append(Variant(f"extractor:{tag}", f"labels from the second extraction <stem>-openset-{tag}.npz",
                           f"the '{tag}' extraction", scores))
    return out, ""


def task_variants(task: TaskData, units: list[Unit], lexicons: list[Lexicon],
                  grouping_cache: Path | None) -> TaskRobustness:
    """Score every unit once per lexicon and level; derive one score per unit for each variant."""
    from unibench.runner import score_answer_set

    spec, metric = task.spec, task.spec.primary_metric
    primary = lexicons[0]

    def scored(lexicon: Lexicon, level: str) -> list[TaskScore]:
        return [score_answer_set(task, u.answers, lexicon, level, rows=False) for u in units]

    base = scored(primary, "level1")
    result = TaskRobustness(spec, [u.label for u in units], [Variant(
        PROTOCOL, f"the protocol: {metric}, mean over the five wheels, level1, lexicon {primary.folder.name}"
        if spec.family != SENTIMENT else f"the protocol: {metric} of prompt B's sentiments",
        "the protocol", [s.metrics[metric] for s in base])])
    if spec.family == SENTIMENT:
        result.variants.append(Variant("accuracy", "accuracy instead of the weighted F1 (same samples)",
                                       "accuracy instead of WAF", [s.metrics["accuracy"] for s in base]))
        result.notes.append("sentiment task: no emotion wheels, so the wheel, level and lexicon variants do not "
                            "apply (WAF reads prompt B's positive/negative answer, never the lexicon)")
    else:
        result.variants.extend(wheel_variants(spec, base))
        result.variants.append(Variant("level2", f"{metric} at wheel level 2 instead of level 1", "level 2",
                                       [s.metrics[metric] for s in scored(primary, "level2")]))
        if len(lexicons) > 1:
            other = lexicons[1]
            if other.sha256 == primary.sha256:
                result.notes.append(f"lexicon: {other.folder} has the same content as {primary.folder}; "
                                    "no lexicon variant")
            else:
                result.variants.append(Variant(
                    "lexicon2", f"lexicon {other.folder.name} instead of {primary.folder.name}",
                    f"lexicon {other.folder.name}", [s.metrics[metric] for s in scored(other, "level1")]))
        else:
            result.notes.append("lexicon: one --lexicon given; pass a second to compare lexicon revisions")
    if spec.family == "ov":
        if grouping_cache is None:
            result.notes.append("grouping metric: skipped (no --grouping-cache)")
        else:
            variant, note = grouping_variant(task, units, grouping_cache)
            result.variants.extend([variant] if variant else [])
            result.notes.extend([note] if note else [])
    variants, note = extractor_variants(task, units, primary)
    result.variants.extend(variants)
    result.notes.extend([note] if note else [])
    return result


# ---------------------------------------------------------------- agreement between rankings

def _exact(scores: Sequence[float]) -> list[float]:
    """Scores equal up to float noise (a sum taken in another order) are ties."""
    return [round(float(s), 10) for s in scores]


def ranks(scores: Sequence[float]) -> list[int]:
    """Leaderboard ranks, 1 = best; tied units share the better rank (1, 2, 2, 4)."""
    values = _exact(scores)
    return [1 + sum(1 for o in values if o > v) for v in values]


def top_unit(scores: Sequence[float], prefer: int | None = None) -> int:
    """Index of the best unit: ``prefer`` when it shares the top rank (a tie is no change of the top), else
    the first best one (as the leaderboard's 'best' selection)."""
    values = _exact(scores)
    if prefer is not None and values[prefer] == max(values):
        return prefer
    return values.index(max(values))


def correlations(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(Kendall's tau-b, Spearman's rho); NaN when either ranking is all ties."""
    import warnings

    from scipy.stats import kendalltau, spearmanr

    x, y = _exact(a), _exact(b)
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(kendalltau(x, y).statistic), float(spearmanr(x, y).statistic)


@dataclass
class Comparison:
    """One variant's ranking against the protocol's."""

    variant: str
    kendall_tau: float
    spearman_rho: float
    rank_changes: int
    max_rank_shift: int       # the largest move of one unit, in places
    top1_protocol: str
    top1_variant: str

    @property
    def top1_changed(self) -> bool:
        return self.top1_protocol != self.top1_variant


def compare_to_protocol(result: TaskRobustness, variant: Variant) -> Comparison:
    base = result.variants[0].scores
    tau, rho = correlations(base, variant.scores)
    shifts = [abs(r0 - r1) for r0, r1 in zip(ranks(base), ranks(variant.scores))]
    top = top_unit(base)
    return Comparison(variant.name, tau, rho, sum(1 for s in shifts if s), max(shifts), result.units[top],
                      result.units[top_unit(variant.scores, prefer=top)])


def agreement_matrix(result: TaskRobustness) -> tuple[list[list[float]], list[list[float]]]:
    n = len(result.variants)
    tau = [[1.0] * n for _ in range(n)]
    rho = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            t, r = correlations(result.variants[i].scores, result.variants[j].scores)
            tau[i][j] = tau[j][i] = t
            rho[i][j] = rho[j][i] = r
        if len(set(_exact(result.variants[i].scores))) < 2:
            tau[i][i] = rho[i][i] = math.nan
    return tau, rho


# ---------------------------------------------------------------- findings

def finding_lines(result: TaskRobustness) -> list[str]:
    n = len(result.units)
    short = dict(zip(result.units, short_labels(result.units)))
    out = []
    for v in result.variants[1:]:
        c = compare_to_protocol(result, v)
        top = (f"top-1 changes ({short[c.top1_protocol]} -> {short[c.top1_variant]})" if c.top1_changed
               else "top-1 unchanged")
        moved = (f" (at most {c.max_rank_shift} place{'s' if c.max_rank_shift > 1 else ''})"
                 if c.rank_changes else "")
        out.append(f"[{result.spec.id}] {v.phrase} reorders {c.rank_changes} of {n} units{moved}; {top}; "
                   f"tau {_num(c.kendall_tau)}")
    tau, _ = agreement_matrix(result)
    pairs = [(tau[i][j], i, j) for i in range(len(tau)) for j in range(i + 1, len(tau)) if not math.isnan(tau[i][j])]
    if len(result.variants) > 2 and pairs:
        t, i, j = min(pairs)
        out.append(f"[{result.spec.id}] least agreement between two variants: {result.variants[i].phrase} vs "
                   f"{result.variants[j].phrase} (tau {_num(t)})")
    if len(result.variants) == 1:
        out.append(f"[{result.spec.id}] no variant applies: the ranking depends on none of the choices tested")
    return out


def _num(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _common(texts: list[str], from_end: bool) -> int:
    """Length of the common prefix (or suffix) of ``texts``, cut back to a '-' or '_' boundary."""
    seqs = [t[::-1] for t in texts] if from_end else texts
    n = 0
    while all(len(s) > n for s in seqs) and len({s[n] for s in seqs}) == 1:
        n += 1
    while n and seqs[0][n - 1] not in "-_":
        n -= 1
    return n


def short_labels(labels: list[str]) -> list[str]:
    """Labels for tables: the answer-file part without what every unit's file name shares
    ("Chat-UniVi/output-reason-7b-subtitle-eng" -> "Chat-UniVi/subtitle"); unchanged if that would clash."""
    if not all("/" in lab for lab in labels):  # answer files of one run: their full names (checkpoints)
        return labels
    heads = [lab.rsplit("/", 1)[0] + "/" for lab in labels]
    tails = [lab.rsplit("/", 1)[-1] for lab in labels]
    if len(set(heads)) == 1:  # one run folder: its name says nothing, the file names say everything
        return tails
    if len(set(tails)) < 2:
        return labels
    pre, post = _common(tails, False), _common(tails, True)
    cut = [t[pre:len(t) - post] for t in tails]
    out = [h + c for h, c in zip(heads, cut)]
    return out if all(cut) and len(set(out)) == len(out) else labels


# ---------------------------------------------------------------- output

def to_json(results: list[TaskRobustness], unit: str) -> dict[str, Any]:
    def clean(x: float) -> float | None:
        return None if math.isnan(x) else x

    tasks, agreement, variants = {}, {}, {}
    for r in results:
        tau, rho = agreement_matrix(r)
        comps = [compare_to_protocol(r, v) for v in r.variants[1:]]
        tasks[r.spec.id] = {
            "family": r.spec.family, "primary_metric": r.spec.primary_metric, "units": r.units,
            "scores": {v.name: v.scores for v in r.variants},
            "ranks": {v.name: ranks(v.scores) for v in r.variants},
            "vs_protocol": {c.variant: {"kendall_tau": clean(c.kendall_tau), "spearman_rho": clean(c.spearman_rho),
                                        "rank_changes": c.rank_changes, "max_rank_shift": c.max_rank_shift,
                                        "top1_protocol": c.top1_protocol,
                                        "top1_variant": c.top1_variant, "top1_changed": c.top1_changed}
                            for c in comps},
            "notes": r.notes}
        agreement[r.spec.id] = {"names": r.names, "kendall_tau": [[clean(x) for x in row] for row in tau],
                                "spearman_rho": [[clean(x) for x in row] for row in rho]}
        for v in r.variants:
            variants.setdefault(v.name, {"name": v.name, "description": v.description, "tasks": []})
            variants[v.name]["tasks"].append(r.spec.id)
    return {"schema": SCHEMA, "unit": unit, "tasks": tasks, "variants": list(variants.values()),
            "agreement": agreement, "summary": [line for r in results for line in finding_lines(r)]}


def _table(header: list[str], rows: list[list[str]], md: bool) -> list[str]:
    if md:
        return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                *("| " + " | ".join(row) + " |" for row in rows)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = ["ljust" if i == 0 else "rjust" for i in range(len(header))]
    line = lambda cells: "  ".join(getattr(c, f)(w) for c, f, w in zip(cells, fmt, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def format_report(results: list[TaskRobustness], unit: str, md: bool = False) -> str:
    out: list[str] = []
    for r in results:
        n, short = len(r.units), short_labels(r.units)
        head = f"[{r.spec.id}] {n} units ({unit}), primary metric {r.spec.primary_metric}"
        out += [f"## {head}" if md else head, ""]
        comps = [compare_to_protocol(r, v) for v in r.variants[1:]]
        label = dict(zip(r.units, short))
        rows = [[c.variant, _num(c.kendall_tau), _num(c.spearman_rho), f"{c.rank_changes}/{n}",
                 str(c.max_rank_shift), f"changes: {label[c.top1_variant]}" if c.top1_changed else "same"]
                for c in comps]
        if rows:
            out += _table(["variant vs protocol", "tau", "rho", "rank changes", "max shift", "top-1"], rows,
                          md) + [""]
        rank_of = {v.name: ranks(v.scores) for v in r.variants}
        order = sorted(range(n), key=lambda i: (rank_of[PROTOCOL][i], i))
        rows = [[short[i], f"{r.variants[0].scores[i] * 100:.2f}", *(str(rank_of[v][i]) for v in r.names)]
                for i in order]
        out += _table(["unit", f"{r.spec.primary_metric} x100", *(f"#{v}" for v in r.names)], rows, md) + [""]
        if len(r.variants) > 2:
            tau, _ = agreement_matrix(r)
            rows = [[a, *(_num(x) for x in tau[i])] for i, a in enumerate(r.names)]
            out += ["Kendall's tau between variants:", ""]
            out += _table(["tau", *r.names], rows, md) + [""]
        out += [f"note: {note}" if not md else f"- {note}" for note in r.notes] + [""]
    lines = [line for r in results for line in finding_lines(r)]
    out += ["## Findings" if md else "findings:", ""] + [f"- {line}" if md else f"  {line}" for line in lines]
    return "\n".join(out).rstrip() + "\n"


def write_outputs(folder: Path, data: dict[str, Any], results: list[TaskRobustness]) -> list[str]:
    """DIR/robustness.json and, when unibench.plots offers ``rank_agreement``, one PNG per task."""
    from unibench.fileio import atomic_open, write_json
    from unibench.results import check_output_folder

    check_output_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "robustness.json", data)
    written, notes = [str(folder / "robustness.json")], []
    try:
        from unibench.plots import rank_agreement  # written by another part of the harness; optional
    except ImportError:
        rank_agreement = None
    if rank_agreement is None:
        notes.append("no PNG: unibench.plots.rank_agreement is not available")
    else:
        for r in results:
            if len(r.variants) < 2:
                continue
            png = rank_agreement(r.names, data["agreement"][r.spec.id]["kendall_tau"],
                                 f"{r.spec.id}: Kendall's tau between rankings of {len(r.units)} units")
            path = folder / f"robustness-{r.spec.id}.png"
            with atomic_open(path, "wb") as fh:
                fh.write(png)
            written.append(str(path))
    return written + [f"note: {n}" for n in notes]


# ---------------------------------------------------------------- the command

def main(argv: list[str]) -> int:
    from unibench.metrics.lexicon import load_lexicon
    from unibench.strict import ArgumentParser
    from unibench.tasks import resolve_tasks
    from unibench.tasks.base import load_task, resolve_data_root

    p = ArgumentParser(
        prog="run_bench robustness",
        description="How rankings of answer files (or models) change under choices the protocol fixed: each "
                    "wheel alone, level 2, another lexicon, the grouping metric, another extraction. Example: "
                    "run_bench robustness ../shared/data/ovmerd/baselines --task ovmerd "
                    "--data-root ../shared/data/ovmerd --lexicon ../shared/data/emotion_wheel-affectgpt2025 "
                    "--lexicon ../shared/data/emotion_wheel-mer2026")
    p.add_argument("answers", metavar="ANSWERS", help="answers in the replay layout (results-<task>/<run>/*.npz)")
    p.add_argument("--model-args", default="", help="replay options k=v,... (e.g. run=NAME)")
    p.add_argument("--task", required=True, help="task id(s), comma separated")
    p.add_argument("--data-root", help="benchmark data folder (default: $UNIBENCH_DATA)")
    p.add_argument("--lexicon", action="append", default=[],
                   help="emotion-wheel lexicon folder; give it twice to compare two revisions (the first is the "
                        "protocol's)")
    p.add_argument("--unit", choices=UNIT_MODES,
                   help="what is ranked: every answer file (files), or every run folder's answer files "
                        "(models); default: models when the answers hold several run folders")
    p.add_argument("--grouping-cache", help="cached LLM groupings (DIR/<name>.npy) for the grouping metric")
    p.add_argument("--allow-count-mismatch", action="store_true", help="score a split of unexpected size")
    p.add_argument("--output", help="write DIR/robustness.json (and a PNG per task when plots are available)")
    p.add_argument("--format", choices=("text", "md", "json"), default="text")
    args = p.parse_args(argv)

    if not args.lexicon:
        raise UserError("--lexicon is required (give it twice to compare two lexicon revisions)")
    if len(args.lexicon) > 2:
        raise UserError(f"--lexicon given {len(args.lexicon)} times: give one, or two to compare")
    if args.output:
        from unibench.results import check_output_folder

        check_output_folder(Path(args.output))
    specs = resolve_tasks(args.task)
    options = replay_options(args.answers, args.model_args)
    if not Path(options.path).exists():
        raise UserError(f"answers not found: {options.path}")
    data_root = resolve_data_root(args.data_root)
    lexicons = [load_lexicon(folder) for folder in args.lexicon]
    cache = Path(args.grouping_cache).expanduser() if args.grouping_cache else None
    if cache is not None and not cache.is_dir():
        raise UserError(f"grouping cache folder not found: {cache}")
    unit = args.unit or default_unit(options, specs[0])
    results = []
    for spec in specs:
        task = load_task(spec, data_root, check_count=not args.allow_count_mismatch)
        result = task_variants(task, load_units(options, task, unit), lexicons, cache)
        result.notes.extend(task.warnings)  # e.g. a split of unexpected size (--allow-count-mismatch)
        results.append(result)
    data = to_json(results, unit)
    if args.format == "json":
        print(json.dumps(data, indent=1, ensure_ascii=False))
    else:
        print(format_report(results, unit, md=args.format == "md"), end="")
    if args.output:
        for line in write_outputs(Path(args.output), data, results):
            print(line if line.startswith("note:") else f"written: {line}", file=sys.stderr)
    return 0
