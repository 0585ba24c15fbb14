"""`vllm` backend: request assembly and batching with vLLM absent (a fake engine is injected)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest

from unibench.errors import MissingExtraError, UserError
from unibench.metrics.backends.vllm_backend import (VLLMExtractor, VLLMOptions, batch_ranges, engine_kwargs,
                                                    sampling_kwargs)
from unibench.metrics.cache import ExtractionCache
from unibench.metrics.extraction import make_extractor
from unibench.metrics.llm import make_decoding


class FakeTokenizer:
    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert len(messages) == 1 and messages[0]["role"] == "user" and not tokenize and add_generation_prompt
        return f"<user>{messages[0]['content']}</user><assistant>"


def answer(text: str) -> str:
    reason = text.split("Input: ")[-1].split("; Output:")[0]
    return f"Output: [{reason}]"


class Out:
    def __init__(self, rid, text, finished=True):
        self.request_id, self.finished = rid, finished
        self.outputs = [types.SimpleNamespace(text=text)]


class FakeEngine:
    """Finishes up to three requests per step, newest first (the order must not matter)."""

    def __init__(self, fail_after_steps: int | None = None):
        self.queue: list[tuple[str, str]] = []
        self.added: list[str] = []
        self.aborted: list[str] = []
        self.steps = 0
        self.fail_after_steps = fail_after_steps

    def add_request(self, rid, prompt, params):
        self.queue.append((rid, prompt))
        self.added.append(prompt)

    def has_unfinished_requests(self):
        return bool(self.queue)

    def step(self):
        self.steps += 1
        if self.fail_after_steps is not None and self.steps > self.fail_after_steps:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        done, self.queue = self.queue[:3], self.queue[3:]
        return [Out(rid, "", finished=False) for rid, _ in self.queue[:1]] + \
            [Out(rid, answer(p)) for rid, p in reversed(done)]

    def abort_request(self, ids):
        self.aborted.extend(ids)
        self.queue = [(r, p) for r, p in self.queue if r not in ids]


class FakeLLM:
    def __init__(self, streaming: bool = True, **engine):
        self.llm_engine = FakeEngine(**engine) if streaming else None
        self.generate_calls: list[list[str]] = []

    def get_tokenizer(self):
        return FakeTokenizer()

    def generate(self, prompts, params, use_tqdm=True):
        self.generate_calls.append(list(prompts))
        return [Out(str(i), answer(p)) for i, p in enumerate(prompts)]


def fake_params(**kwargs):
    return dict(kwargs)


def vllm_ext(llm, cache_dir=None, **options):
    ext = VLLMExtractor(VLLMOptions(model="qwen-fake", **options), engine=llm, sampling_params=fake_params)
    ext.cache_dir, ext.use_cache, ext.progress = cache_dir, cache_dir is not None, False
    return ext


REASONS = [f"r{i}" for i in range(20)]


def test_plain_assembly_functions():
    o = VLLMOptions(model="/m", tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=4096,
                    dtype="bfloat16")
    assert engine_kwargs(o) == {"model": "/m", "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5,
                                "dtype": "bfloat16", "trust_remote_code": False, "enforce_eager": False,
                                "max_model_len": 4096}
    assert "max_model_len" not in engine_kwargs(VLLMOptions(model="/m"))
    assert sampling_kwargs(make_decoding(False, 512)) == {"temperature": 0.0, "top_p": 1.0,
                                                         "repetition_penalty": 1.0, "max_tokens": 512}
    assert sampling_kwargs(make_decoding(True, 512, seed=3)) == {"temperature": 0.7, "top_p": 0.8,
                                                                "repetition_penalty": 1.05, "max_tokens": 512,
                                                                "seed": 3}
    assert sampling_kwargs(make_decoding(False, 64, ignore_eos=True))["min_tokens"] == 64
    assert [list(r) for r in batch_ranges(5, 2)] == [[0, 1], [2, 3], [4]]
    assert [list(r) for r in batch_ranges(5, 0)] == [[0, 1, 2, 3, 4]]
    assert batch_ranges(0, 8) == []


def test_batches_of_eight_the_published_way():
    llm = FakeLLM(streaming=True)
    ext = vllm_ext(llm, batch_size=8)
    out = ext.extract_ov(REASONS + REASONS[:5])  # 25 prompts, 20 distinct
    assert out == [f"[{r}]" for r in REASONS + REASONS[:5]]
    assert [len(c) for c in llm.generate_calls] == [8, 8, 4]
    assert llm.llm_engine.added == []  # the streaming path is not used with a batch size
    first = llm.generate_calls[0][0]
    assert first.startswith("<user>Please assume the role") and first.endswith("Input: r0; Output: </user><assistant>")


def test_whole_run_streams_and_commits_as_requests_finish(tmp_path):
    llm = FakeLLM(streaming=True)
    ext = vllm_ext(llm, cache_dir=tmp_path / "c")
    out = ext.extract_ov(REASONS * 2)
    assert out == [f"[{r}]" for r in REASONS * 2]
    engine = llm.llm_engine
    assert len(engine.added) == 20 and llm.generate_calls == []  # everything submitted at once, deduplicated
    assert engine.steps == 7
    assert ext.stats.misses == 20 and ext.stats.hits == 0
    ext.close()
    with ExtractionCache(tmp_path / "c") as cache:
        assert cache.count() == 20


def test_whole_run_without_stepping_api_uses_one_generate_call():
    llm = FakeLLM(streaming=False)
    ext = vllm_ext(llm)
    assert ext.extract_ov(REASONS) == [f"[{r}]" for r in REASONS]
    assert [len(c) for c in llm.generate_calls] == [20]


def test_sampling_params_follow_decoding():
    seen = []

    def record(**kwargs):
        seen.append(kwargs)
        return kwargs

    ext = VLLMExtractor(VLLMOptions(model="m", paper_sampling=True, seed=5), engine=FakeLLM(), sampling_params=record)
    ext.use_cache, ext.progress = False, False
    ext.extract_ov(["a"])
    assert seen == [{"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05, "max_tokens": 512, "seed": 5}]
    assert ext.identity()["batch_size"] == "all"


def test_oom_while_generating_keeps_finished_answers(tmp_path):
    llm = FakeLLM(streaming=True, fail_after_steps=2)
    ext = vllm_ext(llm, cache_dir=tmp_path / "c", max_model_len=8192)
    with pytest.raises(UserError) as info:
        ext.extract_ov(REASONS)
    msg = str(info.value)
    assert "GPU out of memory" in msg and "max_model_len (now 8192)" in msg and "\n" not in msg
    assert len(llm.llm_engine.aborted) == 14  # the unfinished requests are released
    ext.close()
    with ExtractionCache(tmp_path / "c") as cache:
        assert cache.count() == 6  # two steps of three: kept for the rerun


def test_oom_at_engine_start(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)

    def boom(**kwargs):
        raise ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization`")

    fake.LLM, fake.SamplingParams = boom, fake_params
    monkeypatch.setitem(sys.modules, "vllm", fake)
    ext = make_extractor("vllm", "model=/models/q,gpu_memory_utilization=0.3", use_cache=False, progress=False)
    with pytest.raises(UserError, match="GPU out of memory starting the engine.*gpu_memory_utilization"):
        ext.extract_ov(["a"])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_vllm_names_the_extra():
    with pytest.raises(MissingExtraError) as info:
        make_extractor("vllm", "model=/models/q")
    assert str(info.value) == "the 'vllm' extractor needs the 'vllm' package: pip install 'mer-unibench[vllm]'"


def test_bad_options():
    with pytest.raises(UserError, match="gpu_memory_utilization"):
        VLLMExtractor(VLLMOptions(model="m", gpu_memory_utilization=1.5), engine=FakeLLM())
    with pytest.raises(UserError, match="batch_size"):
        VLLMExtractor(VLLMOptions(model="m", batch_size=-1), engine=FakeLLM())
