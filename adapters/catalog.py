"""Built-in adapters: importing this module registers them (heavy SDKs load lazily)."""
from unibench.adapters import replay  # noqa: F401
from unibench.adapters import hf_text  # noqa: F401
from unibench.adapters import openai_adapter  # noqa: F401
from unibench.adapters import video_llama  # noqa: F401
from unibench.adapters import chat_univi  # noqa: F401
from unibench.adapters import hf_video_llava  # noqa: F401
from unibench.adapters import hf_qwen2_audio  # noqa: F401
from unibench.adapters import hf_qwen25_vl  # noqa: F401
from unibench.adapters import hf_llava_next_video  # noqa: F401
from unibench.adapters import hf_qwen_omni  # noqa: F401
from unibench.adapters import hf_videollama3  # noqa: F401
from unibench.adapters import hf_qwen_audio  # noqa: F401
