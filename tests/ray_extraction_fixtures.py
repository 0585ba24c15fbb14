"""A fake LLM extractor for the Ray extraction tests: deterministic answers, no model.

Importing this module registers it as ``--extractor fake-llm``. Ray workers unpickle it by value
(:func:`share_with_ray_workers`), so they need not find this file on their path.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from unibench.errors import UserError
from unibench.metrics.extraction import register_extractor
from unibench.metrics.llm import LLMExtractor, LLMOptions

EMOTIONS = ("happy", "sad", "angry", "worried", "surprised")
POSITIVE = ("happy", "surprised")
_INPUT = re.compile(r"Input: (.*); Output: ?$", re.S)


@dataclass
class FakeOptions(LLMOptions):
    model: str = "fake-llm-1"
    sleep: float = 0.0       # seconds per prompt (the benchmark: a model that dominates)
    log: str = ""            # folder: each process appends the prompts it generated to <pid>.log
    die_on: str = ""         # a prompt holding this text kills its process (os._exit) ...
    die_marker: str = ""     # ... once: the first time, while this file does not exist yet
    fail_on: str = ""        # a prompt holding this text comes back None (a failed sample)
    refuse: str = ""         # loading the "model" raises UserError(refuse)


def fake_answer(prompt: str) -> str:
    """Prompt A: the emotion words of the answer as a list; prompt B: their sentiment; else an echo."""
    match = _INPUT.search(prompt)
    clue = match.group(1) if match else prompt
    if prompt.startswith("Please act as"):  # prompt B
        if any(w in clue for w in POSITIVE):
            return "positive"
        return "negative" if any(w in clue for w in EMOTIONS) else "neutral"
    return "[" + ", ".join(w for w in EMOTIONS if w in clue) + "]"


@register_extractor
class FakeLLMExtractor(LLMExtractor):
    name = "fake-llm"
    description = "tests: deterministic answers from the prompt's words"
    Options = FakeOptions

    def prepare(self) -> None:
        if self.options.refuse:
            raise UserError(self.options.refuse)

    def generate(self, prompts: list[str]) -> list[str | None]:
        o = self.options
        out: list[str | None] = []
        for prompt in prompts:
            if o.sleep:
                time.sleep(o.sleep)
            if o.die_on and o.die_on in prompt and o.die_marker and not Path(o.die_marker).exists():
                Path(o.die_marker).write_text(str(os.getpid()))
                os._exit(1)  # an actor process killed mid-chunk
            if o.fail_on and o.fail_on in prompt:
                self.note_failure("fake failure")
                out.append(None)
                continue
            out.append(fake_answer(prompt))
        if o.log:
            with open(Path(o.log) / f"{os.getpid()}.log", "a", encoding="utf-8") as fh:
                fh.writelines(p.replace("\n", " ") + "\n" for p in prompts)
        return out


def generated(log: Path) -> list[str]:
    """Every prompt any process generated (one line each, a prompt as often as it was generated)."""
    return [line for path in sorted(Path(log).glob("*.log")) for line in path.read_text("utf-8").splitlines()]


def share_with_ray_workers() -> None:
    """Ray workers unpickle this module's classes by value: they need not import it."""
    import sys

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
