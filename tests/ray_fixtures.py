"""Test adapters for `--executor ray` (tests/test_ray_inference.py, benchmarks/scaling.py).

They live in an importable module, not in a test, because Ray workers unpickle the adapter by its class's
module: the driver's ``sys.path`` (which holds tests/) travels to the workers of its job.

Side effects that tests count are files (a worker is another process): every answered sample leaves
``<marker_dir>/calls/<name>.<uuid>``, every adapter copy that answers leaves ``<marker_dir>/loads/<pid>.<uuid>``.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unibench.adapters.base import ADAPTERS, Adapter, AnswerRun, Sample, register_adapter
from unibench.errors import UserError


@dataclass
class RayEchoOptions:
    name: str = ""
    marker_dir: str = ""       # where calls and loads are counted ('' = not counted)
    slow: float = 0.0          # seconds per answer() call
    die_once_on: str = ""      # the worker process exits (os._exit) the first time it meets this sample
    die_always_on: str = ""    # ... every time it meets this sample
    user_error_on: str = ""    # answer() raises UserError for this sample
    fail_on: str = ""          # this sample fails alone (a per-sample model error)
    runs: int = 0              # answer files per task (checkpoints), 0 = one named after the model


class RayEchoAdapter(Adapter):
    """Answers from the subtitle (so the lexicon extractor finds the sample's emotion), deterministically."""

    name = "test-ray-echo"
    description = "test adapter for --executor ray"
    inputs = ("subtitle",)
    Options = RayEchoOptions
    resume_ignore = ("marker_dir", "slow", "die_once_on", "die_always_on")

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._loaded = False
        self._run = ""

    def answer_runs(self) -> list[AnswerRun]:
        return [AnswerRun(label=f"ckpt{i}", folder=self.model_id(), identity=f"ckpt{i}")
                for i in range(self.options.runs)]

    def use_run(self, run: AnswerRun) -> None:
        self._run = run.label

    def _mark(self, kind: str, stem: str) -> None:
        if self.options.marker_dir:
            folder = Path(self.options.marker_dir) / kind
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{stem}.{uuid.uuid4().hex}").write_text(str(os.getpid()))

    def answer(self, samples: list[Sample]) -> list[Any]:
        opts = self.options
        if not self._loaded:  # what a real adapter does once: load its model
            self._loaded = True
            self._mark("loads", str(os.getpid()))
        out: list[Any] = []
        for s in samples:
            if s.name == opts.die_always_on:
                os._exit(1)
            if s.name == opts.die_once_on:
                first = Path(opts.marker_dir) / f"died-{s.name}"
                if not first.exists():
                    first.write_text("")
                    os._exit(1)
            if s.name == opts.user_error_on:
                raise UserError(f"test-ray-echo: bad setup at {s.name}")
            self._mark("calls", s.name)
            if s.name == opts.fail_on:
                out.append(RuntimeError(f"model exploded on {s.name}"))
                continue
            out.append(f"{self._run + ': ' if self._run else ''}The person seems to feel it: {s.subtitle}")
        if opts.slow:
            time.sleep(opts.slow)
        return out


@dataclass
class HeavyOptions:
    name: str = ""
    hidden: int = 1024         # width of the random MLP: sets how long one sample takes
    layers: int = 8
    steps: int = 24            # forward passes per sample (as generated tokens)
    rows: int = 32             # tokens per forward pass (matrix-matrix products: compute-bound, as a real model)
    threads: int = 1           # torch threads per copy (one core per Ray worker)


class HeavyAdapter(Adapter):
    """A random-weight MLP run ``steps`` times per sample: CPU-bound model time with no download
    (benchmarks/scaling.py). The answer depends on the subtitle, deterministically."""

    name = "test-heavy"
    inputs = ("subtitle",)
    Options = HeavyOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._layers: Any = None

    def answer(self, samples: list[Sample]) -> list[str]:
        import torch

        opts = self.options
        if self._layers is None:
            torch.set_num_threads(opts.threads)
            gen = torch.Generator().manual_seed(0)
            self._layers = [torch.randn(opts.hidden, opts.hidden, generator=gen) / opts.hidden ** 0.5
                            for _ in range(opts.layers)]
        out = []
        for s in samples:
            x = torch.full((opts.rows, opts.hidden), float(len(s.subtitle) % 7 + 1))
            with torch.inference_mode():
                for _ in range(opts.steps):
                    for w in self._layers:
                        x = torch.tanh(x @ w)
            out.append(f"The person seems to feel it ({int(x.abs().sum().item() * 1000) % 97}): {s.subtitle}")
        return out


TEST_ADAPTERS = (RayEchoAdapter, HeavyAdapter)


def register() -> None:
    for cls in TEST_ADAPTERS:
        register_adapter(cls)


def unregister() -> None:
    for cls in TEST_ADAPTERS:
        ADAPTERS.pop(cls.name, None)


def count_files(folder: Path) -> dict[str, int]:
    """``<stem>.<uuid>`` files -> how many per stem."""
    counts: dict[str, int] = {}
    for f in folder.glob("*.*") if folder.is_dir() else []:
        stem = f.name.rsplit(".", 1)[0]
        counts[stem] = counts.get(stem, 0) + 1
    return counts


class BrokenWorker:
    """Stands in for unibench.ray_executor.AnswerWorker on a node where it cannot start."""

    def __init__(self, *args: Any):
        raise ImportError("No module named 'unibench'")

    def answer(self, *args: Any) -> Any:  # pragma: no cover - never reached
        raise AssertionError("unreachable")
