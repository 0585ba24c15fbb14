"""`hf-text`: any Hugging Face causal LM on the subtitle alone (a text-only baseline that runs on CPU).

    run_bench --model hf-text --model-args path=Qwen/Qwen2.5-0.5B-Instruct --task mer2023 ...

The user turn is the subtitle then the question (:func:`user_text`), through
the tokenizer's chat template when it has one, else as a plain prompt.
Batches are left-padded; decoding is greedy unless ``do_sample=true``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unibench.adapters.base import Adapter, Sample, register_adapter
from unibench.errors import MissingExtraError, UserError
from unibench.runtime import requirement_status, torch_device_dtype, user_text
from unibench.fileio import safe_name


@dataclass
class HFTextOptions:
    path: str                      # a model folder or hub id
    name: str = ""                 # leaderboard name (default: hf-text-<folder name>)
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    dtype: str = "auto"            # auto | float32 | bfloat16 | float16
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0       # with do_sample only
    top_p: float = 0.9             # with do_sample only
    seed: int = 0
    system: str = ""               # optional system message (chat template only)
    trust_remote_code: bool = False


def plain_prompt(text: str) -> str:
    """The prompt for a tokenizer without a chat template."""
    return f"{text}\nAnswer:"


def build_prompt(tokenizer: Any, text: str, system: str = "") -> tuple[str, bool]:
    """(prompt, whether it came from the chat template: then it already holds the special tokens)."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    return plain_prompt(text), False


@register_adapter
class HFTextAdapter(Adapter):
    description = "any Hugging Face causal LM on the subtitle alone (text-only baseline; CPU is fine)"
    inputs = ("subtitle",)
    Options = HFTextOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"

    @classmethod
    def status(cls) -> str:
        return requirement_status(("torch", "transformers"))

    def model_id(self) -> str:
        return self.options.name or safe_name(f"hf-text-{Path(str(self.options.path)).name}")

    def _load(self) -> None:
        try:
            import torch  # noqa: F401
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise MissingExtraError("transformers", "hf", "model 'hf-text'") from None
        opts = self.options
        path = str(opts.path)
        if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
            raise UserError(f"hf-text: model folder not found: {path} (--model-args path=...)")
        self._device, dtype = torch_device_dtype(opts.device, opts.dtype)
        try:
            tok = AutoTokenizer.from_pretrained(path, padding_side="left", trust_remote_code=opts.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=opts.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise UserError(f"hf-text: cannot load model '{path}': {str(exc).strip().splitlines()[0]}") from None
        if tok.pad_token is None:  # many causal LMs ship without one; batching needs it
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # a saved tokenizer_config may say right; generation needs left
        self._tokenizer, self._model = tok, model.to(self._device).eval()

    def answer(self, samples: list[Sample]) -> list[str]:
        import torch

        if self._model is None:
            self._load()
        opts, tok = self.options, self._tokenizer
        built = [build_prompt(tok, user_text(s), opts.system) for s in samples]
        batch = tok([p for p, _ in built], return_tensors="pt", padding=True,
                    add_special_tokens=not built[0][1]).to(self._device)
        gen: dict[str, Any] = {"max_new_tokens": opts.max_new_tokens, "do_sample": opts.do_sample,
                               "pad_token_id": tok.pad_token_id}
        if opts.do_sample:
            gen.update(temperature=opts.temperature, top_p=opts.top_p)
        else:  # silence generation_config's sampling defaults under greedy decoding
            gen.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(opts.seed)  # per call, so a resumed run samples as a fresh one would
        with torch.inference_mode():
            out = self._model.generate(**batch, **gen)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True)]
