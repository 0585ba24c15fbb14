"""Built-in adapters by name: the one place their names are given (``register_adapter`` sets each
class's ``name`` from here). Only the module of the adapter a run asks for is imported, so replaying
answers never pays for the model adapters' imports."""
from __future__ import annotations

import importlib

BUILTIN = {
    "replay": "replay:ReplayAdapter",
    "hf-text": "hf_text:HFTextAdapter",
    "openai": "openai_adapter:OpenAIAdapter",
    "video-llama": "video_llama:VideoLlamaAdapter",
    "chat-univi": "chat_univi:ChatUniViAdapter",
    "video-llava": "hf_video_llava:VideoLlavaAdapter",
    "qwen2-audio": "hf_qwen2_audio:Qwen2AudioAdapter",
    "qwen2.5-vl": "hf_qwen25_vl:Qwen25VLAdapter",
    "llava-next-video": "hf_llava_next_video:LlavaNextVideoAdapter",
    "qwen2.5-omni": "hf_qwen_omni:Qwen25OmniAdapter",
    "qwen3-omni": "hf_qwen_omni:Qwen3OmniAdapter",
    "videollama3": "hf_videollama3:VideoLlama3Adapter",
    "qwen-audio": "hf_qwen_audio:QwenAudioAdapter",
    "affectgpt": "affectgpt:AffectGPTAdapter",
}


def load(name: str) -> bool:
    """Import the module that registers a built-in adapter; False if the name is not built in."""
    entry = BUILTIN.get(name)
    if entry is None:
        return False
    module = entry.split(":")[0]
    importlib.import_module(f"unibench.adapters.{module}")
    return True


def load_all() -> None:
    for module in dict.fromkeys(entry.split(":")[0] for entry in BUILTIN.values()):
        importlib.import_module(f"unibench.adapters.{module}")


def name_of(cls: type) -> str | None:
    """The catalog name of a built-in adapter class, or None for any other (e.g. a plug-in's)."""
    where = f"{cls.__module__.rsplit('.', 1)[-1]}:{cls.__qualname__}"
    if not cls.__module__.startswith("unibench.adapters."):
        return None
    return next((name for name, entry in BUILTIN.items() if entry == where), None)
