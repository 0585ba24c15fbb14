"""`video-llava`: Video-LLaVA through transformers (one of the published MER-UniBench baselines).

Feeds 8 uniformly sampled frames (the model's training setting) and the
subtitle + question. Checkpoint: LanguageBind/Video-LLaVA-7B-hf.
"""
from __future__ import annotations

from unibench.adapters.base import register_adapter
from unibench.adapters.hf_common import HFAdapter


@register_adapter
class VideoLlavaAdapter(HFAdapter):
    description = "Video-LLaVA (transformers); path=LanguageBind/Video-LLaVA-7B-hf or a local copy"
    inputs = ("video", "subtitle")
    model_class = "VideoLlavaForConditionalGeneration"
    extra_classes = ("VideoLlavaProcessor",)
    model_types = ("video_llava",)
    example = "LanguageBind/Video-LLaVA-7B-hf"
    # The published checkpoint's prompt format, for copies saved without a chat template.
    fallback_template = "USER: {media}\n{text} ASSISTANT:"
