"""`qwen-audio`: the published Qwen-Audio-Chat baseline (v1), through its own remote code.

Qwen-Audio (v1) is not a transformers class: its checkpoint ships Python code
(``modeling_qwen.py``, ``tokenization_qwen.py``, ``audio.py``) that
transformers runs with ``trust_remote_code``. So this adapter

- needs ``trust_remote_code=true`` in ``--model-args`` (you run the
  checkpoint's code: review it first),
- works offline from a local copy (``huggingface-cli download
  Qwen/Qwen-Audio-Chat --local-dir DIR``, then ``path=DIR``), or from the hub
  id where the network is reachable,
- needs what that code imports (``tiktoken``, and ``ffmpeg`` on PATH for its
  audio reader), and a transformers release the code still runs on (it was
  written for transformers 4.3x; newer releases may break it — then use
  ``qwen2-audio``, its transformers-native successor).

Each sample is asked through the model's own ``chat``: the audio file path
and the subtitle + question, in the format of ``tokenizer.from_list_format``.
"""
from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unibench.adapters.base import Adapter, Sample, register_adapter
from unibench.adapters.hf_common import HFOptions, request_text, resolve_device, resolve_dtype
from unibench.errors import MissingExtraError, UserError
from unibench.runtime import requirement_status
from unibench.media import load_audio

EXAMPLE = "Qwen/Qwen-Audio-Chat"


@dataclass
class QwenAudioOptions(HFOptions):
    trust_remote_code: bool = False  # must be true: the checkpoint's own code runs


def load_remote(path: str, options: QwenAudioOptions) -> tuple[Any, Any]:
    """(model, tokenizer) from the checkpoint's own code."""
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise MissingExtraError(package, "hf", "model 'qwen-audio'")
    if importlib.util.find_spec("tiktoken") is None:
        raise UserError("model 'qwen-audio': the Qwen-Audio tokenizer code needs tiktoken: pip install tiktoken")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    placement = {"device_map": "auto"} if device == "auto" else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=dtype, **placement)
    except Exception as exc:  # remote code can fail in any way (missing package, transformers API drift)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model 'qwen-audio': cannot load {path} with its remote code ({type(exc).__name__}: "
                        f"{text}); the code targets transformers 4.3x — qwen2-audio is the maintained "
                        "successor") from None
    if device != "auto":
        model = model.to(device)
    return model.eval(), tokenizer


@register_adapter
class QwenAudioAdapter(Adapter):
    description = ("published Qwen-Audio-Chat (v1) via its remote code; needs trust_remote_code=true, tiktoken, "
                   "ffmpeg; path=a local Qwen/Qwen-Audio-Chat copy")
    inputs = ("audio", "subtitle")
    Options = QwenAudioOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        if self.options.backend != "transformers":
            raise UserError("model 'qwen-audio' has no vLLM support; use backend=transformers")
        self._model: Any = None
        self._tokenizer: Any = None

    @classmethod
    def status(cls) -> str:
        return requirement_status(("torch", "transformers", "tiktoken"))

    def load(self) -> None:
        if self._model is not None:
            return
        opts = self.options
        if not opts.trust_remote_code:
            raise UserError("model 'qwen-audio' runs the checkpoint's own Python code: review it, then pass "
                            "--model-args trust_remote_code=true")
        path = str(opts.path)
        local = Path(path).expanduser()
        if not local.exists() and (path.count("/") != 1 or path.startswith((".", "/", "~"))):
            raise UserError(f"--model-args path={path}: folder not found (download {EXAMPLE} first: "
                            f"huggingface-cli download {EXAMPLE} --local-dir DIR)")
        if local.exists() and not (local / "config.json").is_file():
            raise UserError(f"--model-args path={path}: no config.json there (not a Qwen-Audio checkpoint)")
        self._model, self._tokenizer = load_remote(str(local) if local.exists() else path, opts)

    def query(self, sample: Sample) -> str:
        """The model's own query format: the audio file, then the subtitle + question."""
        load_audio(sample.audio)  # a missing or corrupt file fails this sample here, with a clear reason
        return self._tokenizer.from_list_format([{"audio": str(sample.audio)},
                                                 {"text": request_text(sample, "audio")}])

    def generation_config(self) -> Any:
        opts = self.options
        config = copy.deepcopy(self._model.generation_config)  # keeps Qwen's chat_format / window settings
        config.max_new_tokens = opts.max_new_tokens
        config.do_sample = opts.do_sample
        if opts.do_sample:
            config.temperature, config.top_p = opts.temperature, opts.top_p
        else:
            config.temperature = config.top_p = config.top_k = None
        return config

    def answer(self, samples: list[Sample]) -> list[str]:
        import torch

        self.load()
        answers = []
        for sample in samples:  # the remote chat() takes one query at a time
            query = self.query(sample)
            torch.manual_seed(self.options.seed)
            with torch.inference_mode():
                response, _history = self._model.chat(self._tokenizer, query=query, history=None,
                                                      generation_config=self.generation_config())
            answers.append(str(response).strip())
        return answers
