"""The pipeline: tasks -> answers -> extraction -> scores -> results.

``run`` checks everything it can before doing work (data, answers,
extractions), so a bad input stops the run in seconds with one clear line.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unibench import __version__
from unibench.adapters.base import Adapter, AnswerSet
from unibench.errors import UserError, log
from unibench.strict import read_json_file
from unibench.metrics.lexicon import Lexicon
from unibench.metrics.scores import TaskScore, hit_rate, ov_scores, sentiment_scores
from unibench.results import (FileReport, FileResult, TaskSummary, check_output_folder, printable, read_summary, safe_name,
                              update_leaderboard, update_run_metadata, write_json, write_samples_csv)
from unibench.fileio import atomic_open
from unibench.taskdata import SENTIMENT
from unibench.tasks.base import EXTRA_TASKS, TASKS, TaskData, TaskSpec, load_task



@dataclass
class RunConfig:
    tasks: list[TaskSpec]
    data_root: Path
    output: Path
    select: str = "best"                  # best | last | file:<name>
    level: str = "level1"
    allow_count_mismatch: bool = False
    skip_bad_gt: bool = False             # leave samples with invalid ground truth out (flagged) instead of stopping
    force_extract: bool = False           # the configured extractor redoes labels even where extraction files exist
    # inference (generating adapters; see unibench.inference)
    question: str = "affectgpt"           # affectgpt | ovmer | ovmer-nosub | description | custom text
    batch_size: int = 0                   # 0: the adapter's default_batch_size, else 1
    limit: int | None = None              # first N samples of each split; results flagged partial
    fail_fast: bool = False
    progress: bool = True
    # open-vocabulary tasks: ew (the primary metric) | grouping | both (adds spec §6's LLM grouping metric)
    ov_metric: str = "ew"
    grouping_cache: Path | None = None    # cached groupings, MER2024 layout <dir>/<name>.npy
    # per-sample CSVs: best (the answer file the leaderboard row uses, per task), all, none
    log_samples: str = "best"
    jobs: int = 0                         # replay: tasks scored in parallel processes; 0 = the free cores
    # who answers the batches of a generating model: None = here (unibench.inference.LocalExecutor), or e.g. a
    # unibench.ray_executor.RayExecutor (--executor ray); shard (I, N): answer only shard I of N (--shard I/N)
    executor: Any = None
    shard: tuple[int, int] | None = None
    # bootstrap intervals of every answer file's scores (resamples; 0: none) and their seed
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    # closed-set view of the basic tasks: none | lexicon (offline, flagged) | labels | reason (LLM prompts)
    closed_set: str = "none"
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    extra_metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskOutcome:
    task: str
    summary: TaskSummary
    warnings: list[str]


# ---------------------------------------------------------------- extraction

def needs(spec: TaskSpec) -> tuple[bool, bool]:
    """(needs prompt-A labels, needs prompt-B sentiments)."""
    return True, spec.family == SENTIMENT


def check_selection(spec: TaskSpec, sets: list[AnswerSet], name: str) -> None:
    """``--select <file>``: a name matching no answer file would silently leave the row empty."""
    if not any(s.label in (name, Path(name).stem) for s in sets):
        raise UserError(f"[{spec.id}] --select {name}: no such answer file "
                        f"(files: {', '.join(s.label for s in sets)})")


def check_extractions(spec: TaskSpec, sets: list[AnswerSet], extractor: Any) -> None:
    """Stop early when an extraction is missing and no extractor can make it."""
    if extractor is not None:
        return
    want_ov, want_senti = needs(spec)
    for s in sets:
        stem = s.source[:-4] if s.source.endswith(".npz") else s.source.rsplit(".", 1)[0]
        if want_ov and s.ov_labels is None:
            raise UserError(f"[{spec.id}] no extracted labels for {s.source}: {stem}-openset.npz is missing; "
                            "an extractor backend is needed (--extractor vllm|hf|openai|lexicon)")
        if want_senti and s.sentiments is None:
            raise UserError(f"[{spec.id}] no sentiment extraction for {s.source}: {stem}-openset-sentiment.npz "
                            "is missing; an extractor backend is needed (--extractor vllm|hf|openai|lexicon)")


# ---------------------------------------------------------------- scoring

def coverage_warnings(task: TaskData, s: AnswerSet) -> tuple[list[str], list[str]]:
    """Per-sample gaps between the answer file and the test split: counted, never silent."""
    gt_names = task.gt.keys()
    warnings, flags = [], []
    rejected = [n for n in gt_names if n in s.rejected]
    missing = [n for n in gt_names if n not in s.answers and n not in s.rejected]
    extra = [n for n in [*s.answers, *s.rejected] if n not in gt_names]
    empty = [n for n in gt_names if n in s.answers and not s.answers[n].strip()]
    if rejected:
        warnings.append(f"{len(rejected)} answer(s) in {s.source} are not text (e.g. {rejected[0]}: "
                        f"{s.rejected[rejected[0]]}); counted as failed samples, scored as empty predictions")
        flags.append(f"non-text-answers:{len(rejected)}")
    if missing:
        kept = [n for n in missing if s.ov_labels and n in s.ov_labels]
        how = (f"{len(kept)} of them scored from the extraction file, which has them; the rest as empty predictions"
               if kept else "scored as empty predictions")
        warnings.append(f"{len(missing)} test sample(s) have no answer in {s.source} (e.g. {missing[0]}); {how}")
        flags.append(f"missing-answers:{len(missing)}")
    if extra:
        warnings.append(f"{len(extra)} answer(s) in {s.source} are not in the test split (e.g. {extra[0]}); ignored")
    if empty:
        warnings.append(f"{len(empty)} empty answer(s) in {s.source} (e.g. {empty[0]})")
        flags.append(f"empty-answers:{len(empty)}")
    if s.ov_labels is not None:
        gap = [n for n in gt_names if n not in s.ov_labels and n not in s.rejected]
        if gap and len(gap) != len(missing):
            warnings.append(f"{len(gap)} test sample(s) lack extracted labels ({s.ov_source}; e.g. {gap[0]})")
            flags.append(f"missing-extraction:{len(gap)}")
    if s.sentiments is not None and task.spec.family == SENTIMENT:
        gap = [n for n in gt_names if n not in s.sentiments and n not in s.rejected]
        if gap and len(gap) != len(missing):
            warnings.append(f"{len(gap)} test sample(s) lack a sentiment ({s.sentiment_source}; e.g. {gap[0]})")
            flags.append(f"missing-sentiment:{len(gap)}")
    return warnings, flags


def score_answer_set(task: TaskData, s: AnswerSet, lexicon: Lexicon, level: str = "level1",
                     rows: bool = True) -> TaskScore:
    ov = s.ov_labels or {}
    sentiments = s.sentiments or {}
    if s.rejected:  # a non-text answer is a failed sample: empty prediction, whatever a side file says
        ov = {n: v for n, v in ov.items() if n not in s.rejected}
        sentiments = {n: v for n, v in sentiments.items() if n not in s.rejected}
    # answered: a text answer that is not blank (a paired comparison uses the samples both files answered)
    answers = s.answers
    answered = [isinstance(a, str) and a != "" and not a.isspace() for a in map(answers.get, task.gt)]
    family = task.spec.family
    if family == "basic":
        score = hit_rate(task.gt, ov, lexicon, level, rows=rows, answered=answered)
    elif family == SENTIMENT:
        score = sentiment_scores(task.gt, sentiments, ov, rows=rows, answered=answered)
    elif family == "ov":
        score = ov_scores(task.gt, ov, lexicon, level, rows=rows, answered=answered)
    else:  # pragma: no cover - TaskSpec families are fixed
        raise UserError(f"[{task.spec.id}] unknown task family '{family}'")
    for row in score.samples:
        row["answer"] = s.answers.get(row["name"], "")
        if family != SENTIMENT:
            row["ov_raw"] = ov.get(row["name"], "")
    return score


def selected_samples(task: TaskData, sets: list[AnswerSet], summary: TaskSummary, config: RunConfig,
                     lexicon: Lexicon, grouped: dict[str, Any], task_dir: Path) -> list[tuple[str, Path, Any]]:
    """``--log-samples best``: the per-sample CSV of the answer file the leaderboard row uses (scored again
    with rows: the other files were scored without building them), and the removal of the task's other
    per-sample CSVs (left by an earlier ``--log-samples all``) so none is stale."""
    chosen = summary.select(config.select)
    keep = None
    writes: list[tuple[str, Path, Any]] = []
    if chosen is not None:
        s = next(x for x in sets if x.label == chosen.label)
        score = score_answer_set(task, s, lexicon, config.level, rows=True)
        if s.label in grouped:  # the grouping columns, without asking the LLM again
            from unibench.metrics.grouping import merge_into

            merge_into(score, grouped[s.label])
        keep = task_dir / f"{safe_name(s.label)}.samples.csv"
        writes.append(("csv", keep, score.samples))
    writes.append(("prune-samples", task_dir, keep))
    return writes


def summarise_task(task: TaskData, model: str,
                   results: list[tuple[AnswerSet, TaskScore, list[str], dict[str, Any] | None]],
                   lexicon: Lexicon, level: str, task_flags: list[str]) -> TaskSummary:
    metric = task.spec.primary_metric
    files = [FileResult(label=s.label, source=s.source, order=s.order, primary=score.metrics[metric],
                        metrics=score.metrics, flags=flags,
                        extraction={"ov": s.ov_source, "sentiment": s.sentiment_source},
                        interval=[interval["lo"], interval["hi"]] if interval else [])
             for s, score, flags, interval in results]
    summary = TaskSummary(task=task.spec.id, model=model, primary_metric=metric, level=level, n_test=len(task.gt),
                          files=files, best="", last="", lexicon_sha256=lexicon.sha256,
                          task_fingerprint=task.spec.fingerprint, flags=task_flags)
    summary.best = summary.select("best").label  # type: ignore[union-attr]  (the leaderboard's selector)
    summary.last = summary.select("last").label  # type: ignore[union-attr]
    return summary


# ---------------------------------------------------------------- the run

def limit_task(task: TaskData, limit: int | None) -> str | None:
    """Keep the first ``limit`` samples of the split (a quick partial run); return its flag."""
    if not limit or limit >= len(task.gt):
        return None
    total = len(task.gt)
    task.gt = dict(list(task.gt.items())[:limit])
    return f"partial:{limit}/{total}"


def check_model_folder(model_dir: Path, model: str, tasks: list[TaskSpec]) -> None:
    """The model's results folder is a folder, its task entries are folders, and it is this model's: two
    names that map to one folder (``team/x`` and ``team_x``) would otherwise mix their results."""
    if not model_dir.exists():
        return
    if not model_dir.is_dir():
        raise UserError(f"{model_dir} is a file, not a results folder; move it away or pass another --output")
    for spec in tasks:
        if (model_dir / spec.id).exists() and not (model_dir / spec.id).is_dir():
            raise UserError(f"{model_dir / spec.id} is a file, not a results folder; move it away")
    owners: set[Any] = set()
    for path in [model_dir / "run.json", *(model_dir / t / "summary.json" for t in (*TASKS, *EXTRA_TASKS))]:
        if path.is_file():
            try:
                if path.name == "summary.json":
                    owners.add(read_summary(path).model)
                else:
                    data = read_json_file(path, "run metadata")
                    owners.add(data.get("model") if isinstance(data, dict) else None)
            except UserError:
                continue  # unreadable: named when the leaderboard is rebuilt
    others = sorted(o for o in owners - {model} if isinstance(o, str) and o)
    if others:
        raise UserError(f"{model_dir} holds the results of model '{others[0]}', whose name maps to the same "
                        f"folder as '{model}'; pass another name (--model-args name=...) or --output")


def check_extraction_needs(spec: TaskSpec, sets: list[AnswerSet], extractor: Any, config: RunConfig) -> None:
    """Existing extraction files first (unless ``--force-extract``), else the extractor must make them."""
    if config.force_extract:
        if extractor is None:
            raise UserError("--force-extract needs an --extractor")
        for s in sets:
            s.drop_extractions()
    check_extractions(spec, sets, extractor)


def prepare_task(adapter: Adapter, config: RunConfig, extractor: Any, infer: Callable[..., AnswerSet] | None,
                 spec: TaskSpec) -> tuple[TaskData, list[AnswerSet] | None]:
    """One task's checks before work (see :func:`prepare_tasks`)."""
    task = load_task(spec, config.data_root, check_count=not config.allow_count_mismatch,
                     skip_bad_gt=config.skip_bad_gt)
    partial = limit_task(task, config.limit)
    if partial:
        task.flags.append(partial)
    sets = adapter.answer_sets(task)
    for s in sets or []:
        s.flags.extend([partial] if partial else [])
    if sets is None:
        if infer is None:
            raise UserError(f"model '{adapter.name}' generates answers, which needs the inference runner")
        if extractor is None:
            raise UserError(f"[{spec.id}] model '{adapter.model_id()}' answers in free text; turning it into "
                            "labels needs an extractor: pass --extractor vllm|hf|openai|lexicon "
                            "(checked before any sample is answered)")
        from unibench.inference import check_inference

        check_inference(adapter, task, config)
    else:
        if not sets:
            raise UserError(f"[{spec.id}] model '{adapter.model_id()}' produced no answers")
        if config.select.startswith("file:"):
            check_selection(spec, sets, config.select[len("file:"):])
        check_extraction_needs(spec, sets, extractor, config)
    return task, sets


def prepare_tasks(adapter: Adapter, config: RunConfig, extractor: Any, infer: Callable[..., AnswerSet] | None
                  ) -> list[tuple[TaskData, list[AnswerSet] | None]]:
    """Every check that can be made before work: data of every task, existing answers and their extraction
    files, and for a generating model its media folders, subtitles, answer logs and the extractor it will need.
    A ``None`` answer list means: to be generated."""
    check_output_folder(config.output)
    prepared = [prepare_task(adapter, config, extractor, infer, spec) for spec in config.tasks]
    if extractor is not None and config.shard is None and any(sets is None or any(s.ov_labels is None or s.sentiments is None for s in sets)
                                     for _, sets in prepared):
        extractor.preflight()  # e.g. the extraction server is there, before hours of inference
    return prepared


def generate(adapter: Adapter, task: TaskData, config: RunConfig, extractor: Any,
             infer: Callable[..., AnswerSet]) -> list[AnswerSet]:
    """Answer a task's samples (one answer file per run of the adapter, e.g. per checkpoint)."""
    runs = adapter.answer_runs()  # e.g. one answer file per released checkpoint
    sets = [infer(adapter, task, config, run=r) for r in runs] if runs else [infer(adapter, task, config)]
    partial = [f for f in task.flags if f.startswith("partial:")]
    for i, s in enumerate(sets):
        s.order = i
        s.flags.extend(partial)
    if not sets:
        raise UserError(f"[{task.spec.id}] model '{adapter.model_id()}' produced no answers")
    if config.select.startswith("file:"):
        check_selection(task.spec, sets, config.select[len("file:"):])
    check_extraction_needs(task.spec, sets, extractor, config)
    return sets


@dataclass
class TaskResult:
    """One task scored, not yet written: the files in the order they are written, and what to print."""

    outcome: TaskOutcome
    writes: list[tuple[str, Path, Any]]   # ("json" | "csv", path, payload) or ("prune-samples", folder, kept)
    logs: list[str]


def score_task(task: TaskData, sets: list[AnswerSet], model: str, model_dir: Path, config: RunConfig,
               lexicon: Lexicon, extractor: Any, grouping: Any) -> TaskResult:
    """Extract where needed and score every answer file of a task; return what to write (nothing is written
    here but extraction files, so tasks can be scored in parallel processes and written in order)."""
    spec = task.spec
    task_dir = model_dir / spec.id
    results = []
    writes: list[tuple[str, Path, Any]] = []
    task_warnings = list(task.warnings)
    task_flags = list(task.flags)
    grouped: dict[str, Any] = {}  # answer label -> its grouping score (OV tasks with --ov-metric grouping)
    for s in sets:
        if extractor is not None:
            from unibench.extract import fill_extractions  # lazy: only runs that extract need it

            fill_extractions(s, spec, extractor, output_dir=task_dir, names=task.names)
        warnings, flags = coverage_warnings(task, s)
        kept = [src for src in dict.fromkeys((s.ov_source, s.sentiment_source)) if src.startswith("file:")]
        if extractor is not None and kept:  # existing files win over the configured extractor: say so
            warnings.append(f"{s.label}: used existing extractions ({'; '.join(kept)}) rather than "
                            f"'{extractor.name}' (--force-extract to extract again)")
        flags = s.flags + [f for f in s.extraction_flags if f not in s.flags] + flags
        if s.extraction_failures:  # failed prompt A: empty prediction; failed prompt B: unparsed (0)
            warnings.append(f"{len(s.extraction_failures)} extraction(s) failed for {s.source} "
                            f"(e.g. {s.extraction_failures[0]}); scored as empty / unparsed")
            flags.append(f"extraction-failures:{len(s.extraction_failures)}")
        score = score_answer_set(task, s, lexicon, config.level, rows=config.log_samples == "all")
        if grouping is not None and spec.family == "ov":
            grouped[s.label] = grouping.add_to(task.gt, s.ov_labels or {}, score)
        warnings = s.warnings + warnings + [f"{s.label}: {w}" for w in score.warnings]
        if extractor_made(s, extractor) and not extractor.paper_protocol:
            flags.append(f"extractor:{extractor.name}")
        base = task_dir / safe_name(s.label)
        if score.per_sample is not None:
            writes.append(("npz", base.with_name(base.name + ".scores.npz"), score.per_sample.to_arrays()))
        closed = None
        if config.closed_set != "none" and spec.family == "basic":
            from unibench.closedset import closed_set_view

            closed = closed_set_view(task, s, config.closed_set, extractor, lexicon, config.level)
            writes.append(("npz", base.with_name(base.name + ".closedset.npz"), closed.to_arrays()))
        report = FileReport(
            task=spec.id, model=model, answer_file=s.source, label=s.label,
            primary_metric=spec.primary_metric, primary=score.metrics[spec.primary_metric],
            metrics=score.metrics, per_wheel=score.per_wheel, counts=score.counts,
            level=config.level, warnings=warnings, flags=flags,
            extraction={"ov": s.ov_source, "sentiment": s.sentiment_source,
                        "extractor": extractor.identity() if extractor is not None else None,
                        "failures": [str(f) for f in s.extraction_failures], "saved": s.extraction_source},
            lexicon={"path": str(lexicon.folder), "sha256": lexicon.sha256},
            task_fingerprint=spec.fingerprint,
            grouping=grouping.identity() if grouping is not None and spec.family == "ov" else None,
            closed_set=closed.summary() if closed is not None else None)
        writes.append(("json", base.with_name(base.name + ".json"), report))  # to JSON once intervals are in
        if config.log_samples == "all":
            writes.append(("csv", base.with_name(base.name + ".samples.csv"), score.samples))
        results.append((s, score, flags, report))
        task_warnings.extend(warnings)
    add_intervals([r for _, _, _, r in results], [sc.per_sample for _, sc, _, _ in results], config)
    writes = [(kind, path, payload.to_json() if isinstance(payload, FileReport) else payload)
              for kind, path, payload in writes]
    summary = summarise_task(task, model, [(s, sc, fl, r.intervals.get(spec.primary_metric))
                                           for s, sc, fl, r in results], lexicon, config.level, task_flags)
    writes.append(("json", task_dir / "summary.json", summary.to_json()))
    if config.log_samples == "best":
        writes.extend(selected_samples(task, sets, summary, config, lexicon, grouped, task_dir))
    best = summary.select("best")
    logs = [f"[{spec.id}] {len(sets)} answer file(s); best {spec.primary_metric} "
            f"{best.primary * 100:.2f} ({best.label})"]  # type: ignore[union-attr]
    if not spec.in_benchmark or (grouping is not None and spec.family == "ov"):  # not in the leaderboard
        for f in summary.files:
            extra = (f"; grouping accuracy {f.metrics['grouping_accuracy'] * 100:.2f}, recall "
                     f"{f.metrics['grouping_recall'] * 100:.2f}, average "
                     f"{f.metrics['grouping_average'] * 100:.2f}") if "grouping_average" in f.metrics else ""
            logs.append(f"  {f.label}: {spec.primary_metric} {f.primary * 100:.2f}{extra}")
    logs.extend(f"  warning: {w}" for w in dict.fromkeys(task_warnings))
    return TaskResult(TaskOutcome(spec.id, summary, task_warnings), writes, logs)


def add_intervals(reports: list[FileReport], per_sample: list[Any], config: RunConfig) -> None:
    """Bootstrap intervals of every answer file of a task, computed together (the same resamples for all
    files: their intervals are paired), into each file's report."""
    if config.bootstrap <= 0:
        return
    todo = [(r, ps) for r, ps in zip(reports, per_sample) if ps is not None and ps.n]
    if not todo:
        return
    from unibench.metrics.bootstrap import task_intervals

    found = task_intervals([ps for _, ps in todo], config.bootstrap, config.bootstrap_seed)
    for (report, _), intervals in zip(todo, found):
        report.intervals = {m: iv.to_json() for m, iv in intervals.items()}


def write_task_result(result: TaskResult) -> TaskOutcome:
    """Write a scored task's files in order, then print what it says."""
    for kind, path, payload in result.writes:
        if kind == "json":
            write_json(path, payload)
        elif kind == "npz":  # per-sample score arrays: plain arrays, read back without pickle
            import numpy as np

            with atomic_open(path, "wb") as fh:
                np.savez(fh, **payload)
        elif kind == "csv":
            write_samples_csv(path, payload)
        else:  # per-sample CSVs of other answer files, left by an earlier --log-samples all: never stale
            for old in path.glob("*.samples.csv"):
                if old != payload:
                    old.unlink(missing_ok=True)
    for line in result.logs:
        log(line)
    return result.outcome


def extractor_made(s: AnswerSet, extractor: Any) -> bool:
    """Whether the configured extractor produced labels this answer set is scored with (flags must say
    what was used, not what was configured)."""
    if extractor is None:
        return False
    return any(src and not src.startswith("file:") for src in (s.ov_source, s.sentiment_source))


def run(adapter: Adapter, config: RunConfig, lexicon: Lexicon, extractor: Any = None,
        infer: Callable[..., AnswerSet] | None = None) -> list[dict[str, str]]:
    """Run every task; write results; return the leaderboard rows.

    For a replay the cyclic garbage collector is paused while answers are loaded and scored: they are many
    small acyclic objects (strings, dicts, sets), which it would scan again and again for nothing. (Never
    during a model's inference: long-lived model objects may hold cycles.)
    """
    import gc
    from contextlib import nullcontext

    paused = gc.isenabled() and not adapter.generates
    if paused:
        gc.disable()
    try:
        with (one_blas_thread() if not adapter.generates else nullcontext()):
            return _run(adapter, config, lexicon, extractor, infer)
    finally:
        if paused:
            gc.enable()


def one_blas_thread() -> Any:
    """A replay's only linear algebra is the bootstrap's small matrix products; BLAS threads there cost more
    than they give, and in parallel scoring processes they compete for the same cores (measured: 2.9 s of
    CPU instead of 1.5 s on a 77k-answer replay). threadpoolctl comes with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn (a dependency) brings it
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _run(adapter: Adapter, config: RunConfig, lexicon: Lexicon, extractor: Any,
         infer: Callable[..., AnswerSet] | None) -> list[dict[str, str]]:
    model = printable(adapter.model_id())
    model_dir = config.output / safe_name(model)
    started = time.time()

    # 1. Check data, answers, extractions, media and output for every task before any work.
    check_model_folder(model_dir, model, config.tasks)
    jobs = parallel_jobs(adapter, config, extractor)
    if jobs > 1:  # replay: tasks are loaded, checked and scored in parallel processes, written here in order
        outcomes = run_parallel(adapter, config, lexicon, model, model_dir, jobs)
        return finish_run(adapter, config, lexicon, extractor, model, model_dir, started, outcomes)
    checked = prepare_tasks(adapter, config, extractor, infer)
    from unibench.metrics.grouping import prepare_grouping

    grouping = prepare_grouping(config.ov_metric, config.grouping_cache, extractor,
                                [t.spec.family for t, _ in checked])
    # 2. Generate the answers that do not exist yet (a model's inference), task by task.
    prepared: list[tuple[TaskData, list[AnswerSet]]] = []
    for task, sets in checked:
        if sets is None:
            sets = generate(adapter, task, config, extractor, infer)  # type: ignore[arg-type]
        prepared.append((task, sets))

    if config.executor is not None:  # e.g. Ray actors holding the model: free their GPUs for the extraction pool
        config.executor.close()
    if config.shard is not None:  # a shard's answers are not the test split: nothing to score until merged
        from unibench.inference import ShardDone

        index, n = config.shard
        raise ShardDone(f"shard {index}/{n} done: its answers are in the *.shard-{index}-of-{n}.jsonl logs under "
                        f"{config.output}; when all {n} shards are done, run `run_bench merge` with the same "
                        "arguments (without --shard), then the run itself without --shard to extract and score")

    # 3. Extract where needed, score, write (task by task, in order).
    outcomes: list[TaskOutcome] = []
    for task, sets in prepared:
        outcomes.append(write_task_result(score_task(task, sets, model, model_dir, config, lexicon, extractor,
                                                     grouping)))

    return finish_run(adapter, config, lexicon, extractor, model, model_dir, started, outcomes)


# ---------------------------------------------------------------- parallel replay

_PARALLEL: tuple[Any, ...] | None = None  # what forked workers read (never pickled: they inherit it)


def parallel_jobs(adapter: Adapter, config: RunConfig, extractor: Any) -> int:
    """How many processes score tasks at once: 1 (serial) unless this is a replay with nothing to extract or
    group (those share caches and models), of several tasks, on a system with fork, and more than one core
    is free (or --jobs asks for more)."""
    n = len(config.tasks)
    if (config.jobs == 1 or n < 2 or adapter.generates or extractor is not None or config.ov_metric != "ew"
            or not sys.platform.startswith("linux")):
        return 1
    if config.jobs > 1:
        return min(config.jobs, n)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    free = cores - os.getloadavg()[0]
    return min(n, max(2, int(free))) if free > 1.0 else 1


def _task_in_worker(index: int) -> tuple[str, Any, int]:
    adapter, config, lexicon, model, model_dir = _PARALLEL  # type: ignore[misc]
    try:
        task, sets = prepare_task(adapter, config, None, None, config.tasks[index])
    except UserError as exc:
        return "prepare", str(exc), exc.exit_code
    try:
        return "ok", score_task(task, sets or [], model, model_dir, config, lexicon, None, None), 0
    except UserError as exc:
        return "score", str(exc), exc.exit_code


def run_parallel(adapter: Adapter, config: RunConfig, lexicon: Lexicon, model: str, model_dir: Path,
                 jobs: int) -> list[TaskOutcome]:
    """Load, check and score the tasks in ``jobs`` forked processes; write here, in task order, only when all
    succeeded. The same error comes first as in a serial run: any task's check before any task's scoring."""
    import multiprocessing

    global _PARALLEL
    check_output_folder(config.output)
    _PARALLEL = (adapter, config, lexicon, model, model_dir)
    try:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            answers = pool.map(_task_in_worker, range(len(config.tasks)), chunksize=1)
    finally:
        _PARALLEL = None
    for stage in ("prepare", "score"):
        for kind, payload, code in answers:
            if kind == stage:
                error = UserError(payload)
                error.exit_code = code
                raise error
    return [write_task_result(result) for _, result, _ in answers]


def finish_run(adapter: Adapter, config: RunConfig, lexicon: Lexicon, extractor: Any, model: str, model_dir: Path,
               started: float, outcomes: list[TaskOutcome]) -> list[dict[str, str]]:
    """4. Metadata and the leaderboard (shared files: under the output folder's lock)."""
    import numpy

    update_run_metadata(model_dir / "run.json", {
        "command": config.command, "unibench": __version__, "python": platform.python_version(),
        "numpy": numpy.__version__, "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        "model": model, "adapter": adapter.describe(),
        "tasks": {o.task: {"fingerprint": o.summary.task_fingerprint, "best": o.summary.best,
                           "n_files": o.summary.n_files} for o in outcomes},
        "data_root": str(config.data_root),
        "lexicon": {"path": str(lexicon.folder), "sha256": lexicon.sha256},
        "level": config.level, "select": config.select,
        "extractor": extractor.identity() if extractor is not None else "authors' extraction files",
        **config.extra_metadata,
    })
    if not any(spec.in_benchmark for spec in config.tasks):
        return []  # extra tasks only (e.g. ovmerd): the nine-task leaderboard is left as it was
    notes: list[str] = []
    rows = update_leaderboard(config.output, model, config.select, notes)
    for note in notes:
        log(f"warning: {note}")
    return rows
