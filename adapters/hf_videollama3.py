"""`videollama3`: VideoLLaMA 3 through transformers (the current generation of the published Video-LLaMA baseline).

Feeds ``num_frames`` uniformly sampled frames with their timestamps (the
model's prompt names each frame's time) and the subtitle + question.
Checkpoints: those converted to the transformers format (e.g. lkhl/VideoLLaMA3-2B-Image-HF);
the original DAMO-NLP-SG releases run remote code and are not loaded here.
"""
from __future__ import annotations

from unibench.adapters.base import register_adapter
from unibench.adapters.hf_common import HFAdapter


@register_adapter
class VideoLlama3Adapter(HFAdapter):
    description = ("VideoLLaMA 3 (transformers); path=a checkpoint in transformers format, "
                   "e.g. lkhl/VideoLLaMA3-2B-Image-HF")
    inputs = ("video", "subtitle")
    model_class = "VideoLlama3ForConditionalGeneration"
    extra_classes = ("VideoLlama3Processor",)
    model_types = ("video_llama_3",)
    example = "lkhl/VideoLLaMA3-2B-Image-HF"
    video_timing = "metadata"
    fallback_template = "<|im_start|>user\n{media}\n{text}<|im_end|>\n<|im_start|>assistant\n"
    media_placeholders = {"video": "<|video_pad|>"}
