"""`qwen2.5-omni`, `qwen3-omni`: audio + video + text in one model (the thinker; text output only).

Each sample feeds ``num_frames`` sampled frames (with their real frame rate),
the 16 kHz audio track from the task's audio folder, and the subtitle +
question. Only the thinker is loaded from the published checkpoint (the
talker that speaks answers is never built), so memory is that of the text
model. Checkpoints: Qwen/Qwen2.5-Omni-7B, Qwen/Qwen3-Omni-30B-A3B-Instruct.
vLLM serves both thinkers (``backend=vllm``).
"""
from __future__ import annotations

from unibench.adapters.base import register_adapter
from unibench.adapters.hf_common import HFAdapter

_PLACEHOLDERS = {"video": "<|vision_bos|><|VIDEO|><|vision_eos|>", "audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}
# Qwen3-Omni's tokenizer (and vLLM's Qwen3-Omni processor) use the Qwen2.5-VL style tokens instead
_QWEN3_PLACEHOLDERS = {"video": "<|vision_start|><|video_pad|><|vision_end|>",
                       "audio": "<|audio_start|><|audio_pad|><|audio_end|>"}
_FALLBACK = "<|im_start|>user\n{media}{text}<|im_end|>\n<|im_start|>assistant\n"


@register_adapter
class Qwen25OmniAdapter(HFAdapter):
    description = "Qwen2.5-Omni thinker on frames + audio + subtitle (transformers or vLLM); path=Qwen/Qwen2.5-Omni-7B"
    inputs = ("video", "audio", "subtitle")
    model_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    extra_classes = ("Qwen2_5OmniProcessor",)
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    example = "Qwen/Qwen2.5-Omni-7B"
    video_timing = "second_per_grid"
    vllm_supported = True
    vllm_min_version = "0.8.5"
    vllm_min_reason = "Qwen2.5-Omni thinker"
    fallback_template = _FALLBACK
    media_placeholders = _PLACEHOLDERS


@register_adapter
class Qwen3OmniAdapter(Qwen25OmniAdapter):
    description = ("Qwen3-Omni (MoE) thinker on frames + audio + subtitle (transformers or vLLM); "
                   "path=Qwen/Qwen3-Omni-30B-A3B-Instruct")
    model_class = "Qwen3OmniMoeThinkerForConditionalGeneration"
    extra_classes = ("Qwen3OmniMoeProcessor",)
    model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    example = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
    vllm_min_version = "0.11.1"
    vllm_min_reason = "Qwen3-Omni thinker"
    media_placeholders = _QWEN3_PLACEHOLDERS
