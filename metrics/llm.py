"""What every LLM extraction backend shares: prompts, decoding, dedup, cache, progress, stats.

A backend (``hf``, ``vllm``, ``openai``) implements one method,
``generate(prompts) -> list[str | None]`` (one raw completion per prompt, a
single user turn of the model's chat template; ``None`` = that sample
failed), and may override ``generate_stream`` to hand back answers as they
finish. Everything else lives here:

* prompts A and B verbatim (:mod:`unibench.prompts`) and the
  published post-processing (:func:`postprocess_llm_answer`);
* identical prompts within a call are sent once (AffectGPT's released
  answers: 89.6k prompts, 46.1k distinct);
* the content-addressed cache (:mod:`unibench.metrics.cache`) is consulted
  first, and each arriving batch of answers is committed at once, so a
  killed run resumes without losing finished work;
* decoding is greedy by default; ``paper_sampling=true`` (``--paper-sampling``)
  gives the published temperature 0.7, top_p 0.8, repetition_penalty 1.05;
* a progress bar with ETA on stderr, and ``stats`` (hits, misses, failures,
  prompts/second) for the terminal and the run metadata.
"""
from __future__ import annotations

import hashlib
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol, Sequence

from unibench.strict import first_line  # noqa: F401  (re-exported)
from unibench.errors import UserError
from unibench.errors import log as _log
from unibench.metrics.extraction import Extractor
from unibench.labels import postprocess_llm_answer
from unibench.prompts import (PROMPT_A_OV_LABELS, PROMPT_B_SENTIMENT, PROMPT_GROUPING, prompt_a, prompt_b,
                                      prompt_hash)

DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"  # the protocol's extractor (spec §3); the user gives a path or hub id
DEFAULT_MAX_TOKENS = 512
PAPER_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05}
GREEDY = {"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0}

# (position in the prompt list, answer) pairs come back in groups; one group = one cache commit.
ResultGroup = list[tuple[int, "str | None"]]


@dataclass
class LLMOptions:
    """Options every LLM backend takes (``--extractor-args``)."""

    model: str                        # a model folder or hub id (protocol: Qwen2.5-7B-Instruct)
    paper_sampling: bool = False      # the published sampling instead of greedy decoding
    seed: int | None = None           # sampling seed (paper_sampling only)
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class Decoding:
    temperature: float
    top_p: float
    repetition_penalty: float
    max_tokens: int
    seed: int | None = None
    ignore_eos: bool = False          # benchmarks only: always generate max_tokens

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def as_dict(self) -> dict[str, Any]:
        """Canonical form: enters every cache key and result."""
        out = asdict(self)
        if self.greedy:
            out.pop("seed")  # a seed changes nothing under greedy decoding: keep cache hits
        if not self.ignore_eos:
            out.pop("ignore_eos")
        return out


def make_decoding(paper_sampling: bool, max_tokens: int, seed: int | None = None,
                  ignore_eos: bool = False) -> Decoding:
    if max_tokens < 1:
        raise UserError(f"--extractor-args: max_tokens must be at least 1, got {max_tokens}")
    base = PAPER_SAMPLING if paper_sampling else GREEDY
    return Decoding(max_tokens=max_tokens, seed=seed, ignore_eos=ignore_eos, **base)


# ---------------------------------------------------------------- helpers for backends

_FINGERPRINT_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json",
                      "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_fingerprints: dict[str, str] = {}


def model_fingerprint(model: str) -> str:
    """The model part of a cache key.

    A hub id stands for itself. A local folder is identified by its content,
    not its path (a moved folder keeps its cache; a retrained model in the
    same folder does not reuse stale answers): its config and tokenizer files
    and, per weight file, its size and 16 sampled 64 KiB blocks (hashing all
    15 GB of a 7B model would take longer than a short run).
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return model
    key = str(folder.resolve())
    if key in _fingerprints:
        return _fingerprints[key]
    digest = hashlib.sha256()
    for name in _FINGERPRINT_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    block = 1 << 16
    for path in sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as fh:
            for k in range(16):
                fh.seek(max(0, (size - block) * k // 15))
                digest.update(fh.read(block))
    value = f"{folder.resolve().name}@{digest.hexdigest()[:16]}"
    _fingerprints[key] = value
    return value


def is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("out of memory", "outofmemory", "no available memory for the cache blocks",
                                   "insufficient memory", "not enough memory"))


@dataclass
class ExtractionStats:
    """What an LLM extractor did in this run. Only work that happened is counted.

    prompts: asked; distinct: different prompts this run; hits: answered by the on-disk cache; misses: sent to
    the model and back (generated: answered; failed: no usable answer); unfinished: to be generated, but the
    run stopped first (error, interrupt); prompts_per_second: generated / seconds.
    """

    backend: str
    prompts: int = 0
    distinct: int = 0
    hits: int = 0
    misses: int = 0
    generated: int = 0
    failed: int = 0
    unfinished: int = 0
    seconds: float = 0.0
    prompts_per_second: float | None = None
    load_seconds: float = 0.0

    def worth_reporting(self) -> bool:
        """Whether any prompt was answered (cache or model) or tried: a run that failed before reports nothing."""
        return bool(self.hits or self.generated or self.failed)

    def line(self) -> str:
        """One terminal line: what the extraction cost and what the cache saved."""
        rate = f", {self.prompts_per_second:.2f} prompts/s" if self.prompts_per_second else ""
        failed = f", {self.failed} failed" if self.failed else ""
        unfinished = f", {self.unfinished} not done (the run stopped)" if self.unfinished else ""
        return (f"extraction [{self.backend}]: {self.prompts} prompts ({self.distinct} distinct): "
                f"{self.hits} cache hits, {self.generated} generated in {self.seconds:.1f} s{rate}{failed}"
                f"{unfinished}" + (f" (model load {self.load_seconds:.1f} s)" if self.load_seconds else ""))


def format_stats(stats: ExtractionStats) -> str:
    return stats.line()


def stats_worth_reporting(stats: ExtractionStats) -> bool:
    return stats.worth_reporting()


# ---------------------------------------------------------------- the base class

class GenerationPool(Protocol):
    """Generates an extractor's prompts elsewhere (e.g. on Ray actors, each holding a copy of the extractor):
    ``(index into prompts, raw answer or None)`` groups as they finish, like ``generate_stream``."""

    def generate_stream(self, prompts: list[str]) -> Iterator[ResultGroup]: ...


class LLMExtractor(Extractor):
    """Base of the LLM backends. Subclasses set ``name`` and ``Options`` and implement ``generate``."""

    Options: ClassVar[type] = LLMOptions
    paper_protocol: ClassVar[bool] = True
    answers_prompts: ClassVar[bool] = True
    # A backend that can only hand answers back per call commits one call at a time;
    # keep calls small enough that a kill loses little.
    stream_chunk: ClassVar[int] = 8

    # cache_dir, use_cache, paper_sampling, progress: from the run's ExtractionContext (Extractor.__init__)

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self.stats = ExtractionStats(backend=self.name)
        self.failure_reasons: Counter[str] = Counter()
        self._cache: Any = None
        self._cache_checked = False
        self._answered: dict[str, str] = {}  # cache key -> raw answer, this run (works with --no-cache too)
        self._seen: set[str] = set()
        # Where prompts are generated: None = this process (generate_stream); or a pool of copies of this
        # extractor elsewhere (unibench.ray_executor, --executor ray). Dedup, cache and statistics stay here.
        self.generation_pool: GenerationPool | None = None

    # ------------------------------------------------------------ for subclasses
    def generate(self, prompts: list[str]) -> list[str | None]:
        """Raw completion per prompt (single user turn); None = failed sample.

        Backends implement this or ``generate_stream``; each default is written
        in terms of the other.
        """
        if type(self).generate_stream is LLMExtractor.generate_stream:
            raise NotImplementedError(f"extractor '{self.name}' implements neither generate nor generate_stream")
        out: list[str | None] = [None] * len(prompts)
        for group in self.generate_stream(prompts):
            for i, text in group:
                out[i] = text
        return out

    def generate_stream(self, prompts: list[str]) -> Iterator[ResultGroup]:
        """Answers as they finish, in groups. Default: ``generate`` on chunks of ``stream_chunk``."""
        step = max(1, int(self.stream_chunk))
        for start in range(0, len(prompts), step):
            chunk = prompts[start:start + step]
            out = self.generate(chunk)
            if len(out) != len(chunk):
                raise RuntimeError(f"extractor '{self.name}' returned {len(out)} answers for {len(chunk)} prompts")
            yield [(start + j, text) for j, text in enumerate(out)]

    def prepare(self) -> None:
        """Load the model / connect, before the first generation (timed apart from it). Backends override."""

    def replicas(self) -> tuple[int, float]:
        """(engine replicas, GPUs each) this extractor's options ask for; (1, 0) = one engine, here. A backend
        with a data-parallel option overrides it; the run then spreads the prompts over that many Ray actors."""
        return 1, 0.0

    def model_identity(self) -> str:
        """What identifies the model in cache keys (content fingerprint of a local folder)."""
        return model_fingerprint(str(self.options.model))

    def note_failure(self, reason: str) -> None:
        """Backends record why a sample failed; the first reasons are shown to the user."""
        self.failure_reasons[reason] += 1

    # ------------------------------------------------------------ decoding and identity
    def decoding(self) -> Decoding:
        opts = self.options
        return make_decoding(bool(opts.paper_sampling or self.paper_sampling),
                             int(getattr(opts, "max_new_tokens", None) or opts.max_tokens),
                             seed=opts.seed, ignore_eos=bool(getattr(opts, "ignore_eos", False)))

    def identity(self) -> dict[str, Any]:
        dec = self.decoding()
        cache = self._open_cache()
        return {
            "backend": self.name,
            "model": str(self.options.model),
            "model_identity": self.model_identity(),
            "decoding": dec.as_dict(),
            "decoding_mode": "greedy" if dec.greedy else "paper-sampling (stochastic: one draw)",
            "chat": "single user turn, the model's chat template",
            "prompts": {"prompt_a": prompt_hash(PROMPT_A_OV_LABELS), "prompt_b": prompt_hash(PROMPT_B_SENTIMENT),
                        "grouping": prompt_hash(PROMPT_GROUPING)},
            "postprocess": ("strip; drop a leading 输入, 输出, 翻译, then output, Output, input, Input (each at most "
                            "once, in that order); strip; drop one leading ':' or '：'; remove newlines; strip"),
            "cache": str(cache.path) if cache is not None else "disabled",
            **self.backend_identity(),
        }

    def backend_identity(self) -> dict[str, Any]:
        """Backend-specific settings worth recording (never secrets)."""
        return {}

    def source_label(self) -> str:
        """How extracted labels name their origin in results, e.g. 'extractor:hf:Qwen2.5-7B-Instruct'."""
        return f"extractor:{self.name}:{self.options.model}"

    # ------------------------------------------------------------ the protocol steps
    def extract_ov(self, texts: Sequence[str]) -> list[str | None]:
        """Prompt A per answer -> label-list string (post-processed)."""
        return self.complete([prompt_a(t) for t in texts], what="prompt A")

    def extract_sentiment(self, ov_answers: Sequence[str]) -> list[str | None]:
        """Prompt B on prompt A's raw answer -> positive / negative / neutral (post-processed)."""
        return self.complete([prompt_b(a) for a in ov_answers], what="prompt B")

    def complete(self, prompts: Sequence[str], what: str = "prompts", postprocess: bool = True) -> list[str | None]:
        """Answer each prompt: dedup, cache first, generate the rest, store as they arrive.

        Also the entry point for other LLM steps (e.g. synonym grouping).
        Empty or failed answers are ``None`` and never cached.
        """
        from unibench.metrics.cache import cache_key

        prompts = [str(p) for p in prompts]
        if not prompts:
            return []
        distinct = list(dict.fromkeys(prompts))
        model_id = self.model_identity()
        dec = self.decoding().as_dict()
        keys = {p: cache_key(self.name, model_id, dec, p) for p in distinct}
        # Answers given earlier in this run (another checkpoint's identical answer), then the cache.
        raw = {p: self._answered[keys[p]] for p in distinct if keys[p] in self._answered}
        reused = len(raw)
        cache = self._open_cache()
        if cache is not None:
            found = cache.get_many([keys[p] for p in distinct if p not in raw])
            raw.update({p: found[keys[p]] for p in distinct if keys[p] in found})
        cached = len(raw) - reused
        todo = [p for p in distinct if p not in raw]
        st = self.stats
        st.prompts += len(prompts)
        st.distinct += sum(keys[p] not in self._seen for p in distinct)
        self._seen.update(keys.values())
        st.hits += cached  # misses are counted as the model's answers come back (_generate_todo)
        _log(f"extraction {what} [{self.name}:{model_id}]: {len(prompts)} prompts, {len(distinct)} distinct, "
             f"{reused} answered earlier in this run, {cached} cached, {len(todo)} to generate")
        if todo:
            self._generate_todo(todo, raw, keys, cache, model_id, what)
        for p in distinct:
            if p in raw:
                self._answered[keys[p]] = raw[p]
        out: list[str | None] = []
        for p in prompts:
            r = raw.get(p)
            out.append(None if r is None else (postprocess_llm_answer(r) if postprocess else r))
        return out

    def _generate_todo(self, todo: list[str], raw: dict[str, str], keys: dict[str, str], cache: Any,
                       model_id: str, what: str) -> None:
        from tqdm import tqdm

        st = self.stats
        loading = time.perf_counter()
        pool = self.generation_pool
        try:
            if pool is None:  # a pool's workers load their own copies of the model
                self.prepare()
        except BaseException:
            st.unfinished += len(todo)
            raise
        finally:
            st.load_seconds = round(st.load_seconds + time.perf_counter() - loading, 3)
        failed = 0
        before = sum(self.failure_reasons.values())
        started = time.perf_counter()
        done = 0
        # On stderr; progress None: only on a terminal (tqdm's own test), False: never (--no-progress), True: always.
        bar = tqdm(total=len(todo), desc=f"{what} [{self.name}]", unit="prompt", file=sys.stderr,
                   disable=None if self.progress is None else not self.progress, dynamic_ncols=True, smoothing=0.05)
        try:
            for group in (pool.generate_stream(todo) if pool is not None else self.generate_stream(todo)):
                rows = []
                bad = 0
                for i, text in group:
                    prompt = todo[i]
                    if text is None or not str(text).strip():
                        bad += 1
                        if text is not None:
                            self.note_failure("empty answer")
                        continue
                    raw[prompt] = str(text)
                    if cache is not None:
                        rows.append((keys[prompt], str(text)))
                if rows:
                    cache.put_many(rows, self.name, model_id)  # commit as answers arrive: a kill loses none
                done += len(group)  # counted once the group is in: the stats never run ahead of the work
                failed += bad
                if failed:
                    bar.set_postfix_str(f"{failed} failed", refresh=False)
                bar.update(len(group))
        finally:
            bar.close()
            elapsed = time.perf_counter() - started
            # Only prompts that came back count; a stopped run's others are "unfinished", never "generated".
            st.misses += done
            st.generated += done - failed
            st.failed += failed
            st.unfinished += len(todo) - done
            st.seconds = round(st.seconds + elapsed, 3)
            st.prompts_per_second = round(st.generated / st.seconds, 3) if st.generated and \
                st.seconds > 0 else None
        if failed:
            reasons = [r for r, _ in self.failure_reasons.most_common(3)]
            new = sum(self.failure_reasons.values()) - before
            _log(f"  {failed} of {len(todo)} {what} prompt(s) failed"
                 + (f" ({'; '.join(reasons)})" if reasons and new else "") + "; they are counted in the results")

    # ------------------------------------------------------------ cache
    def _open_cache(self) -> Any:
        if not self._cache_checked:
            if self.use_cache:
                from unibench.metrics.cache import ExtractionCache, default_extraction_cache_dir

                folder = Path(self.cache_dir) if self.cache_dir else default_extraction_cache_dir()
                self._cache = ExtractionCache(folder)  # a broken cache raises here, every time: never skipped
            self._cache_checked = True
        return self._cache

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        self._cache_checked = False
        self.release()

    def release(self) -> None:
        """Free the model / client. Backends override."""


