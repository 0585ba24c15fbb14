"""vLLM engine start failures as one line with the fix. Leaf module: the vLLM adapters and the vLLM
extractor both read their engine's errors with it.

vLLM >= 0.11 starts its engine core in another process: a failure there reaches the caller as
``RuntimeError('Engine core initialization failed...')`` (the cause is only in vLLM's log above it); a KV cache
too small for the context is a ``ValueError`` naming max_model_len / the KV cache (older releases: "larger
than the maximum number of tokens that can be stored in KV cache").
"""
from __future__ import annotations


def sizing_hint(flag: str, max_model_len: int | None, gpu_memory_utilization: float, tensor_parallel_size: int) -> str:
    return (f"lower {flag} max_model_len (now {max_model_len or 'the model default'}), raise "
            f"gpu_memory_utilization (now {gpu_memory_utilization}) or use more GPUs with "
            f"tensor_parallel_size (now {tensor_parallel_size})")


def is_kv_cache_too_small(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, ValueError) and "kv cache" in text and (
        "max_model_len" in text or "max seq len" in text or "larger than the maximum number of tokens" in text)


def start_problem(exc: BaseException, subject: str, sizing: str, detail: str) -> str | None:
    """The line for a KV cache too small or an engine core that did not start; None for anything else.
    ``subject``: what was being started, e.g. "'Qwen/Qwen2.5-7B-Instruct'"; ``detail``: the error's first line."""
    if is_kv_cache_too_small(exc):
        return f"the KV cache cannot hold one request of the context length for {subject} ({detail}); {sizing}"
    if isinstance(exc, RuntimeError) and "engine core initialization failed" in str(exc).lower():
        return (f"the engine did not start for {subject} (its log above says why; most often GPU memory or a KV "
                f"cache too small for the context); {sizing}")
    return None
