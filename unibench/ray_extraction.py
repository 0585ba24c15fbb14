"""The extraction pool of ``--executor ray``: an LLM extractor's prompts answered by Ray actors.

Each actor holds its own copy of the driver's extractor (same backend class, same ``--extractor-args``,
built without a cache) and loads its model once, on its first chunk. The driver's
:class:`~unibench.metrics.llm.LLMExtractor` keeps everything that must stay in one place: dedup, the
extraction cache (one SQLite database, committed as each chunk's answers arrive), statistics and failure
counting. The pool only turns the driver's list of distinct uncached prompts into ``(index, raw answer)``
groups, as chunks finish, in whatever order the actors finish them.

* Chunks: the prompts are cut into chunks of ``max(stream_chunk, 8)`` up to 512 prompts (about four per
  actor, so a slow actor does not hold up the end), two chunks queued per actor so none waits for the
  driver between chunks. A killed driver loses at most the chunks in flight: the rest is in the cache.
* An actor that dies (its process killed, its node lost, out of memory) is replaced by a fresh one and
  its chunks are resubmitted, each at most ``max_retries`` times; after that those prompts come back as
  ``None`` and the driver counts them as failed (never cached). A ``UserError`` on an actor (a missing
  package, a model without a chat template) stops the run with the same one line; so does an actor that
  cannot start at all (mer-unibench missing on a node), which no retry would mend.
* Pool size: ``--ray-args num_workers=N``; by default one actor per GPU of the cluster when
  ``num_gpus`` > 0, else one per free CPU; each actor asks ``num_gpus`` / ``num_cpus``.

How vLLM's own parallelism fits: one actor is one engine. On one multi-GPU node, prefer one engine over
the GPUs without Ray: ``--executor local --extractor vllm --extractor-args tensor_parallel_size=N`` (all of
a call's prompts in one continuous batch, one process writing the cache). The ``vllm`` extractor has no
``data_parallel_size`` option: vLLM's offline data parallelism is one engine process per rank, each given
its own share of the prompts, which is exactly this pool; so replicas of a model that fits one GPU are
``--executor ray --ray-args num_workers=N,num_gpus=1`` (often faster than tensor parallelism for a 7B
model). Across nodes, give each actor the GPUs of its engine: ``num_gpus=T`` with ``tensor_parallel_size=T``.
With a generating model on ``--executor ray`` as well, the inference actors hold their GPUs while the
extraction actors want theirs: size both pools (``num_workers``) so they fit the cluster together.
"""
from __future__ import annotations

import math
import os
import socket
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from unibench.errors import UserError
from unibench.errors import log as _log
from unibench.metrics.extraction import ExtractionContext
from unibench.metrics.llm import LLMExtractor, ResultGroup
from unibench.ray_executor import RayOptions, death_errors, last_line, pool_size, ray_error_classes, require_ray
from unibench.strict import first_line

MIN_CHUNK = 8             # prompts per chunk at least (and at least the backend's stream_chunk)
MAX_CHUNK = 512           # at most: a killed driver or actor loses at most this many answers per chunk
CHUNKS_PER_WORKER = 4     # aim: about this many chunks per actor, so the last chunks balance the load
IN_FLIGHT_PER_WORKER = 2  # one running, one queued: an actor never waits for the driver


# ---------------------------------------------------------------- what travels to the actors

@dataclass(frozen=True)
class ExtractorRecipe:
    """How an actor builds its own copy of the driver's extractor: without the cache (the driver's)."""

    cls: type
    options: Any
    lexicon: Any = None
    paper_sampling: bool = False

    @classmethod
    def of(cls, extractor: LLMExtractor) -> "ExtractorRecipe":
        return cls(type(extractor), extractor.options, extractor.lexicon, bool(extractor.paper_sampling))

    def build(self) -> LLMExtractor:
        context = ExtractionContext(lexicon=self.lexicon, use_cache=False, paper_sampling=self.paper_sampling,
                                    progress=False)
        return self.cls(self.options, context)


@dataclass
class ChunkAnswers:
    """One chunk's raw answers (in the chunk's order), as an actor hands them back."""

    answers: list[str | None]
    worker: str                                   # host:pid of the copy that answered (who did what)
    failure_reasons: dict[str, int] = field(default_factory=dict)  # the backend's notes, for the driver's log
    error: str | None = None                      # a UserError's one line: the driver raises it


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ExtractionWorker:
    """The body of one Ray actor: a copy of the extractor, its model loaded on the first chunk (a failure
    to load is then a result the driver can read, not an actor that never started)."""

    def __init__(self, recipe: ExtractorRecipe):
        self.recipe = recipe
        self.extractor: LLMExtractor | None = None

    def answer(self, prompts: list[str]) -> ChunkAnswers:
        try:
            if self.extractor is None:
                extractor = self.recipe.build()
                extractor.prepare()
                self.extractor = extractor
            before = Counter(self.extractor.failure_reasons)
            out: list[str | None] = [None] * len(prompts)
            for group in self.extractor.generate_stream(prompts):
                for i, text in group:
                    out[i] = text
        except UserError as exc:
            return ChunkAnswers([None] * len(prompts), worker_id(), error=str(exc))  # already one line
        noted = self.extractor.failure_reasons - before
        return ChunkAnswers(out, worker_id(), dict(noted))

    def release(self) -> None:
        if self.extractor is not None:
            self.extractor.close()
            self.extractor = None


# ---------------------------------------------------------------- plain functions (no Ray needed)

@dataclass
class Chunk:
    start: int            # index of its first prompt in the driver's list
    prompts: list[str]
    attempts: int = 0     # times an actor died holding it


UNSCHEDULABLE = ("ActorUnschedulableError",)


def chunk_size(n: int, workers: int, stream_chunk: int) -> int:
    floor = max(int(stream_chunk), MIN_CHUNK)
    balanced = math.ceil(n / max(1, workers * CHUNKS_PER_WORKER))
    return max(floor, min(balanced, MAX_CHUNK))


def make_chunks(prompts: list[str], size: int) -> list[Chunk]:
    return [Chunk(start, prompts[start:start + size]) for start in range(0, len(prompts), size)]


# ---------------------------------------------------------------- the pool

class ExtractionPool:
    """``generate_stream`` of an LLM extractor, on Ray actors (the driver's ``generation_pool``)."""

    def __init__(self, extractor: LLMExtractor, options: RayOptions):
        self.extractor = extractor
        self.options = options
        self.recipe = ExtractorRecipe.of(extractor)
        self.answered_by: Counter[str] = Counter()  # host:pid -> prompts answered (kept across calls)
        self.deaths = 0                               # actors lost (each one replaced)
        self._ray: Any = None
        self._actor_class: Any = None
        self._recipe_ref: Any = None
        self._size = 0
        self._workers: list[Any] = []                 # actor handles, created on the first call, kept after
        self._closed = False

    # ------------------------------------------------------------ actors
    def _start(self) -> Any:
        if self._ray is None:
            ray = require_ray()
            if not ray.is_initialized():  # the CLI connects first (unibench.ray_executor.connect)
                raise UserError("--executor ray: Ray is not connected (unibench.ray_executor.connect first)")
            self._size = pool_size(self.options, ray)
            self._actor_class = ray.remote(ExtractionWorker).options(
                num_cpus=self.options.num_cpus, num_gpus=self.options.num_gpus, max_restarts=0,
                max_task_retries=0)
            self._recipe_ref = ray.put(self.recipe)  # the options (and lexicon) travel once
            self._ray = ray
        return self._ray

    def _new_worker(self) -> Any:
        return self._actor_class.remote(self._recipe_ref)

    def _grow(self, wanted: int) -> None:
        while len(self._workers) < min(self._size, wanted):
            self._workers.append(self._new_worker())

    def _replace(self, dead: Any) -> None:
        for k, worker in enumerate(self._workers):
            if worker is dead:  # the first of its failed chunks replaces it; the others find it gone
                self.deaths += 1
                self._kill(dead)
                self._workers[k] = self._new_worker()
                return

    def _kill(self, worker: Any) -> None:
        try:
            self._ray.kill(worker, no_restart=True)
        except Exception:  # already gone: nothing to free
            pass

    # ------------------------------------------------------------ generation
    def generate_stream(self, prompts: list[str]) -> Iterator[ResultGroup]:
        if self._closed:
            raise RuntimeError("ExtractionPool used after close()")
        if not prompts:
            return
        ray = self._start()
        size = chunk_size(len(prompts), self._size, self.extractor.stream_chunk)
        pending = deque(make_chunks(list(prompts), size))
        self._grow(len(pending))
        running: dict[Any, tuple[Chunk, Any]] = {}  # object ref -> (chunk, actor answering it)
        try:
            while pending or running:
                self._submit(pending, running)
                (ref,), _ = ray.wait(list(running), num_returns=1)
                chunk, worker = running.pop(ref)
                result = self._result(ref, chunk, worker, pending)
                if result is not None:
                    yield result
        finally:
            for ref in running:  # stopped early (an error, an interrupt): leave the actors free
                try:
                    ray.cancel(ref)
                except Exception:
                    pass

    def _submit(self, pending: deque[Chunk], running: dict[Any, tuple[Chunk, Any]]) -> None:
        busy = [sum(1 for _, w in running.values() if w is worker) for worker in self._workers]
        for level in range(1, IN_FLIGHT_PER_WORKER + 1):  # round robin: every actor one chunk before any two
            for k, worker in enumerate(self._workers):
                if pending and busy[k] < level:
                    chunk = pending.popleft()
                    running[worker.answer.remote(chunk.prompts)] = (chunk, worker)
                    busy[k] += 1

    def _result(self, ref: Any, chunk: Chunk, worker: Any, pending: deque[Chunk]) -> ResultGroup | None:
        """The chunk's answers as a group; None when it goes back in the queue (its actor died)."""
        try:
            answers: ChunkAnswers = self._ray.get(ref)
        except ray_error_classes(self._ray, UNSCHEDULABLE) as exc:
            raise UserError(f"--executor ray: an extraction worker cannot be placed ({first_line(exc)}); "
                            "check --ray-args num_gpus / num_cpus against the cluster") from None
        except death_errors(self._ray) as exc:
            if "creation task" in str(exc):  # it could not even start (unibench or the backend's class missing
                # on a node): every replacement would fail the same way
                raise UserError(f"--executor ray: an extraction worker could not start ({last_line(exc)}); every "
                                "node needs mer-unibench installed (the same version) with the extractor's extra"
                                ) from None
            return self._died(chunk, worker, pending, exc)
        if answers.error is not None:
            raise UserError(answers.error)
        if len(answers.answers) != len(chunk.prompts):
            raise RuntimeError(f"extraction worker returned {len(answers.answers)} answers for "
                               f"{len(chunk.prompts)} prompts")
        for reason, n in answers.failure_reasons.items():
            self.extractor.failure_reasons[reason] += n
        self.answered_by[answers.worker] += len(chunk.prompts)
        return [(chunk.start + j, text) for j, text in enumerate(answers.answers)]

    def _died(self, chunk: Chunk, worker: Any, pending: deque[Chunk], exc: BaseException) -> ResultGroup | None:
        self._replace(worker)
        chunk.attempts += 1
        if chunk.attempts <= self.options.max_retries:
            _log(f"extraction worker lost ({type(exc).__name__}); {len(chunk.prompts)} prompt(s) sent again "
                 f"(try {chunk.attempts + 1} of {self.options.max_retries + 1})")
            pending.appendleft(chunk)
            return None
        reason = f"extraction worker died {chunk.attempts} time(s) on these prompts"
        for _ in chunk.prompts:
            self.extractor.note_failure(reason)
        return [(chunk.start + j, None) for j in range(len(chunk.prompts))]

    # ------------------------------------------------------------ end
    def close(self) -> None:
        """Stop the actors (their models go with them). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            self._kill(worker)
        self._workers = []


def pool_options(extractor: LLMExtractor, ray_options: RayOptions | None) -> RayOptions | None:
    """The extraction pool a run needs: the ``--ray-args`` one with ``--executor ray``; else one actor per
    engine replica when the extractor asks for several (``--extractor-args data_parallel_size=N``, each
    replica on ``tensor_parallel_size`` GPUs); else None (one engine, in this process)."""
    replicas, gpus = extractor.replicas()
    if replicas > 1:
        base = ray_options or RayOptions()
        return RayOptions(num_workers=replicas, num_gpus=gpus, num_cpus=base.num_cpus, max_retries=base.max_retries)
    return ray_options
