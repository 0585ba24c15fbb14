"""Our vLLM paths against a fake engine that enforces what vLLM's released source does (tests/fake_vllm.py).

Each test here fails on the code before the fix it names: bare frames for Qwen2.5-VL, Qwen3-Omni's
placeholders, engine start failures as tracebacks, version floors that were not real, the streaming
extractor's raw prompts and cumulative outputs.
"""
from __future__ import annotations

import re
import tomllib
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import fake_vllm
from media_fixtures import write_video, write_wav

from unibench.adapters.base import Sample, available_adapters, make_adapter
from unibench.adapters.hf_common import (DEFAULT_VIDEO_FPS, SampleMedia, VLLMNeed, check_vllm_version,
                                         version_tuple, vllm_request, vllm_video_metadata)
from unibench.errors import UserError
from unibench.metrics.backends.vllm_backend import VLLMExtractor, VLLMOptions

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = {"llava-next-video": "LlavaNextVideoForConditionalGeneration",
                "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
                "qwen2-audio": "Qwen2AudioForConditionalGeneration",
                "qwen2.5-omni": "Qwen2_5OmniModel",
                "qwen3-omni": "Qwen3OmniMoeForConditionalGeneration"}
NO_TEMPLATE = types.SimpleNamespace(chat_template=None)  # a checkpoint without a chat template: the fallback


def sample(tmp_path: Path, name: str = "s1", subtitle: str = "I am fine.") -> Sample:
    return Sample(name=name, task="mer2023", subtitle=subtitle,
                  question="Please recognize all possible emotional states of the character.",
                  video=write_video(tmp_path / f"{name}.mp4"), audio=write_wav(tmp_path / f"{name}.wav"))


def vllm_adapter(name: str, args: str = ""):
    adapter = make_adapter(name, "path=org/model,backend=vllm,num_frames=4" + (f",{args}" if args else ""))
    adapter._processor = NO_TEMPLATE  # vLLM mode needs only the prompt from the processor
    return adapter


# ---------------------------------------------------------------- 1. Qwen2.5-VL: (frames, metadata)

def test_the_fake_refuses_bare_frames_for_qwen25_vl(monkeypatch):
    """What the adapter sent before the fix, and how vLLM answers it."""
    vllm = fake_vllm.install(monkeypatch, architecture=ARCHITECTURE["qwen2.5-vl"])
    llm = vllm.LLM(model="m", limit_mm_per_prompt={"video": 1})
    bare = {"prompt": "<|vision_start|><|video_pad|><|vision_end|>hi",
            "multi_modal_data": {"video": np.zeros((4, 8, 8, 3), np.uint8)}}
    with pytest.raises(ValueError, match="Video metadata is required but not found in mm input"):
        llm.generate([bare], vllm.SamplingParams(temperature=0.0))


def test_qwen25_vl_sends_frames_with_the_loaders_metadata(tmp_path, monkeypatch):
    vllm = fake_vllm.install(monkeypatch, architecture=ARCHITECTURE["qwen2.5-vl"])
    adapter = vllm_adapter("qwen2.5-vl")
    assert adapter.answer([sample(tmp_path), sample(tmp_path, "s2", subtitle="")]) == ["happy", "happy"]
    first = vllm.state.requests[0]
    frames, meta = first["multi_modal_data"]["video"]
    assert frames.shape == (4, 32, 32, 3)
    # write_video: 8 frames at 8 fps, 4 sampled uniformly
    assert meta == {"fps": 8.0, "duration": 1.0, "total_num_frames": 8, "frames_indices": [0, 2, 5, 7],
                    "video_backend": "pyav", "do_sample_frames": False}
    assert first["mm_processor_kwargs"] == {"do_sample_frames": False}


def test_metadata_built_from_the_frame_count_when_the_file_has_none():
    frames = np.zeros((5, 4, 4, 3), np.uint8)
    meta = vllm_video_metadata(SampleMedia(text="t", video=frames, video_meta=None))
    assert meta == {"fps": DEFAULT_VIDEO_FPS, "duration": 5 / DEFAULT_VIDEO_FPS, "total_num_frames": 5,
                    "frames_indices": [0, 1, 2, 3, 4], "video_backend": "pyav", "do_sample_frames": False}
    # the loader's metadata is used as it is when it matches the frames
    known = {"total_num_frames": 100, "fps": 25.0, "duration": 4.0, "frames_indices": [0, 25, 50, 74, 99]}
    assert vllm_video_metadata(SampleMedia(text="t", video=frames, video_meta=known))["frames_indices"] == \
        [0, 25, 50, 74, 99]


def test_models_without_the_rule_keep_bare_frames():
    frames = np.zeros((4, 4, 4, 3), np.uint8)
    req = vllm_request("P", SampleMedia(text="t", video=frames))
    assert req["multi_modal_data"]["video"] is frames and "mm_processor_kwargs" not in req
    assert not available_adapters()["llava-next-video"].vllm_video_metadata
    assert available_adapters()["qwen2.5-vl"].vllm_video_metadata


# ---------------------------------------------------------------- 5. placeholders vLLM expects

@pytest.mark.parametrize("name", sorted(ARCHITECTURE))
def test_fallback_prompts_carry_the_placeholders_vllm_replaces(name, tmp_path, monkeypatch):
    vllm = fake_vllm.install(monkeypatch, architecture=ARCHITECTURE[name])
    adapter = vllm_adapter(name)
    assert adapter.answer([sample(tmp_path)]) == ["happy"]
    (request,) = vllm.state.requests
    assert set(request["multi_modal_data"]) == {k for k in ("video", "audio") if k in adapter.inputs}


def test_qwen3_omni_fallback_uses_its_own_tokens():
    prompt = vllm_adapter("qwen3-omni").prompt(SampleMedia(text="Q", video=np.zeros((2, 4, 4, 3), np.uint8),
                                                           audio=np.zeros(16, np.float32)))
    assert prompt == ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
                      "<|audio_start|><|audio_pad|><|audio_end|>Q<|im_end|>\n<|im_start|>assistant\n")
    assert "<|AUDIO|>" in vllm_adapter("qwen2.5-omni").prompt(SampleMedia(text="Q", audio=np.zeros(16, np.float32)))


# ---------------------------------------------------------------- 2. version floors

FLOORS = {"llava-next-video": "0.6.1", "qwen2-audio": "0.6.4", "qwen2.5-omni": "0.8.5", "qwen2.5-vl": "0.10.0",
          "qwen3-omni": "0.11.1"}


def test_every_vllm_adapter_states_its_floor():
    vllm_adapters = {n for n, c in available_adapters().items() if getattr(c, "vllm_supported", False)}
    assert vllm_adapters == set(FLOORS)
    assert {n: available_adapters()[n].vllm_min_version for n in FLOORS} == FLOORS


def test_the_extra_requires_the_release_every_adapter_works_with():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    (requirement,) = extra
    floor = re.fullmatch(r"vllm>=([\d.]+)", requirement).group(1)
    assert version_tuple(floor) == max(version_tuple(v) for v in FLOORS.values())


def below(version: str) -> str:
    major, minor, patch = version_tuple(version)
    return f"{major}.{minor}.{patch - 1}" if patch else f"{major}.{minor - 1}.9"


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_an_older_vllm_is_refused_in_one_line_before_loading(name, tmp_path, monkeypatch):
    vllm = fake_vllm.install(monkeypatch, architecture=ARCHITECTURE[name], version=below(FLOORS[name]))
    with pytest.raises(UserError) as info:
        vllm_adapter(name).answer([sample(tmp_path)])
    msg = str(info.value)
    assert f"needs vLLM >= {FLOORS[name]}" in msg and f"installed: {below(FLOORS[name])}" in msg
    assert "\n" not in msg and vllm.state.llms == []  # refused before the engine was built
    vllm = fake_vllm.install(monkeypatch, architecture=ARCHITECTURE[name], version=FLOORS[name])
    assert vllm_adapter(name).answer([sample(tmp_path)]) == ["happy"]


def test_version_compare_reads_release_numbers():
    assert version_tuple("0.11.1rc2.dev5+gabc") == (0, 11, 1)
    assert version_tuple("0.10.0") < version_tuple("0.10.1.post1") < version_tuple("0.11")
    check_vllm_version(VLLMNeed("x", "0.10.0"), None)  # unknown version: not refused
    check_vllm_version(VLLMNeed("x", "0.10.0"), "0.10.0+cu128")


# ---------------------------------------------------------------- 3. engine start failures

def test_adapter_engine_core_failure_is_one_line_with_the_fix(tmp_path, monkeypatch):
    fake_vllm.install(monkeypatch, architecture=ARCHITECTURE["qwen2-audio"], kv_capacity_tokens=8192)
    with pytest.raises(UserError) as info:
        vllm_adapter("qwen2-audio").answer([sample(tmp_path)])
    msg = str(info.value)
    assert "engine did not start" in msg and "\n" not in msg
    assert "max_model_len (now the model default)" in msg and "gpu_memory_utilization (now 0.9)" in msg
    assert "tensor_parallel_size (now 1)" in msg
    # the fix it names works: a context the KV cache holds
    fake_vllm.install(monkeypatch, architecture=ARCHITECTURE["qwen2-audio"], kv_capacity_tokens=8192)
    adapter = vllm_adapter("qwen2-audio", "max_model_len=8192")
    assert adapter.answer([sample(tmp_path)]) == ["happy"]
    assert adapter._engine.kwargs["max_model_len"] == 8192


def test_adapter_kv_cache_too_small_in_process(tmp_path, monkeypatch):
    fake_vllm.install(monkeypatch, architecture=ARCHITECTURE["qwen2-audio"], kv_capacity_tokens=8192,
                      engine_core_process=False)
    with pytest.raises(UserError) as info:
        vllm_adapter("qwen2-audio", "gpu_memory_utilization=0.5").answer([sample(tmp_path)])
    msg = str(info.value)
    assert msg.startswith("vLLM: the KV cache cannot hold one request") and "max seq len (32768)" in msg
    assert "gpu_memory_utilization (now 0.5)" in msg and "\n" not in msg


def test_adapter_out_of_memory_keeps_its_hint(tmp_path, monkeypatch):
    vllm = fake_vllm.install(monkeypatch, architecture=ARCHITECTURE["qwen2-audio"])

    def oom(**kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(vllm, "LLM", oom)
    with pytest.raises(UserError, match=r"^vLLM: GPU out of memory starting 'org/model' .*max_model_len"):
        vllm_adapter("qwen2-audio").answer([sample(tmp_path)])


def test_max_model_len_stays_out_of_the_resume_key():
    from unibench.inference import OPERATIONAL_OPTIONS

    cls = available_adapters()["qwen2.5-vl"]
    assert "max_model_len" in set(cls.resume_ignore) | OPERATIONAL_OPTIONS
    with pytest.raises(UserError, match="max_model_len=0: must be at least 1"):
        make_adapter("qwen2.5-vl", "path=a/b,backend=vllm,max_model_len=0")


def extractor(**options) -> VLLMExtractor:
    ext = VLLMExtractor(VLLMOptions(model="/models/q", **options))
    ext.use_cache, ext.progress = False, False
    return ext


def test_extractor_engine_core_failure_is_one_line(monkeypatch):
    fake_vllm.install(monkeypatch, kv_capacity_tokens=4096)
    with pytest.raises(UserError) as info:
        extractor(tensor_parallel_size=2).extract_ov(["a"])
    msg = str(info.value)
    assert msg.startswith("vllm: the engine did not start for '/models/q'") and "\n" not in msg
    assert "max_model_len (now the model default)" in msg and "tensor_parallel_size (now 2)" in msg
    fake_vllm.install(monkeypatch, kv_capacity_tokens=4096)
    assert extractor(max_model_len=4096).extract_ov(["a"]) == ["[a]"]


def test_extractor_kv_cache_too_small_in_process(monkeypatch):
    fake_vllm.install(monkeypatch, kv_capacity_tokens=4096, engine_core_process=False)
    with pytest.raises(UserError) as info:
        extractor().extract_ov(["a"])
    msg = str(info.value)
    assert msg.startswith("vllm: the KV cache cannot hold one request of the context length for '/models/q'")
    assert "estimated maximum model length is 4096" in msg and "lower --extractor-args max_model_len" in msg


# ---------------------------------------------------------------- 4. the streaming extractor path

REASONS = [f"r{i}" for i in range(7)]


def test_streaming_asks_for_final_outputs_only(monkeypatch):
    vllm = fake_vllm.install(monkeypatch)
    assert extractor().extract_ov(REASONS) == [f"[{r}]" for r in REASONS]
    assert len(vllm.state.added) == 7 and vllm.state.requests == []  # the stepping path ran
    assert vllm.state.unfinished_outputs_sent == 0  # no cumulative text for running requests


def test_cumulative_outputs_without_final_only(monkeypatch):
    """A vLLM without RequestOutputKind: every running request comes back at each step; answers still right."""
    vllm = fake_vllm.install(monkeypatch)
    monkeypatch.delattr(vllm, "RequestOutputKind")
    monkeypatch.delattr(vllm.sampling_params, "RequestOutputKind")
    assert extractor().extract_ov(REASONS) == [f"[{r}]" for r in REASONS]
    assert vllm.state.unfinished_outputs_sent == 7


def test_add_request_refusing_prompts_falls_back_to_generate(monkeypatch):
    streamed = fake_vllm.install(monkeypatch)
    expected = extractor().extract_ov(REASONS)
    refused = fake_vllm.install(monkeypatch, add_request_takes_prompts=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extractor().extract_ov(REASONS) == expected  # identical results
    assert refused.state.added == [] and len(refused.state.requests) == 7  # one llm.generate call
    assert len(streamed.state.added) == 7


def test_batch_submission_still_uses_generate(monkeypatch):
    vllm = fake_vllm.install(monkeypatch)
    assert extractor(batch_size=3).extract_ov(REASONS) == [f"[{r}]" for r in REASONS]
    assert vllm.state.added == [] and len(vllm.state.requests) == 7
