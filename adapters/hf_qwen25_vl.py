"""`qwen2.5-vl`: Qwen2.5-VL-Instruct through transformers, the video given as sampled frames.

Feeds ``num_frames`` uniformly sampled frames (with their real frame rate, so
the model's time-aware positions are right) and the subtitle + question.
Checkpoint: Qwen/Qwen2.5-VL-7B-Instruct. vLLM serves it too (``backend=vllm``).
"""
from __future__ import annotations

from unibench.adapters.base import register_adapter
from unibench.adapters.hf_common import HFAdapter


@register_adapter
class Qwen25VLAdapter(HFAdapter):
    description = "Qwen2.5-VL-Instruct on sampled frames (transformers or vLLM); path=Qwen/Qwen2.5-VL-7B-Instruct"
    inputs = ("video", "subtitle")
    model_class = "Qwen2_5_VLForConditionalGeneration"
    extra_classes = ("Qwen2_5_VLProcessor",)
    model_types = ("qwen2_5_vl",)
    example = "Qwen/Qwen2.5-VL-7B-Instruct"
    video_timing = "metadata"
    vllm_supported = True
    vllm_video_metadata = True  # vLLM's Qwen2.5-VL processor requires (frames, metadata)
    vllm_min_version = "0.10.0"
    vllm_min_reason = "Qwen2.5-VL since 0.7.2; video as (frames, metadata) since 0.10.0"
    fallback_template = "<|im_start|>user\n{media}{text}<|im_end|>\n<|im_start|>assistant\n"
    media_placeholders = {"video": "<|vision_start|><|video_pad|><|vision_end|>"}
