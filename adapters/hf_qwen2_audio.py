"""`qwen2-audio`: Qwen2-Audio-Instruct through transformers (successor of the published Qwen-Audio baseline).

Feeds the 16 kHz mono audio and the subtitle + question (spec §2, audio
wording). Checkpoint: Qwen/Qwen2-Audio-7B-Instruct. vLLM serves it too
(``backend=vllm``).
"""
from __future__ import annotations

from unibench.adapters.base import register_adapter
from unibench.adapters.hf_common import HFAdapter


@register_adapter
class Qwen2AudioAdapter(HFAdapter):
    description = "Qwen2-Audio-Instruct (transformers or vLLM); path=Qwen/Qwen2-Audio-7B-Instruct or a local copy"
    inputs = ("audio", "subtitle")
    model_class = "Qwen2AudioForConditionalGeneration"
    extra_classes = ("Qwen2AudioProcessor",)
    model_types = ("qwen2_audio",)
    example = "Qwen/Qwen2-Audio-7B-Instruct"
    medium = "audio"
    vllm_supported = True
    vllm_min_version = "0.6.4"
    vllm_min_reason = "Qwen2-Audio"
    fallback_template = "<|im_start|>user\nAudio 1: {media}\n{text}<|im_end|>\n<|im_start|>assistant\n"
    media_placeholders = {"audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}
