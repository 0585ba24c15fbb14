"""Extraction: free text -> emotion labels (prompt A) -> sentiment (prompt B).

An :class:`Extractor` turns a batch of answers into prompt-A label-list
strings and a batch of those into prompt-B sentiment words. Backends (LLM
servers, local models, the offline lexicon matcher) register by name and are
chosen with ``--extractor NAME --extractor-args k=v,...``. A failed sample is
``None``: it is counted and listed in the results, never a crash.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from unibench.errors import UserError


@dataclass
class NoOptions:
    pass


@dataclass
class ExtractionContext:
    """What a run gives every extractor besides its own ``--extractor-args``."""

    lexicon: Any = None                 # the emotion-wheel lexicon (the offline lexicon extractor needs it)
    cache_dir: Path | None = None       # extraction cache folder (None: the default one)
    use_cache: bool = True              # --no-cache turns it off
    paper_sampling: bool = False        # --paper-sampling: the published sampling instead of greedy decoding
    progress: bool | None = None        # None: a progress bar on a terminal only; False: never; True: always


class Extractor:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # False for extractors that are not the published LLM protocol: results say so.
    paper_protocol: ClassVar[bool] = True
    # True for extractors that answer free prompts (`complete`): the LLM steps beyond prompts A and B (the
    # synonym grouping, the closed-set prompts) need one.
    answers_prompts: ClassVar[bool] = False

    def __init__(self, options: Any = None, context: ExtractionContext | None = None):
        self.options = options if options is not None else self.Options()
        context = context if context is not None else ExtractionContext()
        self.lexicon = context.lexicon
        self.cache_dir = Path(context.cache_dir) if context.cache_dir else None
        self.use_cache = context.use_cache
        self.paper_sampling = context.paper_sampling
        self.progress = context.progress

    def identity(self) -> dict[str, Any]:
        """Backend, model, decoding, prompt hashes: recorded in every result."""
        return {"backend": self.name}

    def source_label(self) -> str:
        """How extracted labels name their origin in results, e.g. 'extractor:lexicon'."""
        model = getattr(self.options, "model", None)  # options are each backend's own dataclass
        return f"extractor:{self.name}" + (f":{model}" if model else "")

    def extract_ov(self, texts: Sequence[str]) -> list[str | None]:
        raise NotImplementedError

    def extract_sentiment(self, ov_answers: Sequence[str]) -> list[str | None]:
        raise NotImplementedError

    def complete(self, prompts: Sequence[str], what: str = "prompts", postprocess: bool = True) -> list[str | None]:
        """One (post-processed) answer per prompt, None where it failed; only where ``answers_prompts``."""
        raise UserError(f"extractor '{self.name}' does not answer free prompts (an LLM backend does: "
                        "vllm, hf or openai)")

    def preflight(self) -> None:
        """Cheap checks before any sample is answered or extracted (e.g. that a server is there); raise
        UserError when the extraction cannot work. Default: nothing to check."""

    def close(self) -> None:
        """Release models, servers, caches."""


EXTRACTORS: dict[str, type[Extractor]] = {}


def register_extractor(cls: type[Extractor]) -> type[Extractor]:
    EXTRACTORS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    try:
        from unibench.metrics import backends  # noqa: F401  registers built-in extractors
    except ImportError:
        pass


def make_extractor(name: str, args: str | None, **context: Any) -> Extractor:
    from unibench.modelargs import build_options

    _load_builtin()
    if name not in EXTRACTORS:
        known = ", ".join(sorted(EXTRACTORS)) or "none installed"
        raise UserError(f"unknown extractor '{name}' (known: {known})")
    cls = EXTRACTORS[name]
    options = build_options(cls.Options, args, "--extractor-args", owner=f"extractor '{name}'")
    return cls(options, ExtractionContext(**context))  # an unknown context key is a TypeError, never ignored
