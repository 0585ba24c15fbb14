"""`--executor ray`: a model's samples (and an LLM extractor's prompts) answered by a pool of Ray actors.

Ray is an optional extra (``pip install 'mer-unibench[ray]'``); nothing imports it unless ``--executor ray``
is asked for. The driver (this process) stays the only writer of the answer log and of the extraction cache:
actors only answer and hand results back.

This module holds the connection (:class:`RayOptions`, :func:`connect`) and the inference pool
(:class:`RayExecutor`); :mod:`unibench.ray_extraction` the extraction pool.

How the inference pool keeps the local runner's guarantees:

* each actor holds one copy of the adapter, shipped pickled while still unloaded (adapters load lazily in
  their first ``answer``), so a model is loaded once per actor and reused across tasks and runs;
* an actor answers a batch exactly as :class:`unibench.inference.LocalExecutor` would (``_answer_batch``: the
  same batches, the same per-sample failures), so greedy answers are the local run's;
* results come back to the driver as batches finish, and the driver appends them to the answer log;
* an actor that dies (its process, its node) is replaced and its unfinished batches are sent again, at most
  ``max_retries`` times each; then their samples are recorded as failed (a rerun retries them), never lost
  and never answered twice;
* a ``UserError`` in an actor (bad configuration) stops the run with its one line.
"""
from __future__ import annotations

import os
import re
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from unibench.errors import MissingExtraError, UserError
from unibench.errors import log as say

if TYPE_CHECKING:  # pragma: no cover
    from unibench.adapters.base import Adapter, AnswerRun, Sample

Results = list[tuple[str | None, str | None]]  # (answer, error) per sample, as unibench.inference._answer_batch


@dataclass
class RayOptions:
    """``--ray-args k=v,...``: the pool and each worker's resources."""

    num_workers: int = 0        # actors in a pool; 0: one per GPU when num_gpus > 0, else one per free CPU
    num_gpus: float = 0.0       # GPUs per actor (a model per GPU: 1)
    num_cpus: float = 1.0       # CPUs per actor
    max_retries: int = 2        # times a batch is resubmitted after its actor died, then its samples fail


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "ray", "--executor ray") from None
    return ray


def parse_ray_args(text: str | None) -> RayOptions:
    from unibench.modelargs import build_options

    options = build_options(RayOptions, text, "--ray-args", owner="--executor ray")
    if options.num_workers < 0 or options.num_gpus < 0 or options.num_cpus < 0 or options.max_retries < 0:
        raise UserError("--ray-args: num_workers, num_gpus, num_cpus and max_retries must be 0 or more")
    return options


def connect(address: str | None, options: RayOptions) -> Any:
    """Start a local Ray instance (``address`` None) or join a cluster (``auto`` or ``ray://host:port``);
    return the ``ray`` module. Already connected (e.g. a test's instance): kept as it is."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UserError(f"--executor ray: cannot start or join {where} ({str(exc).splitlines()[0][:200]}); "
                            "check --ray-address (auto joins a cluster started with 'ray start --head')") from None
    return ray


# ---------------------------------------------------------------- the inference pool

IN_FLIGHT_PER_ACTOR = 2  # one batch answering, one queued behind it: an actor never waits on the driver
# Ray errors meaning "the actor (or its node) is gone", not "the code raised": its batches are sent again.
_DEATH_ERRORS = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
                 "NodeDiedError", "OutOfMemoryError", "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError")


def ray_error_classes(ray: Any, names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """The classes of ``ray.exceptions`` named, among those this Ray version has (2.9 ... 2.60)."""
    found = (getattr(ray.exceptions, n, None) for n in names)
    return tuple(c for c in found if isinstance(c, type))


def death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """The Ray exception classes of a dead worker (or node)."""
    return ray_error_classes(ray, _DEATH_ERRORS)


def last_line(exc: BaseException) -> str:
    """A Ray error's own last line (the cause), without terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), type(exc).__name__)[:200]


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def startup_failure(exc: BaseException) -> None:
    """An actor that could not even start (e.g. ``unibench`` missing or another version on a node) fails the same
    way on every retry: one line instead."""
    if "creation task" not in str(exc):
        return
    raise UserError(f"--executor ray: a Ray worker could not start ({last_line(exc)}); every node needs mer-unibench "
                    "installed (the same version) with the model's extra")


def pool_size(options: RayOptions, ray: Any) -> int:
    """Actors in the pool: ``num_workers``, else one per GPU (``num_gpus`` > 0), else one per free CPU. A pool
    the cluster cannot hold is refused in one line: its extra actors would wait for ever."""
    total = ray.cluster_resources()
    for kind, per_actor in (("GPU", options.num_gpus), ("CPU", options.num_cpus)):
        if per_actor > total.get(kind, 0) + 1e-9:
            raise UserError(f"--ray-args num_{kind.lower()}s={per_actor:g}: the Ray cluster has "
                            f"{total.get(kind, 0):g} {kind}(s) in all, so no worker could start; lower "
                            f"num_{kind.lower()}s or add nodes")
    if options.num_workers:
        need = {"CPU": options.num_workers * options.num_cpus, "GPU": options.num_workers * options.num_gpus}
        for kind, amount in need.items():
            if amount > total.get(kind, 0) + 1e-9:  # the extra actors would wait for ever
                raise UserError(f"--ray-args num_workers={options.num_workers} with num_{kind.lower()}s="
                                f"{getattr(options, f'num_{kind.lower()}s'):g} per worker needs {amount:g} {kind}(s); "
                                f"the Ray cluster has {total.get(kind, 0):g} (lower num_workers or add nodes)")
        return options.num_workers
    if options.num_gpus > 0:
        gpus = total.get("GPU", 0)
        if gpus < options.num_gpus:
            raise UserError(f"--ray-args num_gpus={options.num_gpus:g}: the Ray cluster has {gpus:g} GPU(s) "
                            "(num_gpus=0 runs on CPUs)")
        return int(gpus // options.num_gpus + 1e-9)
    cpus = ray.available_resources().get("CPU", 0)
    return max(1, int(cpus // (options.num_cpus or 1) + 1e-9))


class AnswerWorker:
    """The body of one Ray actor: one adapter, unpickled on the first batch and kept."""

    def __init__(self, adapter_blob: bytes, adapter_name: str):
        self._blob = adapter_blob
        self._name = adapter_name
        self._adapter: Any = None
        self._run: Any = None

    def _get_adapter(self) -> Any:
        if self._adapter is None:
            import ray.cloudpickle as cloudpickle

            try:
                self._adapter = cloudpickle.loads(self._blob)
            except Exception as exc:  # noqa: BLE001 - e.g. the adapter's package is missing on this node
                raise UserError(f"--executor ray: a Ray worker cannot rebuild model '{self._name}' "
                                f"({type(exc).__name__}: {first_line(exc, 200)}); install the package that "
                                "provides it on every node") from None
            self._blob = b""
        return self._adapter

    def answer(self, batch: list["Sample"], run: "AnswerRun | None") -> tuple[str, Any, float]:
        """``("ok", results, seconds per sample)``, or ``("user_error", message, 0)`` (a UserError stops the run;
        it travels as text because exception classes with their own ``__init__`` do not unpickle)."""
        from unibench.inference import _answer_batch

        try:
            adapter = self._get_adapter()
            if run is not None and run != self._run:  # as infer_task does before a run's samples
                adapter.use_run(run)
                self._run = run
            started = time.time()
            results = _answer_batch(adapter, batch)
            return "ok", results, round((time.time() - started) / len(batch), 3)
        except UserError as exc:
            return "user_error", str(exc), 0.0

    def pid(self) -> int:
        return os.getpid()


@dataclass
class _Job:
    """One batch on its way; ``attempts`` counts the actors that died answering it."""

    batch: list["Sample"]
    attempts: int = 0


@dataclass
class _Actor:
    handle: Any
    in_flight: int = 0
    dead: bool = False
    alone: bool = False     # answering a batch sent again after a death: nothing queued behind it


@dataclass
class _Pool:
    adapter: Any            # the driver's adapter object this pool was made for
    blob_ref: Any           # the pickled adapter in Ray's object store
    size: int
    epoch: int
    actors: list[_Actor] = field(default_factory=list)


_LIVE: "weakref.WeakSet[RayExecutor]" = weakref.WeakSet()


def release_all() -> None:
    """Kill the inference actors of every RayExecutor (they start again on the next batch): frees their GPUs,
    e.g. for the extraction pool that runs after inference."""
    for executor in list(_LIVE):
        executor.close()


class RayExecutor:
    """``--executor ray``: :meth:`answer_batches` with the contract of ``unibench.inference.LocalExecutor``,
    answered by a pool of Ray actors (one adapter each) kept across tasks and runs until :meth:`close`."""

    name = "ray"

    def __init__(self, options: RayOptions):
        self.options = options
        self._pool: _Pool | None = None
        self._epoch = 0
        self._worker_class: Any = None
        _LIVE.add(self)

    # the pool --------------------------------------------------------------
    def _ray(self) -> Any:
        ray = require_ray()
        if not ray.is_initialized():
            raise UserError("--executor ray: Ray is not connected (unibench.ray_executor.connect first)")
        return ray

    def _pool_for(self, adapter: "Adapter", ray: Any) -> _Pool:
        if self._pool is not None and self._pool.adapter is adapter:
            return self._pool
        self.close()  # another adapter: its own actors
        import ray.cloudpickle as cloudpickle

        try:  # the driver's copy is still unloaded: what travels is the adapter's options and code
            blob = cloudpickle.dumps(adapter)
        except Exception as exc:  # noqa: BLE001 - pickling fails in many ways (TypeError, PicklingError, ...)
            raise UserError(f"--executor ray: model '{adapter.name}' cannot be sent to Ray workers "
                            f"({type(exc).__name__}: {first_line(exc, 200)}); its adapter must pickle before its "
                            "first answer (load the model lazily in answer())") from None
        size = pool_size(self.options, ray)
        if self.options.num_gpus == 0 and ray.cluster_resources().get("GPU", 0) > 0:
            say("note: --executor ray without num_gpus: the workers see no GPU (--ray-args num_gpus=1 gives each "
                "its own)")
        self._epoch += 1
        self._pool = _Pool(adapter=adapter, blob_ref=ray.put(blob), size=size, epoch=self._epoch)
        return self._pool

    def _start_actor(self, ray: Any, pool: _Pool) -> _Actor:
        if self._worker_class is None:  # one remote class per executor (Ray exports it once)
            self._worker_class = ray.remote(AnswerWorker)
        worker = self._worker_class.options(num_cpus=self.options.num_cpus, num_gpus=self.options.num_gpus,
                                            max_restarts=0, max_task_retries=0)
        actor = _Actor(worker.remote(pool.blob_ref, pool.adapter.name))
        pool.actors.append(actor)
        return actor

    def _grow(self, ray: Any, pool: _Pool, wanted: int) -> None:
        """Live actors up to ``min(pool size, wanted)``: a task of three batches starts three, not eight."""
        live = sum(not a.dead for a in pool.actors)
        for _ in range(max(0, min(pool.size, wanted) - live)):
            self._start_actor(ray, pool)

    def _bury(self, ray: Any, pool: _Pool, actor: _Actor) -> None:
        """An actor died: make sure it is gone (no late answer) and start its replacement."""
        if actor.dead:
            return
        actor.dead = True
        pool.actors.remove(actor)
        try:
            ray.kill(actor.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._start_actor(ray, pool)

    def close(self) -> None:
        """Kill the actors (idempotent); a later :meth:`answer_batches` starts a new pool."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            import ray
        except ImportError:  # pragma: no cover - a pool implies ray
            return
        if not ray.is_initialized():
            return
        for actor in pool.actors:
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone, or Ray shutting down
                pass

    # answering -------------------------------------------------------------
    def answer_batches(self, adapter: "Adapter", run: "AnswerRun | None", batches: list[list["Sample"]]
                       ) -> Iterator[tuple[list["Sample"], Results, float]]:
        """Yield ``(batch, results, seconds per sample)`` as actors finish batches (any order)."""
        if not batches:
            return
        ray = self._ray()
        pool = self._pool_for(adapter, ray)
        epoch = pool.epoch
        died = death_errors(ray)
        pending: deque[_Job] = deque(_Job(b) for b in batches)
        in_flight: dict[Any, tuple[_Job, _Actor]] = {}
        finished = False
        try:
            self._grow(ray, pool, len(batches))
            while pending or in_flight:
                self._submit(pool, pending, in_flight, run)
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    job, actor = in_flight.pop(ref)
                    actor.in_flight -= 1
                    actor.alone = actor.alone and actor.in_flight > 0
                    try:
                        kind, payload, seconds = ray.get(ref)
                    except died as exc:
                        startup_failure(exc)
                        self._bury(ray, pool, actor)
                        failed = self._retry_or_fail(job, exc, pending)
                        if failed is not None:
                            yield job.batch, failed, 0.0
                        continue
                    except ray.exceptions.RayTaskError as exc:  # a bug outside the adapter's per-sample guard
                        cause = getattr(exc, "cause", None) or exc
                        raise UserError(f"--executor ray: a worker failed on model '{adapter.name}': "
                                        f"{type(cause).__name__}: {first_line(cause)}") from None
                    if kind == "user_error":
                        raise UserError(payload)
                    yield job.batch, payload, seconds
            finished = True
        finally:
            # Stopped early (an error, --fail-fast, Ctrl-C): batches still queued on the actors must not answer
            # into a later call, so this pool goes (unless a newer one replaced it meanwhile).
            if not finished and self._pool is not None and self._pool.epoch == epoch:
                self.close()

    def _submit(self, pool: _Pool, pending: deque[_Job], in_flight: dict[Any, tuple[_Job, _Actor]],
                run: "AnswerRun | None") -> None:
        """Give queued batches to the least busy actors, up to IN_FLIGHT_PER_ACTOR each. A batch sent again after
        a death goes alone to an idle actor (and goes first): should it kill that one too, no other batch is
        charged a retry for it."""
        while pending:
            live = [a for a in pool.actors if not a.dead]
            job = pending[0]
            if job.attempts:
                free = [a for a in live if a.in_flight == 0]
            else:
                free = [a for a in live if not a.alone and a.in_flight < IN_FLIGHT_PER_ACTOR]
            if not free:
                return
            actor = min(free, key=lambda a: a.in_flight)
            pending.popleft()
            actor.alone = job.attempts > 0
            in_flight[actor.handle.answer.remote(job.batch, run)] = (job, actor)
            actor.in_flight += 1

    def _retry_or_fail(self, job: _Job, exc: BaseException, pending: deque[_Job]) -> Results | None:
        """Send a dead actor's batch again (first in line), or, out of retries, its samples' failed results."""
        job.attempts += 1
        if job.attempts <= self.options.max_retries:
            say(f"note: a Ray worker died ({type(exc).__name__}); its batch of {len(job.batch)} sample(s) is "
                f"sent again (retry {job.attempts} of {self.options.max_retries})")
            pending.appendleft(job)
            return None
        error = (f"WorkerDied: the Ray worker answering this sample died ({type(exc).__name__}: "
                 f"{first_line(exc, 200)}) after {self.options.max_retries} retries")
        return [(None, error[:500])] * len(job.batch)
