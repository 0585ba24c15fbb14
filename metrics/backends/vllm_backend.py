"""`vllm`: the offline vLLM engine, the fast way to run the extractor LLM on a GPU.

    pip install 'mer-unibench[vllm]'
    --extractor vllm --extractor-args model=/models/Qwen2.5-7B-Instruct,tensor_parallel_size=2

The published code sends 8 prompts at a time; here every (deduplicated,
uncached) prompt of a call is submitted at once (``batch_size=0``, the
default) so the engine's continuous batching keeps the GPU full. Answers are
collected as each request finishes and committed to the cache right away,
so a killed run loses only the requests still running. ``batch_size=8``
reproduces the published submission pattern (for the benchmark).

Request assembly and batching are plain functions below, testable without
vLLM (the tests inject a fake engine).
"""
from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from unibench.errors import MissingExtraError, UserError
from unibench.metrics.backends.hf import chat_text
from unibench.metrics.extraction import register_extractor
from unibench.metrics.llm import Decoding, LLMExtractor, LLMOptions, ResultGroup, first_line, is_out_of_memory
from unibench.vllm_errors import sizing_hint, start_problem

_request_ids = itertools.count()


@dataclass
class VLLMOptions(LLMOptions):
    batch_size: int = 0               # prompts per submission; 0 = all of a call at once (published: 8)
    tensor_parallel_size: int = 1
    # engine replicas, each on tensor_parallel_size GPUs: the prompts are spread over them as Ray actors
    # (vLLM's offline data parallelism is one engine per replica too); answers do not change
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None  # None = the model's own limit (lower it to fit a small GPU)
    dtype: str = "auto"
    trust_remote_code: bool = False
    enforce_eager: bool = False       # skip CUDA-graph capture (faster start, slower run)
    stream: bool = True               # collect finished requests one engine step at a time (resumable)
    ignore_eos: bool = False          # benchmarks only: always generate max_tokens


# ---------------------------------------------------------------- plain functions (no vLLM needed)

def engine_kwargs(o: VLLMOptions) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM``."""
    kwargs: dict[str, Any] = {"model": str(o.model), "tensor_parallel_size": o.tensor_parallel_size,
                              "gpu_memory_utilization": o.gpu_memory_utilization, "dtype": o.dtype,
                              "trust_remote_code": o.trust_remote_code, "enforce_eager": o.enforce_eager}
    if o.max_model_len:
        kwargs["max_model_len"] = o.max_model_len
    return kwargs


def sampling_kwargs(dec: Decoding) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` (greedy is temperature 0)."""
    kwargs: dict[str, Any] = {"temperature": dec.temperature, "top_p": dec.top_p,
                              "repetition_penalty": dec.repetition_penalty, "max_tokens": dec.max_tokens}
    if not dec.greedy and dec.seed is not None:
        kwargs["seed"] = dec.seed
    if dec.ignore_eos:
        kwargs.update(ignore_eos=True, min_tokens=dec.max_tokens)
    return kwargs


def batch_ranges(n: int, batch_size: int) -> list[range]:
    """Submission groups: ``batch_size`` 0 means one group holding everything."""
    if n <= 0:
        return []
    size = n if batch_size <= 0 else batch_size
    return [range(start, min(n, start + size)) for start in range(0, n, size)]


def output_text(request_output: Any) -> str | None:
    outputs = getattr(request_output, "outputs", None) or []
    return outputs[0].text if outputs else None


def run_in_batches(llm: Any, texts: list[str], params: Any, batch_size: int) -> Iterator[ResultGroup]:
    """``llm.generate`` per group; the engine returns answers in submission order."""
    for group in batch_ranges(len(texts), batch_size):
        outs = llm.generate([texts[i] for i in group], params, use_tqdm=False)
        if len(outs) != len(group):
            raise RuntimeError(f"vllm returned {len(outs)} outputs for {len(group)} prompts")
        yield [(i, output_text(out)) for i, out in zip(group, outs)]


def can_stream(llm: Any) -> bool:
    engine = getattr(llm, "llm_engine", None)
    return all(hasattr(engine, a) for a in ("add_request", "step", "has_unfinished_requests"))


def final_only_kind() -> Any:
    """``RequestOutputKind.FINAL_ONLY`` where the installed vLLM has it (None otherwise).

    Without it an engine step hands back every running request's cumulative text; with it only the
    finished ones, which is all the streaming loop reads.
    """
    try:
        from vllm.sampling_params import RequestOutputKind
    except ImportError:
        try:
            from vllm import RequestOutputKind  # type: ignore[attr-defined,no-redef]
        except ImportError:
            return None
    return getattr(RequestOutputKind, "FINAL_ONLY", None)


class StreamRefused(Exception):
    """``llm_engine.add_request`` does not take a plain prompt here (a vLLM without that path)."""


def run_streaming(llm: Any, texts: list[str], params: Any) -> Iterator[ResultGroup]:
    """Submit everything, then step the engine and hand back requests as they finish.

    Raises :class:`StreamRefused` before anything is yielded when the engine refuses the first request.
    """
    engine = llm.llm_engine
    ids: dict[str, int] = {}
    prefix = f"unibench-{next(_request_ids)}"
    try:
        for i, text in enumerate(texts):
            rid = f"{prefix}-{i}"
            try:
                engine.add_request(rid, text, params)
            except (TypeError, ValueError) as exc:
                if ids:  # the engine took earlier prompts: a real error with this one
                    raise
                raise StreamRefused(str(exc)) from exc
            ids[rid] = i
        while ids and engine.has_unfinished_requests():
            group: ResultGroup = []
            for out in engine.step():
                if getattr(out, "finished", False) and out.request_id in ids:
                    group.append((ids.pop(out.request_id), output_text(out)))
            if group:
                yield group
        if ids:  # the engine dropped requests: count them as failed samples
            yield [(i, None) for i in ids.values()]
            ids.clear()
    finally:
        if ids and hasattr(engine, "abort_request"):  # interrupted: free the engine's slots
            try:
                engine.abort_request(list(ids))
            except Exception:  # aborting must not mask the original error
                pass


def stream_or_generate(llm: Any, texts: list[str], params: Any) -> Iterator[ResultGroup]:
    """The stepping path where the engine takes plain prompts, else one ``llm.generate`` call (same answers)."""
    try:
        yield from run_streaming(llm, texts, params)
    except StreamRefused:
        yield from run_in_batches(llm, texts, params, 0)


# ---------------------------------------------------------------- the backend

@register_extractor
class VLLMExtractor(LLMExtractor):
    name = "vllm"
    description = "offline vLLM engine, whole run submitted at once (GPU; pip install 'mer-unibench[vllm]')"
    Options = VLLMOptions

    def __init__(self, options: Any = None, context: Any = None, engine: Any = None,
                 sampling_params: Callable[..., Any] | None = None):
        super().__init__(options, context)
        o = self.options
        if engine is None and importlib.util.find_spec("vllm") is None:
            raise MissingExtraError("vllm", "vllm", what="the 'vllm' extractor")
        if o.batch_size < 0:
            raise UserError(f"--extractor-args: batch_size must be 0 (all at once) or more, got {o.batch_size}")
        if not 0 < o.gpu_memory_utilization <= 1:
            raise UserError("--extractor-args: gpu_memory_utilization must be in (0, 1], "
                            f"got {o.gpu_memory_utilization}")
        if o.tensor_parallel_size < 1:
            raise UserError(f"--extractor-args: tensor_parallel_size must be at least 1, got {o.tensor_parallel_size}")
        if o.data_parallel_size < 1:
            raise UserError(f"--extractor-args: data_parallel_size must be at least 1, got {o.data_parallel_size}")
        if o.max_model_len is not None and o.max_model_len < 1:
            raise UserError(f"--extractor-args: max_model_len must be at least 1, got {o.max_model_len}")
        self._llm = engine
        self._sampling_params = sampling_params
        self._tokenizer: Any = None

    def backend_identity(self) -> dict[str, Any]:
        o = self.options
        return {"batch_size": o.batch_size or "all", "tensor_parallel_size": o.tensor_parallel_size,
                "data_parallel_size": o.data_parallel_size, "dtype": o.dtype, "max_model_len": o.max_model_len}

    def replicas(self) -> tuple[int, float]:
        o = self.options
        return (o.data_parallel_size, float(o.tensor_parallel_size)) if o.data_parallel_size > 1 else (1, 0.0)

    def _load(self) -> None:
        if self._llm is None:
            try:
                import vllm
            except ImportError:
                raise MissingExtraError("vllm", "vllm", what="the 'vllm' extractor") from None
            try:
                self._llm = vllm.LLM(**engine_kwargs(self.options))
            except UserError:
                raise
            except Exception as exc:
                raise self._engine_error(exc, "starting the engine for") from None
            self._sampling_params = self._sampling_params or vllm.SamplingParams
        if self._sampling_params is None:
            from vllm import SamplingParams

            self._sampling_params = SamplingParams
        if self._tokenizer is None:
            self._tokenizer = self._llm.get_tokenizer()
            if not getattr(self._tokenizer, "chat_template", None):
                raise UserError(f"vllm: the tokenizer of '{self.options.model}' has no chat template; the protocol "
                                "asks an instruction-tuned model through its chat template")

    def _engine_error(self, exc: BaseException, doing: str) -> UserError:
        """One line with the fix. vLLM >= 0.11 starts its engine core in another process: a failure there
        arrives as RuntimeError('Engine core initialization failed...'), the cause only in vLLM's log; a KV
        cache too small for the context is a ValueError naming max_model_len / the KV cache."""
        o = self.options
        if is_out_of_memory(exc):
            return UserError(f"vllm: GPU out of memory {doing} '{o.model}' ({first_line(exc)}); lower "
                             f"max_model_len (now {o.max_model_len or 'model default'}) or gpu_memory_utilization "
                             f"(now {o.gpu_memory_utilization}), or raise tensor_parallel_size")
        problem = start_problem(exc, f"'{o.model}'", sizing_hint("--extractor-args", o.max_model_len,
                                                                 o.gpu_memory_utilization, o.tensor_parallel_size),
                                first_line(exc))
        if problem:
            return UserError(f"vllm: {problem}")
        return UserError(f"vllm: error {doing} '{o.model}': {type(exc).__name__}: {first_line(exc)}")

    def generate_stream(self, prompts: list[str]) -> Iterator[ResultGroup]:
        self._load()
        texts = [chat_text(self._tokenizer, p) for p in prompts]
        o = self.options
        kwargs = sampling_kwargs(self.decoding())
        streaming = o.batch_size == 0 and o.stream and can_stream(self._llm)
        kind = final_only_kind() if streaming else None
        if kind is not None:  # finished requests only, not every running one's text at every step
            kwargs["output_kind"] = kind
        params = self._sampling_params(**kwargs)
        if streaming:
            results = stream_or_generate(self._llm, texts, params)
        else:
            results = run_in_batches(self._llm, texts, params, o.batch_size)
        try:
            yield from results
        except UserError:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise self._engine_error(exc, "generating with") from None
            raise

    def prepare(self) -> None:
        self._load()

    def release(self) -> None:
        self._llm = None
        self._tokenizer = None
