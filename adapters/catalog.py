"""Built-in adapters by name. Only the module of the adapter a run asks for is
imported, so replaying answers never pays for the model adapters' imports."""
from __future__ import annotations

import importlib

BUILTIN = {
    "replay": "replay",
    "hf-text": "hf_text",
    "openai": "openai_adapter",
    "video-llama": "video_llama",
    "chat-univi": "chat_univi",
    "video-llava": "hf_video_llava",
    "qwen2-audio": "hf_qwen2_audio",
    "qwen2.5-vl": "hf_qwen25_vl",
    "llava-next-video": "hf_llava_next_video",
    "qwen2.5-omni": "hf_qwen_omni",
    "qwen3-omni": "hf_qwen_omni",
    "videollama3": "hf_videollama3",
    "qwen-audio": "hf_qwen_audio",
    "affectgpt": "affectgpt",
}


def load(name: str) -> bool:
    """Import the module that registers a built-in adapter; False if the name is not built in."""
    module = BUILTIN.get(name)
    if module is None:
        return False
    importlib.import_module(f"unibench.adapters.{module}")
    return True


def load_all() -> None:
    for module in dict.fromkeys(BUILTIN.values()):
        importlib.import_module(f"unibench.adapters.{module}")
