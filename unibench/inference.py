"""The inference runner: ask a generating adapter every sample of a task, resumably.

How an adapter is driven (``infer_task(adapter, task, config) -> AnswerSet``):

1. The question is resolved once per task (``--question``, see
   :func:`resolve_question`): ``affectgpt`` (default, the task's question,
   spec §2), ``ovmer`` (OV-MER baseline prompt with the subtitle in it),
   ``ovmer-nosub``, ``description``, or a custom text where ``{subtitle}`` is
   replaced by the sample's subtitle.
2. One :class:`Sample` per test sample carries only what the adapter declares
   in ``inputs``: ``video`` / ``audio`` / ``face`` paths (``task.media_path``)
   and ``subtitle`` text. ``Sample.subtitle`` is filled only when the
   question does not already carry the subtitle (and is not ``ovmer-nosub``),
   so an adapter can always build ``subtitle part (if any) + question``
   without showing the subtitle twice. A declared media file that is missing
   fails that sample before the adapter is called.
3. ``adapter.answer(batch)`` gets ``--batch-size`` samples (default: the
   adapter's ``default_batch_size`` attribute, else 1) and returns one item
   per sample, in order: the answer string, or an exception instance when
   only that sample failed (e.g. an API request that ran out of retries).
   Adapters load media themselves with :mod:`unibench.media`
   (``load_frames``, ``load_faces``, ``load_audio``), which raise
   ``MediaError``. When a batch raises, its samples are retried one by one so
   a single bad file fails only its own sample. ``MediaError`` and any other
   exception are per-sample failures (recorded, counted, retried on the next
   run); ``UserError`` (bad configuration, missing package) stops the run. If
   the first three samples all fail with a model error and none has
   succeeded, the run stops: that is a setup problem. Load models lazily in
   the first ``answer`` call (``status()`` and ``__init__`` stay cheap).
4. Each finished sample is appended to ``<output>/<model>/answers/<task>.jsonl``
   (flushed and fsynced), one record: name, answer, error, the adapter
   identity and arguments, the question hash and a ``key`` hashing everything
   that changes answers. A rerun skips finished samples; a record with a
   different ``key`` stops the run with a clear error rather than reusing
   stale answers. Options that do not change answers (``device``,
   ``concurrency``, ``timeout``... see :data:`OPERATIONAL_OPTIONS`, extendable
   per adapter with a ``resume_ignore`` class attribute) stay out of the key.
5. At the end the answers are also written in the original layout
   ``<output>/<model>/answers/results-<task>/<model>/<model>.npz`` (key
   ``name2reason``), which the published scripts and ``replay`` read; the
   returned ``AnswerSet.source`` points at it, so extraction files land beside.

6. ``--shard I/N`` (a Slurm job array, no Ray): only the samples of shard I
   (:func:`shard_of`, a stable split by name) are answered, into their own
   log ``<task>.shard-I-of-N.jsonl`` beside the normal one (same records,
   same key, resumed the same way); no npz is written and nothing is scored:
   the run ends with :class:`ShardDone` (exit 0). ``run_bench merge``
   (:mod:`unibench.shards`) then writes the normal log and the npz, and a
   rerun without ``--shard`` finds every sample answered and only scores.

Adapters with ``device`` / ``dtype`` options get ``--device`` / ``--dtype``
unless ``--model-args`` sets them (:func:`apply_run_options`).

Helpers for adapter authors, at the end of this module: :func:`user_text`
(subtitle + question as one user turn), :func:`requirement_status` (the
``status()`` line without importing heavy packages) and
:func:`torch_device_dtype` (``device``/``dtype`` option values -> torch).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from unibench.adapters.base import Adapter, AnswerRun, AnswerSet, Sample
from unibench.errors import UserError
from unibench.errors import log as say  # 'log' names the answer log here
from unibench.prompts import (AFFECTGPT_DESCRIPTION_QUESTION, OVMER_BASELINE_WITH_SUBTITLE,
                                      OVMER_BASELINE_WITHOUT_SUBTITLE, prompt_hash)
from unibench.answerfiles import write_name2reason
from unibench.fileio import safe_name
from unibench.tasks.base import TaskData

if TYPE_CHECKING:  # pragma: no cover
    from unibench.runner import RunConfig

SCHEMA = 1
MEDIA_KINDS = ("video", "audio", "face")
# Adapter options that never change an answer: kept out of the resume key.
OPERATIONAL_OPTIONS = frozenset({
    "name", "device", "device_map", "concurrency", "timeout", "max_retries", "retries",
    "api_key_env", "base_url", "batch_size", "backend_url",
})
SETUP_FAILURE_LIMIT = 3  # consecutive model errors before any success -> stop (a setup problem)


# ---------------------------------------------------------------- the question

@dataclass(frozen=True)
class Question:
    """What every sample of a task is asked; ``{subtitle}`` is filled per sample."""

    mode: str
    template: str
    pass_subtitle: bool  # give Sample.subtitle separately (when the adapter takes subtitles)

    @property
    def embeds_subtitle(self) -> bool:
        return "{subtitle}" in self.template

    @property
    def hash(self) -> str:
        return prompt_hash(f"{self.mode}\n{self.template}")

    def text(self, subtitle: str) -> str:
        # str.replace, not format(): subtitles may hold braces
        return self.template.replace("{subtitle}", subtitle)


QUESTION_MODES = ("affectgpt", "ovmer", "ovmer-nosub", "description")


def resolve_question(value: str | None, task_question: str) -> Question:
    """``--question`` value -> :class:`Question` (a mode name or a custom text)."""
    value = (value or "affectgpt").strip()
    if value == "affectgpt":
        return Question("affectgpt", task_question, pass_subtitle=True)
    if value == "ovmer":
        return Question("ovmer", OVMER_BASELINE_WITH_SUBTITLE, pass_subtitle=False)
    if value == "ovmer-nosub":
        return Question("ovmer-nosub", OVMER_BASELINE_WITHOUT_SUBTITLE, pass_subtitle=False)
    if value == "description":
        return Question("description", AFFECTGPT_DESCRIPTION_QUESTION, pass_subtitle=True)
    if not value or len(value.split()) < 2:
        raise UserError(f"--question: unknown mode '{value}' (known: {', '.join(QUESTION_MODES)}, "
                        "or a question text such as \"Subtitle: {subtitle}. How does the person feel?\")")
    return Question("custom", value, pass_subtitle="{subtitle}" not in value)


# ---------------------------------------------------------------- samples

def build_samples(adapter: Adapter, task: TaskData, question: Question,
                  names: list[str]) -> list[tuple[Sample, str | None]]:
    """One Sample per name with the declared inputs; the second item is why it cannot run (or None)."""
    kinds = [k for k in adapter.inputs if k in MEDIA_KINDS]
    for kind in kinds:
        if not task.media_candidates(kind):
            raise UserError(f"[{task.spec.id}] model '{adapter.name}' needs {kind} input, "
                            f"but task '{task.spec.id}' has no {kind} files in its layout")
    wants_subtitle = question.embeds_subtitle or ("subtitle" in adapter.inputs and question.pass_subtitle)
    subtitles = task.subtitles(adapter.subtitle_columns.get(task.spec.id)) if wants_subtitle else {}
    out = []
    for name in names:
        subtitle = subtitles.get(name, "") or ""
        paths: dict[str, Path | None] = {}
        problem = None
        for kind in kinds:
            paths[kind] = task.media_path(name, kind)
            if paths[kind] is None and problem is None:
                problem = (f"MediaError: no {kind} file for sample '{name}' (looked for "
                           f"{' or '.join(task.media_candidates(kind))} under {task.root})")
        sample = Sample(
            name=name, task=task.spec.id, question=question.text(subtitle),
            subtitle=subtitle if ("subtitle" in adapter.inputs and question.pass_subtitle) else "",
            video=paths.get("video"), audio=paths.get("audio"), face=paths.get("face"))
        out.append((sample, problem))
    return out


def check_inference(adapter: Adapter, task: TaskData, config: "RunConfig") -> None:
    """Before any sample of any task is sent: the inputs this model needs exist for this task (its media
    folders, its subtitle file) and the answer logs hold no answers of another setup."""
    spec = task.spec
    question = resolve_question(config.question, spec.question)
    for kind in (k for k in adapter.inputs if k in MEDIA_KINDS):
        folders = [task.root / folder for k, folder, _ in spec.media if k == kind]
        if not folders:
            raise UserError(f"[{spec.id}] model '{adapter.name}' needs {kind} input, "
                            f"but task '{spec.id}' has no {kind} files in its layout")
        if not any(f.is_dir() for f in folders):
            raise UserError(f"[{spec.id}] model '{adapter.name}' needs {kind} input: no "
                            f"{' or '.join(f.name + '/' for f in folders)} folder under {task.root}")
    if question.embeds_subtitle or ("subtitle" in adapter.inputs and question.pass_subtitle):
        task.subtitles(adapter.subtitle_columns.get(spec.id))  # a missing or malformed subtitle file stops here
    runs = adapter.answer_runs() or [None]
    shard = config.shard
    for run in runs:
        identity = answer_identity(adapter, task, question, run)
        log_path, _ = answer_paths(config, adapter, task, run)
        check_answer_log(log_path, identity, spec.id)
        if shard is not None:
            check_answer_log(shard_log_path(log_path, *shard), identity, spec.id)


def answer_paths(config: "RunConfig", adapter: Adapter, task: TaskData, run: AnswerRun | None) -> tuple[Path, Path]:
    """(the resumable JSONL log, the original-layout npz) of one answer file."""
    out_dir = answers_dir(config, adapter)
    spec, model = task.spec, adapter.model_id()
    if run is None:
        return (out_dir / f"{spec.id}.jsonl",
                out_dir / f"results-{spec.id}" / safe_name(model) / f"{safe_name(model)}.npz")
    return (out_dir / spec.id / f"{safe_name(run.label)}.jsonl",
            out_dir / f"results-{spec.id}" / safe_name(run.folder) / f"{safe_name(run.label)}.npz")


def check_answer_log(log_path: Path, identity: dict[str, Any], task_id: str) -> tuple[list[dict[str, Any]], int]:
    """The log's records, refused when any was written by another setup (never mixed with new answers)."""
    records, valid_length = read_answer_log(log_path)
    for rec in records:
        if rec.get("key") != identity["key"]:
            raise UserError(
                f"[{task_id}] {log_path} holds answers from a different setup ({_explain_mismatch(rec, identity)}); "
                f"to keep both, use another --output or --model-args name=NEW; to redo, delete {log_path}")
    return records, valid_length


# ---------------------------------------------------------------- shards (--shard I/N)

class ShardDone(UserError):
    """A ``--shard I/N`` run answered its samples: nothing is scored (exit 0); its message says what next."""

    exit_code = 0


def shard_of(name: str, n: int) -> int:
    """The shard (0..n-1) of a sample: the first 64 bits of the SHA-256 of its UTF-8 name, modulo n.

    Stable across machines, processes and Python versions (unlike ``hash()``, salted per process), so every
    job of an array agrees on the split without talking to the others; names that are not valid UTF-8
    (surrogate escapes) hash their escaped bytes."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return int(digest[:16], 16) % n


def shard_names(names: list[str], index: int, n: int) -> list[str]:
    """The names of shard ``index`` of ``n``, in split order."""
    return [name for name in names if shard_of(name, n) == index]


def shard_log_path(log_path: Path, index: int, n: int) -> Path:
    """``answers/<task>.jsonl`` -> ``answers/<task>.shard-I-of-N.jsonl`` (a shard's own log, beside it)."""
    return log_path.with_name(f"{log_path.stem}.shard-{index}-of-{n}.jsonl")


def _finish_shard(task: TaskData, config: "RunConfig", run: AnswerRun | None, log_path: Path,
                  answers: dict[str, Any], failed: list[tuple[str, str]], n_samples: int,
                  npz_path: Path) -> AnswerSet:
    """Say what the shard holds (the runner stops with :class:`ShardDone` once every task is answered)."""
    index, n = config.shard
    if failed and not answers:
        raise UserError(f"[{task.spec.id}] all {len(failed)} sample(s) of shard {index}/{n} failed (e.g. "
                        f"{failed[0][0]}: {failed[0][1]}); records in {log_path}")
    what = task.spec.id if run is None else f"{task.spec.id} ({run.label})"
    retry = f" ({len(failed)} failed: rerun this shard to retry them)" if failed else ""
    line = (f"shard {index}/{n} of {what}: {len(answers)} of {n_samples} samples answered in {log_path}{retry}; "
            f"when all {n} shards are done, run `run_bench merge` with the same arguments (without --shard)")
    say(line)
    # never scored: the runner stops after answering (ShardDone); the shard's answers, for a caller that looks
    return AnswerSet(label=npz_path.stem, answers=answers, source=str(log_path), flags=[f"shard:{index}/{n}"])


# ---------------------------------------------------------------- identity

def answer_identity(adapter: Adapter, task: TaskData, question: Question,
                    run: AnswerRun | None = None) -> dict[str, Any]:
    """What produced the answers; ``key`` hashes the parts that change them."""
    described = adapter.describe()
    ignore = OPERATIONAL_OPTIONS | set(adapter.resume_ignore)
    args = {k: _model_ref(v) if k in adapter.model_ref_keys else v
            for k, v in sorted(described.get("args", {}).items()) if k not in ignore}
    if run is not None:  # e.g. the checkpoint of this answer file
        args["run"] = run.identity
    keyed = {"schema": SCHEMA, "adapter": described.get("adapter", adapter.name), "args": args,
             "question": question.hash, "task": task.spec.fingerprint}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    return {"key": key, "adapter": described, "keyed_args": args, "question_mode": question.mode,
            "question_hash": question.hash, "task_fingerprint": task.spec.fingerprint}


def _model_ref(value: str) -> str:
    """A local model folder stands for its content (moved: same key; retrained in place: new key)."""
    if not value or not Path(value).expanduser().is_dir():
        return value
    try:
        from unibench.metrics.llm import model_fingerprint
    except ImportError:  # pragma: no cover - the extraction module is optional here
        return str(Path(value).expanduser().resolve())
    return model_fingerprint(value)


def _explain_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    old_adapter, new_adapter = old.get("adapter") or {}, new["adapter"]
    if old_adapter.get("adapter") != new_adapter.get("adapter"):
        parts.append(f"adapter {old_adapter.get('adapter')} -> {new_adapter.get('adapter')}")
    old_args = old.get("keyed_args") or {}
    for k in sorted(set(old_args) | set(new["keyed_args"])):
        if old_args.get(k) != new["keyed_args"].get(k):
            parts.append(f"{k}: {old_args.get(k, '(unset)')} -> {new['keyed_args'].get(k, '(unset)')}")
    if old.get("question_hash") != new["question_hash"]:
        parts.append(f"question {old.get('question_mode')} ({old.get('question_hash')}) -> "
                     f"{new['question_mode']} ({new['question_hash']})")
    if old.get("task_fingerprint") != new["task_fingerprint"]:
        parts.append("task definition changed")
    return "; ".join(parts) or "written by another version"


# ---------------------------------------------------------------- the answer log

def read_answer_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSONL answer log, and the byte length of its complete lines.

    A last line cut by a kill (no newline, or not valid JSON) is ignored; the
    caller truncates it away before appending.
    """
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    records = []
    for lineno, line in enumerate(data[:good_end].split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):  # bad JSON, bad UTF-8, an integer past Python's digit limit
            raise UserError(f"{path}: line {lineno} is not valid JSON; move the file away to start over") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str):
            raise UserError(f"{path}: line {lineno} is not an answer record (no text 'name')")
        records.append(rec)
    return records, good_end


def _json_line(record: dict[str, Any]) -> bytes:
    try:
        return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate (a name that is not valid UTF-8): escaped, and read back equal
        return json.dumps(record).encode("ascii") + b"\n"


class AnswerLog:
    """Append-only JSONL of finished samples: every record is on disk before the next sample."""

    def __init__(self, path: Path, valid_length: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = open(path, "ab")
        self._lock()
        if self._fh.tell() > valid_length:  # drop a line cut short by a kill
            self._fh.truncate(valid_length)
            self._fh.seek(valid_length)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise UserError(f"{self.path}: another run is writing these answers; wait for it or use "
                            "another --output") from None

    def append(self, records: list[dict[str, Any]]) -> None:
        blob = b"".join(_json_line(r) for r in records)
        self._fh.write(blob)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def answers_dir(config: "RunConfig", adapter: Adapter) -> Path:
    return Path(config.output) / safe_name(adapter.model_id()) / "answers"


# ---------------------------------------------------------------- run-wide options

def apply_run_options(adapter: Adapter, model_args: str | None, **values: Any) -> list[str]:
    """Fill adapter options the user left out of --model-args from run-wide flags (--device, --dtype).

    Returns notes for flags the adapter has no option for.
    """
    from unibench.modelargs import parse_kv

    given = parse_kv(model_args, "--model-args")
    fields = {f.name for f in dataclasses.fields(adapter.options)} if dataclasses.is_dataclass(adapter.options) else set()
    notes = []
    for key, value in values.items():
        if value in (None, ""):
            continue
        if key not in fields:
            notes.append(f"--{key} ignored: model '{adapter.name}' has no '{key}' option")
        elif key not in given:
            setattr(adapter.options, key, value)
    return notes


# ---------------------------------------------------------------- the run

def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]


def _answer_batch(adapter: Adapter, batch: list[Sample]) -> list[tuple[str | None, str | None]]:
    """(answer, error) per sample; a failed batch is retried one sample at a time."""
    try:
        answers = adapter.answer(batch)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any model failure is per sample
        if len(batch) == 1:
            return [(None, _error_text(exc))]
        return [r for s in batch for r in _answer_batch(adapter, [s])]
    if not isinstance(answers, (list, tuple)) or len(answers) != len(batch):
        got = len(answers) if isinstance(answers, (list, tuple)) else type(answers).__name__
        raise UserError(f"model '{adapter.name}' returned {got} answer(s) for {len(batch)} sample(s); "
                        "answer() must return one string per sample")
    out: list[tuple[str | None, str | None]] = []
    for a in answers:
        if isinstance(a, UserError):
            raise a
        if isinstance(a, BaseException):  # the adapter failed this sample only
            out.append((None, _error_text(a)))
        elif isinstance(a, str):
            out.append((str(a), None))
        else:  # never turned into a string and scored: a failed sample
            out.append((None, "adapter returned no answer" if a is None
                        else f"adapter returned {type(a).__name__}, not text"))
    return out


class LocalExecutor:
    """Answers batches here, one after another, with the run's adapter: the default ``--executor local``.

    The executor seam: ``answer_batches`` yields ``(batch, [(answer, error) per sample], seconds per sample)``
    as batches finish (in any order: the answer log is keyed by sample name); the inference loop stays the
    only writer of the answer log. :mod:`unibench.ray_executor` spreads the batches over Ray actors."""

    name = "local"

    def answer_batches(self, adapter: Adapter, run: AnswerRun | None, batches: list[list[Sample]]
                       ) -> Iterator[tuple[list[Sample], list[tuple[str | None, str | None]], float]]:
        for batch in batches:
            started = time.time()
            results = _answer_batch(adapter, batch)
            yield batch, results, round((time.time() - started) / len(batch), 3)

    def close(self) -> None:
        """Nothing to release."""


def infer_task(adapter: Adapter, task: TaskData, config: "RunConfig", run: AnswerRun | None = None) -> AnswerSet:
    """Answer every (not yet answered) sample of ``task``; return the task's AnswerSet.

    With ``run`` (one of ``adapter.answer_runs()``) the answers are that run's
    answer file: log ``answers/<task>/<label>.jsonl``, npz
    ``answers/results-<task>/<folder>/<label>.npz``.
    """
    spec = task.spec
    question = resolve_question(config.question, spec.question)
    identity = answer_identity(adapter, task, question, run)
    model = adapter.model_id()
    if run is not None:
        adapter.use_run(run)
    log_path, npz_path = answer_paths(config, adapter, task, run)
    shard = config.shard
    if shard is not None:  # only this shard's samples, into the shard's own log
        log_path = shard_log_path(log_path, *shard)
    records, valid_length = check_answer_log(log_path, identity, spec.id)
    latest = {rec["name"]: rec for rec in records}  # the last record of a sample wins
    names = task.names if shard is None else shard_names(task.names, *shard)
    samples = build_samples(adapter, task, question, names)
    todo = [(s, problem) for s, problem in samples if latest.get(s.name, {}).get("error", "x") is not None]

    fail_fast = config.fail_fast
    batch_size = max(1, int(config.batch_size or adapter.default_batch_size or 1))
    base = {"task": spec.id, "key": identity["key"], "model": model, "adapter": identity["adapter"],
            "keyed_args": identity["keyed_args"], "question_mode": question.mode,
            "question_hash": question.hash, "task_fingerprint": identity["task_fingerprint"]}

    if todo:
        from tqdm import tqdm

        done_before = len(samples) - len(todo)
        if done_before:
            say(f"[{spec.id}] resuming: {done_before} of {len(samples)} sample(s) already answered in {log_path}")
        log = AnswerLog(log_path, valid_length)
        bar = tqdm(total=len(samples), initial=done_before, desc=f"[{spec.id}] {model}", unit="sample",
                   file=sys.stderr, dynamic_ncols=True, disable=not config.progress)
        successes, setup_failures = 0, 0
        try:
            runnable = []
            for sample, problem in todo:
                if problem is None:
                    runnable.append(sample)
                    continue
                log.append([{"name": sample.name, "answer": "", "error": problem, "seconds": 0.0, **base}])
                bar.update(1)
                if fail_fast:
                    raise UserError(f"[{spec.id}] sample '{sample.name}' failed: {problem} (--fail-fast)")
            executor = config.executor or LocalExecutor()
            for batch, results, seconds in executor.answer_batches(adapter, run, list(_batches(runnable, batch_size))):
                log.append([{"name": s.name, "answer": answer or "", "error": error, "seconds": seconds, **base}
                            for s, (answer, error) in zip(batch, results)])
                bar.update(len(batch))
                for s, (answer, error) in zip(batch, results):
                    if error is None:
                        successes += 1
                        continue
                    if fail_fast:
                        raise UserError(f"[{spec.id}] sample '{s.name}' failed: {error} (--fail-fast)")
                    if not error.startswith("MediaError") and successes == 0:
                        setup_failures += 1
                        if setup_failures >= SETUP_FAILURE_LIMIT:
                            raise UserError(f"[{spec.id}] the first {setup_failures} samples all failed in model "
                                            f"'{adapter.name}' (last: {error}); check --model-args and the "
                                            f"model's installation (records in {log_path})")
        finally:
            bar.close()
            log.close()
        records, _ = read_answer_log(log_path)
        latest = {rec["name"]: rec for rec in records}

    wanted = [s.name for s, _ in samples]
    answers = {n: latest[n].get("answer") or "" for n in wanted if n in latest and latest[n].get("error") is None}
    failed = [(n, latest[n]["error"]) for n in wanted if n in latest and latest[n].get("error") is not None]
    if shard is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()  # an empty shard (no sample hashed to it) still shows `merge` that it ran
        return _finish_shard(task, config, run, log_path, answers, failed, len(wanted), npz_path)
    rejected = {n: f"answer is {type(a).__name__}, not text" for n, a in answers.items() if not isinstance(a, str)}
    answers = {n: a for n, a in answers.items() if n not in rejected}
    if failed and not answers:
        raise UserError(f"[{spec.id}] all {len(failed)} sample(s) failed (e.g. {failed[0][0]}: {failed[0][1]}); "
                        f"records in {log_path}")
    write_name2reason(npz_path, answers)
    answer_set = AnswerSet(label=npz_path.stem, answers=answers, source=str(npz_path), rejected=rejected)
    if failed:
        answer_set.warnings.append(f"{len(failed)} sample(s) failed and are scored as empty predictions "
                                   f"(e.g. {failed[0][0]}: {failed[0][1]}); see {log_path}; a rerun retries them")
        answer_set.flags.append(f"failed-samples:{len(failed)}")
    return answer_set


# Helpers for adapter authors, kept importable from here (they live in unibench.runtime).
from unibench.runtime import SUBTITLE_LEAD, requirement_status, torch_device_dtype, transformers_names, user_text  # noqa: E402,F401
