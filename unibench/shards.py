"""`run_bench merge`: combine the answer logs of ``--shard I/N`` runs into the normal answer files.

A Slurm job array (or any batch scheduler) runs the same command N times with ``--shard I/N``; each job
answers the samples of its shard (:func:`unibench.inference.shard_of`, a stable split by name) into
``answers/<task>.shard-I-of-N.jsonl``. ``run_bench merge <the same arguments, without --shard>`` checks that
the set is complete and consistent (one N, every shard present, every record of this setup and in its own
shard, every test sample answered or failed), then writes ``answers/<task>.jsonl`` and the original-layout
npz. The same command without ``--shard`` then finds every sample answered and only extracts and scores.
Merging never calls the model; merging again gives the same files.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unibench.adapters.base import Adapter, AnswerRun
from unibench.errors import UserError

SHARD_FILE = re.compile(r"^(?P<stem>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)\.jsonl$")


@dataclass
class MergePlan:
    """One answer file's merge, checked, not yet written."""

    what: str                                  # "mer2023" or "mer2023 (checkpoint label)"
    n: int
    log_path: Path                             # the normal answer log
    npz_path: Path
    records: list[dict[str, Any]]              # the merged log, test-split order first
    answers: dict[str, str]                    # what the npz holds
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # (name, error, shard)


def find_shard_logs(log_path: Path) -> dict[int, dict[int, Path]]:
    """N -> {I: path} of the shard logs beside ``log_path`` (``<stem>.shard-I-of-N.jsonl``)."""
    found: dict[int, dict[int, Path]] = {}
    if not log_path.parent.is_dir():
        return found
    for path in sorted(log_path.parent.iterdir()):
        m = SHARD_FILE.match(path.name)
        if m and m["stem"] == log_path.stem and path.is_file():
            found.setdefault(int(m["n"]), {})[int(m["i"])] = path
    return found


def _not_being_written(path: Path) -> None:
    """A run still appending to a log holds its lock: merging a half-written shard would refuse anyway, but
    this says why."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{path}: a run is still writing these answers; merge when it has finished") from None
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _shard_set(log_path: Path, task_id: str) -> tuple[int, dict[int, Path]]:
    """The one complete set of shard logs of an answer file: (N, {I: path}); refused when mixed or missing."""
    from unibench.inference import shard_log_path

    found = find_shard_logs(log_path)
    if not found:
        raise UserError(f"[{task_id}] no shard logs {log_path.stem}.shard-I-of-N.jsonl in {log_path.parent}: "
                        "run the command with --shard I/N for every I first")
    if len(found) > 1:
        a, b = sorted(found)[:2]
        raise UserError(f"[{task_id}] shard logs of different N are mixed: {next(iter(found[a].values()))} and "
                        f"{next(iter(found[b].values()))}; keep one set (delete the other) and merge again")
    n, shards = next(iter(found.items()))
    stray = sorted(i for i in shards if i >= n)
    if stray:
        raise UserError(f"[{task_id}] {shards[stray[0]]}: shard {stray[0]} does not exist in a split of {n}; "
                        "delete it and merge again")
    missing = [i for i in range(n) if i not in shards]
    if missing:
        first = shard_log_path(log_path, missing[0], n)
        more = f" (missing shards: {', '.join(map(str, missing))})" if len(missing) > 1 else ""
        raise UserError(f"[{task_id}] shard {missing[0]}/{n} is missing: no {first}{more}; run the command with "
                        f"--shard {missing[0]}/{n}, then merge again")
    return n, shards


def plan_merge(adapter: Adapter, task: Any, config: Any, run: AnswerRun | None) -> MergePlan:
    """Check one answer file's shard logs against this setup and the test split; nothing is written."""
    from unibench.inference import answer_identity, answer_paths, check_answer_log, resolve_question, shard_of

    spec = task.spec
    question = resolve_question(config.question, spec.question)
    identity = answer_identity(adapter, task, question, run)
    log_path, npz_path = answer_paths(config, adapter, task, run)
    what = spec.id if run is None else f"{spec.id} ({run.label})"
    n, shards = _shard_set(log_path, what)
    for path in [log_path, *shards.values()]:
        _not_being_written(path)
    # an existing normal log of another setup is refused as a run would; of this setup, its answers are kept
    # where a shard has only a failure (merging twice, or after a partial normal run, loses nothing)
    normal, _ = check_answer_log(log_path, identity, what)
    latest: dict[str, dict[str, Any]] = {rec["name"]: rec for rec in normal}
    merged: dict[str, dict[str, Any]] = {}
    shard_of_name: dict[str, int] = {}
    for i in range(n):
        records, _ = check_answer_log(shards[i], identity, what)  # another --model-args / --question: refused
        for rec in records:
            name = rec["name"]
            if shard_of(name, n) != i:
                raise UserError(f"[{what}] {shards[i]}: sample '{name}' belongs to shard {shard_of(name, n)}/{n}, "
                                f"not {i}/{n}; this file was not written by --shard {i}/{n}; delete it and rerun "
                                f"--shard {i}/{n}")
            merged[name] = rec  # the last record of a sample wins, as when a run resumes
            shard_of_name[name] = i
    names = task.names
    gaps: dict[int, list[str]] = {}
    for name in names:
        if name not in merged:
            gaps.setdefault(shard_of(name, n), []).append(name)
    if gaps:
        parts = [f"shard {i}/{n} lacks {len(gap)} sample(s) (e.g. '{gap[0]}' in {shards[i]})"
                 for i, gap in sorted(gaps.items())]
        rerun = ", ".join(f"--shard {i}/{n}" for i in sorted(gaps))
        raise UserError(f"[{what}] incomplete: {'; '.join(parts)}; rerun {rerun} (it resumes), then merge again")
    chosen: dict[str, dict[str, Any]] = {}
    for name in names:
        rec = merged[name]
        old = latest.get(name)
        if rec.get("error") is not None and old is not None and old.get("error") is None:
            rec = old  # a success already in the normal log beats a shard's failure
        chosen[name] = rec
    extras = {k: v for k, v in {**latest, **merged}.items() if k not in chosen}  # outside the split (--limit)
    records = [*chosen.values(), *extras.values()]
    answers = {name: rec.get("answer") or "" for name, rec in chosen.items() if rec.get("error") is None}
    answers = {name: a for name, a in answers.items() if isinstance(a, str)}  # a non-text answer: failed
    failed = [(name, str(rec["error"]), shard_of_name.get(name, shard_of(name, n)))
              for name, rec in chosen.items() if rec.get("error") is not None]
    return MergePlan(what=what, n=n, log_path=log_path, npz_path=npz_path, records=records, answers=answers,
                     failed=failed)


def write_merge(plan: MergePlan) -> None:
    """The normal answer log (atomically replaced) and the original-layout npz."""
    from unibench.answerfiles import write_name2reason
    from unibench.fileio import atomic_open
    from unibench.inference import _json_line

    with atomic_open(plan.log_path, "wb") as fh:
        for rec in plan.records:
            fh.write(_json_line(rec))
        fh.flush()
        os.fsync(fh.fileno())
    if plan.answers:
        write_name2reason(plan.npz_path, plan.answers)


def describe_merge(plan: MergePlan) -> str:
    line = (f"[{plan.what}] merged {plan.n} shards into {plan.log_path}: {len(plan.answers)} answers, "
            f"{len(plan.failed)} failed")
    if plan.failed:
        name, error, _ = plan.failed[0]
        shards = sorted({i for _, _, i in plan.failed})
        line += (f" (e.g. {name}: {error}); the run without --shard retries them here, or rerun "
                 f"{', '.join(f'--shard {i}/{plan.n}' for i in shards)} and merge again")
    if not plan.answers:
        line += "; no answer to write: no npz"
    return line


def main(argv: list[str]) -> int:
    """``run_bench merge <the run's arguments, without --shard>``."""
    from unibench.adapters.base import make_adapter
    from unibench.cli import _main_parser
    from unibench.inference import apply_run_options, resolve_question
    from unibench.results import check_output_folder
    from unibench.runner import RunConfig, limit_task
    from unibench.tasks import resolve_tasks
    from unibench.tasks.base import load_task, resolve_data_root

    parser = _main_parser()
    parser.prog = "run_bench merge"
    args = parser.parse_args(argv)
    if args.shard:
        raise UserError("run_bench merge takes the run's arguments without --shard: it combines every shard")
    if not args.model:
        raise UserError("run_bench merge needs the run's arguments (--model, --task, --data-root, ... "
                        "without --shard)")
    check_output_folder(Path(args.output))
    tasks = resolve_tasks(args.task)
    adapter = make_adapter(args.model, args.model_args)
    if not adapter.generates:
        raise UserError(f"run_bench merge combines a generating model's shards; model '{adapter.name}' "
                        "does not generate answers")
    resolve_question(args.question, "")
    apply_run_options(adapter, args.model_args, device=args.device, dtype=args.dtype)  # --dtype enters the key
    data_root = resolve_data_root(args.data_root)
    config = RunConfig(tasks=tasks, data_root=data_root, output=Path(args.output), question=args.question,
                       limit=args.limit)
    runs: list[AnswerRun | None] = list(adapter.answer_runs()) or [None]
    plans = []
    for spec in tasks:  # every check of every task before anything is written
        task = load_task(spec, data_root, check_count=not args.allow_count_mismatch, skip_bad_gt=args.skip_bad_gt)
        limit_task(task, args.limit)
        plans.extend(plan_merge(adapter, task, config, run) for run in runs)
    for plan in plans:
        write_merge(plan)
        print(describe_merge(plan))
    print(f"next: run_bench {shlex.join(argv)}\n      (the same command without --shard: every sample is answered, "
          "so it only extracts and scores)")
    return 0
