#!/usr/bin/env python3
"""`--executor ray` scaling: samples/s with 1 and 2 Ray workers, and the harness's overhead per sample.

    python benchmarks/scaling.py                      # defaults: 24 model samples, 400 overhead samples
    python benchmarks/scaling.py --samples 48 --workers 1,2,4

Two measurements, on this machine's CPUs (no GPU, no download):

* **throughput**: a CPU-bound random-weight model (``test-heavy`` in tests/ray_fixtures.py: an MLP run like a
  short generation, one torch thread per copy, ~0.3 s a sample) answering ``--samples`` samples, batch size 1:
  here in the driver (``--executor local``), then on a Ray pool of 1, 2, ... workers. The pool is warmed first
  (each actor loads its copy once, as it does once per run), so the figures are the steady state a long run
  sees; the cold figure (actor start and load included) is printed too.
* **overhead**: an instant adapter (``test-ray-echo``) through the real inference loop
  (``unibench.inference.infer_task``: samples built, answers fsync'd to the answer log one batch at a time),
  local versus Ray: milliseconds per sample spent outside the model.

Ray starts a local instance with one CPU per core (``--cpus``). Other processes on the machine skew the figures;
run it on an idle machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path[:0] = [str(REPO), str(TESTS)]  # run from a checkout; the test adapters live in tests/ray_fixtures.py

import ray_fixtures  # noqa: E402
from unibench.adapters.base import Sample  # noqa: E402
from unibench.inference import LocalExecutor  # noqa: E402


def samples(n: int) -> list[Sample]:
    return [Sample(name=f"sample_{i:08d}", task="mer2023", question="How does the person feel?",
                   subtitle=f"subtitle number {i}") for i in range(n)]


def drain(executor: Any, adapter: Any, batches: list[list[Sample]]) -> float:
    """Seconds to answer every batch (results consumed as the inference loop would)."""
    started = time.perf_counter()
    done = 0
    for batch, results, _ in executor.answer_batches(adapter, None, batches):
        done += len(batch)
        assert all(error is None for _, error in results), results
    assert done == sum(map(len, batches))
    return time.perf_counter() - started


def throughput(args: argparse.Namespace, ray: Any) -> list[tuple[str, float, float, float]]:
    """(setup, cold seconds, steady seconds, samples/s steady) per executor."""
    from unibench.ray_executor import RayExecutor, RayOptions

    options = ray_fixtures.HeavyOptions(hidden=args.hidden, layers=args.layers, steps=args.steps, rows=args.rows)
    work = [[s] for s in samples(args.samples)]
    rows = []
    local = ray_fixtures.HeavyAdapter(options)
    cold = drain(LocalExecutor(), local, work[:1])  # the load (weights made) and one sample
    steady = drain(LocalExecutor(), local, work)
    rows.append(("local (driver)", cold, steady, args.samples / steady))
    for n in args.workers:
        executor = RayExecutor(RayOptions(num_workers=n, num_cpus=1))
        adapter = ray_fixtures.HeavyAdapter(options)  # unloaded: each actor makes its own copy
        try:
            cold = drain(executor, adapter, work[:n])  # n actors start, load, answer one sample each
            steady = drain(executor, adapter, work)
        finally:
            executor.close()
        rows.append((f"ray, {n} worker{'s' if n > 1 else ''}", cold, steady, args.samples / steady))
    return rows


def overhead(args: argparse.Namespace, data_root: Path, out: Path) -> list[tuple[str, float, float]]:
    """(setup, seconds, ms per sample) of the inference loop with an instant model."""
    from media_fixtures import make_task_folder
    from unibench.ray_executor import RayExecutor, RayOptions
    from unibench.runner import RunConfig
    from unibench.inference import infer_task
    from unibench.tasks.base import get_task, load_task

    make_task_folder(data_root, "mer2023", n=args.overhead_samples, media=False)
    spec = get_task("mer2023")
    task = load_task(spec, data_root, check_count=False)
    rows = []
    setups: list[tuple[str, Any]] = [("local (driver)", None)]
    setups += [(f"ray, {n} worker{'s' if n > 1 else ''}", n) for n in args.workers]
    for label, n in setups:
        executor = RayExecutor(RayOptions(num_workers=n, num_cpus=1)) if n else None
        adapter = ray_fixtures.RayEchoAdapter(ray_fixtures.RayEchoOptions(name=f"echo-{n or 0}"))
        try:
            if executor is not None:  # start the actors outside the timing, as a long run amortises them
                drain(executor, adapter, [[s] for s in samples(n)])
            config = RunConfig(tasks=[spec], data_root=data_root, output=out, progress=False, batch_size=1,
                               allow_count_mismatch=True, executor=executor)
            started = time.perf_counter()
            answers = infer_task(adapter, task, config)
            seconds = time.perf_counter() - started
        finally:
            if executor is not None:
                executor.close()
        assert len(answers.answers) == args.overhead_samples
        rows.append((label, seconds, 1000 * seconds / args.overhead_samples))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=24, help="model samples per throughput measurement")
    parser.add_argument("--overhead-samples", type=int, default=400, help="instant samples per overhead measurement")
    parser.add_argument("--workers", default="1,2", help="Ray pool sizes to measure, e.g. 1,2,4")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray instance")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    import ray
    import torch

    torch.set_num_threads(1)  # the local baseline uses one core, as each Ray worker does
    ray_fixtures.register()
    # the workers unpickle the test adapters by module: tests/ on the instance's PYTHONPATH
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(REPO), os.environ.get("PYTHONPATH"))
                                               if p)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Ray {ray.__version__}, "
              f"torch {torch.__version__}, python {platform.python_version()}")
        print(f"# command: python benchmarks/scaling.py {' '.join(sys.argv[1:] if argv is None else argv)}")
        rows = throughput(args, ray)
        base = rows[0][3]
        print(f"\nthroughput: {args.samples} samples of a CPU-bound random model (hidden {args.hidden}, "
              f"{args.layers} layers, {args.steps} steps x {args.rows} rows), batch size 1, 1 thread per copy")
        print(f"{'executor':<18} {'cold s':>8} {'steady s':>9} {'samples/s':>10} {'s/sample':>9} {'vs local':>9}")
        for label, cold, steady, rate in rows:
            print(f"{label:<18} {cold:>8.2f} {steady:>9.2f} {rate:>10.2f} {1 / rate:>9.3f} {rate / base:>8.2f}x")
        with tempfile.TemporaryDirectory() as tmp:
            over = overhead(args, Path(tmp) / "data", Path(tmp) / "out")
        print(f"\noverhead: {args.overhead_samples} samples of an instant model through infer_task (answer log "
              "fsync'd per batch), batch size 1")
        print(f"{'executor':<18} {'seconds':>8} {'ms/sample':>10}")
        for label, seconds, ms in over:
            print(f"{label:<18} {seconds:>8.2f} {ms:>10.2f}")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
