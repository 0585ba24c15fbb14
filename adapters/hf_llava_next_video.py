"""`llava-next-video`: LLaVA-NeXT-Video through transformers.

Feeds ``num_frames`` uniformly sampled frames (default 8) and the subtitle +
question. Checkpoint: llava-hf/LLaVA-NeXT-Video-7B-hf. vLLM serves it too
(``backend=vllm``).
"""
from __future__ import annotations

from unibench.adapters.base import register_adapter
from unibench.adapters.hf_common import HFAdapter


@register_adapter
class LlavaNextVideoAdapter(HFAdapter):
    description = "LLaVA-NeXT-Video (transformers or vLLM); path=llava-hf/LLaVA-NeXT-Video-7B-hf or a local copy"
    inputs = ("video", "subtitle")
    model_class = "LlavaNextVideoForConditionalGeneration"
    extra_classes = ("LlavaNextVideoProcessor",)
    model_types = ("llava_next_video",)
    example = "llava-hf/LLaVA-NeXT-Video-7B-hf"
    vllm_supported = True
    vllm_min_version = "0.6.1"
    vllm_min_reason = "LLaVA-NeXT-Video"
    fallback_template = "USER: {media}\n{text} ASSISTANT:"
