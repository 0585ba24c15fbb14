"""A fake ``vllm`` package that enforces the rules of vLLM's released source, for tests without a GPU.

``install(monkeypatch, ...)`` puts it in ``sys.modules`` (``vllm`` and ``vllm.sampling_params``). What it
enforces, each as the real engine reports it:

* architectures exist only from the release that added them (``ARCHITECTURE_SINCE``); older: ValueError;
* Qwen2.5-VL's processor needs video metadata: a bare frame array is refused ("Video metadata is required
  but not found in mm input"); metadata must carry vLLM's loader keys only, with frames_indices matching
  the frames, and frames must not be sampled again (do_sample_frames off);
* every multimodal item needs its model's placeholder in the prompt, once (Qwen3-Omni: ``<|video_pad|>``,
  ``<|audio_pad|>`` inside ``<|vision_start|>``/``<|audio_start|>`` ...);
* engine start: a KV cache smaller than max_model_len is a ValueError (``kv_in_process``: the engine in
  this process) or, with the engine core in its own process (vLLM >= 0.11), RuntimeError("Engine core
  initialization failed...");
* SamplingParams takes only its real keyword arguments; ``RequestOutputKind.FINAL_ONLY`` makes an engine
  step return only finished requests, otherwise every running request comes back at every step;
* ``llm_engine.add_request`` refuses plain prompt strings when ``add_request_takes_prompts`` is False
  (a vLLM that only takes processed requests there).
"""
from __future__ import annotations

import enum
import importlib.machinery
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Release that added each architecture (vLLM release notes / PRs; see the README's vLLM table).
ARCHITECTURE_SINCE = {
    "LlavaNextVideoForConditionalGeneration": "0.6.1",
    "Qwen2AudioForConditionalGeneration": "0.6.4",
    "Qwen2_5_VLForConditionalGeneration": "0.7.2",
    "Qwen2_5OmniModel": "0.8.5",
    "Qwen3OmniMoeForConditionalGeneration": "0.11.1",
    "Qwen2ForCausalLM": "0.1.0",
}
PLACEHOLDERS = {
    "LlavaNextVideoForConditionalGeneration": {"video": "<video>"},
    "Qwen2AudioForConditionalGeneration": {"audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"},
    "Qwen2_5_VLForConditionalGeneration": {"video": "<|vision_start|><|video_pad|><|vision_end|>"},
    "Qwen2_5OmniModel": {"video": "<|vision_bos|><|VIDEO|><|vision_eos|>",
                         "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"},
    "Qwen3OmniMoeForConditionalGeneration": {"video": "<|vision_start|><|video_pad|><|vision_end|>",
                                             "audio": "<|audio_start|><|audio_pad|><|audio_end|>"},
    "Qwen2ForCausalLM": {},
}
# Keys of transformers' VideoMetadata plus vLLM's do_sample_frames switch (vllm.multimodal.video loaders).
METADATA_KEYS = {"fps", "duration", "total_num_frames", "frames_indices", "video_backend", "width", "height",
                 "do_sample_frames"}
SAMPLING_KEYS = {"temperature", "top_p", "top_k", "max_tokens", "min_tokens", "seed", "repetition_penalty",
                 "ignore_eos", "output_kind", "n"}
LLM_KEYS = {"model", "dtype", "tensor_parallel_size", "seed", "gpu_memory_utilization", "limit_mm_per_prompt",
            "max_model_len", "trust_remote_code", "enforce_eager"}


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class SamplingParams:
    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - SAMPLING_KEYS
        if unknown:
            raise TypeError(f"SamplingParams.__init__() got an unexpected keyword argument '{sorted(unknown)[0]}'")
        self.kwargs = kwargs
        self.output_kind = kwargs.get("output_kind", RequestOutputKind.CUMULATIVE)


@dataclass
class Completion:
    text: str


@dataclass
class RequestOutput:
    request_id: str
    finished: bool
    outputs: list[Completion]


def answer_for(prompt: str) -> str:
    """Deterministic answer: the extraction prompts' reason back as a label list, else a fixed word."""
    if "Input: " in prompt:
        return f"Output: [{prompt.split('Input: ')[-1].split('; Output:')[0]}]"
    return " happy "


class FakeTokenizer:
    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return f"<user>{messages[0]['content']}</user><assistant>"


@dataclass
class EngineState:
    """What the fake records and how it behaves (one per installed module)."""

    version: str = "0.33.0"
    architecture: str = "Qwen2ForCausalLM"
    model_max_len: int = 32768            # the checkpoint's context length
    kv_capacity_tokens: int = 10 ** 9     # what fits in the KV cache at the given gpu_memory_utilization
    engine_core_process: bool = True      # vLLM >= 0.11: the engine core runs in its own process
    add_request_takes_prompts: bool = True
    steps_to_finish: int = 2              # engine steps each request takes
    llms: list[Any] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    unfinished_outputs_sent: int = 0
    added: list[str] = field(default_factory=list)


class LLMEngine:
    def __init__(self, state: EngineState):
        self.state = state
        self.running: dict[str, list[Any]] = {}  # request id -> [prompt, params, steps done]

    def add_request(self, request_id: str, prompt: Any, params: SamplingParams, *args: Any, **kwargs: Any) -> None:
        if isinstance(prompt, (str, dict)) and not self.state.add_request_takes_prompts:
            raise TypeError("add_request() takes an EngineCoreRequest; process the prompt with the "
                            "InputProcessor first (passing raw prompts was deprecated)")
        self.state.added.append(prompt)
        self.running[request_id] = [prompt, params, 0]

    def has_unfinished_requests(self) -> bool:
        return bool(self.running)

    def step(self) -> list[RequestOutput]:
        outs = []
        for rid in list(self.running):
            entry = self.running[rid]
            entry[2] += 1
            text = answer_for(entry[0])
            if entry[2] >= self.state.steps_to_finish:
                del self.running[rid]
                outs.append(RequestOutput(rid, True, [Completion(text)]))
            elif entry[1].output_kind != RequestOutputKind.FINAL_ONLY:
                self.state.unfinished_outputs_sent += 1
                outs.append(RequestOutput(rid, False, [Completion(text[: len(text) // 2])]))
        return outs

    def abort_request(self, ids: list[str]) -> None:
        for rid in ids:
            self.running.pop(rid, None)


class LLM:
    state: EngineState  # set on the subclass made by install()

    def __init__(self, **kwargs: Any):
        st = self.state
        unknown = set(kwargs) - LLM_KEYS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument '{sorted(unknown)[0]}'")
        since = ARCHITECTURE_SINCE[st.architecture]
        if version_tuple(st.version) < version_tuple(since):
            raise ValueError(f"Model architectures ['{st.architecture}'] are not supported for now.")
        max_len = kwargs.get("max_model_len") or st.model_max_len
        if max_len > st.kv_capacity_tokens:
            if st.engine_core_process:  # the ValueError is raised (and logged) in the engine core process
                raise RuntimeError("Engine core initialization failed. See root cause above. "
                                   "Failed core proc(s): {'EngineCore_DP0': 1}")
            raise ValueError(f"To serve at least one request with the models's max seq len ({max_len}), "
                             f"(4.00 GiB KV cache is needed, which is larger than the available KV cache memory "
                             f"(1.00 GiB). Based on the available memory, the estimated maximum model length is "
                             f"{st.kv_capacity_tokens}. Try increasing `gpu_memory_utilization` or decreasing "
                             f"`max_model_len` when initializing the engine.")
        self.kwargs = kwargs
        self.llm_engine = LLMEngine(st)
        st.llms.append(self)

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def generate(self, prompts: Any, sampling_params: Any = None, use_tqdm: bool = True) -> list[RequestOutput]:
        prompts = prompts if isinstance(prompts, list) else [prompts]
        outs = []
        for i, request in enumerate(prompts):
            self.validate(request)
            self.state.requests.append(request)
            text = request if isinstance(request, str) else request["prompt"]
            outs.append(RequestOutput(str(i), True, [Completion(answer_for(text))]))
        return outs

    def validate(self, request: Any) -> None:
        """The checks vLLM's input processing makes before a request is scheduled."""
        if isinstance(request, str):
            return
        prompt, data = request["prompt"], request.get("multi_modal_data") or {}
        limits = self.kwargs.get("limit_mm_per_prompt") or {}
        for modality, placeholder in PLACEHOLDERS[self.state.architecture].items():
            count = prompt.count(placeholder)
            if count != (1 if modality in data else 0):
                raise ValueError(f"Failed to apply prompt replacement for mm_items['{modality}'][0]: "
                                 f"{count} of '{placeholder}' in the prompt")
        for modality in data:
            if modality not in PLACEHOLDERS[self.state.architecture]:
                raise ValueError(f"Unsupported modality: {modality}")
            if limits.get(modality, 1) < 1:
                raise ValueError(f"At most 0 {modality}(s) may be provided in one prompt")
        if "video" in data:
            self.validate_video(data["video"], request.get("mm_processor_kwargs") or {})
        if "audio" in data:
            audio, rate = data["audio"]
            assert isinstance(audio, np.ndarray) and audio.ndim == 1 and rate > 0

    def validate_video(self, video: Any, mm_kwargs: dict[str, Any]) -> None:
        needs_metadata = self.state.architecture == "Qwen2_5_VLForConditionalGeneration"
        if isinstance(video, tuple):
            frames, metadata = video
        else:
            frames, metadata = video, None
        if not (isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[-1] == 3):
            raise ValueError(f"video must be a [frames, H, W, 3] array, got {type(frames).__name__}")
        if not needs_metadata:
            return
        if metadata is None:
            raise ValueError("Video metadata is required but not found in mm input. "
                             "Please check your video input in `multi_modal_data`")
        unknown = set(metadata) - METADATA_KEYS
        if unknown:  # VideoMetadata(**metadata) in the HF processor call
            raise TypeError(f"VideoMetadata.__init__() got an unexpected keyword argument '{sorted(unknown)[0]}'")
        for key in ("fps", "total_num_frames", "frames_indices"):
            if key not in metadata:
                raise ValueError(f"video metadata lacks {key}")
        if len(metadata["frames_indices"]) != frames.shape[0]:
            raise ValueError("frames_indices does not match the number of frames")
        do_sample = mm_kwargs.get("do_sample_frames", metadata.get("do_sample_frames", True))
        if do_sample:  # frames sampled again from already sampled frames: wrong timestamps
            raise ValueError("do_sample_frames must be off for pre-sampled frames")


def install(monkeypatch: Any, **state: Any) -> types.ModuleType:
    """Put a fresh fake ``vllm`` (and ``vllm.sampling_params``) in sys.modules; returns the module."""
    st = EngineState(**state)
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.__version__ = st.version
    module.LLM = type("LLM", (LLM,), {"state": st})
    module.SamplingParams = SamplingParams
    module.RequestOutputKind = RequestOutputKind
    module.state = st
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.SamplingParams, sampling.RequestOutputKind = SamplingParams, RequestOutputKind
    module.sampling_params = sampling
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return module
