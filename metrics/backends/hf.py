"""`hf`: the extractor LLM through transformers (CPU or GPU, no server).

    --extractor hf --extractor-args model=/models/Qwen2.5-7B-Instruct,batch_size=16,dtype=bfloat16

Each prompt becomes a single user turn of the tokenizer's chat template
(``add_generation_prompt``); prompts are batched with left padding, longest
first (an out-of-memory batch shows up at once, and similar lengths pad
little). Slower than ``vllm`` on a GPU, but it runs anywhere torch does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from unibench.errors import MissingExtraError, UserError
from unibench.metrics.extraction import register_extractor
from unibench.metrics.llm import LLMExtractor, LLMOptions, ResultGroup, first_line, is_out_of_memory
from unibench.runtime import resolve_device, resolve_dtype



@dataclass
class HFOptions(LLMOptions):
    device: str = ""                  # cpu | cuda | cuda:N ("" = cuda when available, else cpu)
    dtype: str = "auto"               # auto (bfloat16/float16 on GPU, float32 on CPU) | float32 | float16 | bfloat16
    batch_size: int = 8
    max_new_tokens: int | None = None  # transformers' name for max_tokens; wins when given
    trust_remote_code: bool = False
    sort_by_length: bool = True       # batch similar lengths (less padding); false = submission order
    ignore_eos: bool = False          # benchmarks only: always generate max_tokens


def chat_text(tokenizer: Any, prompt: str) -> str:
    """One user turn through the model's own chat template, ready for the assistant's answer."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def _dtype_kwarg(transformers: Any) -> str:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56."""
    try:
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


@register_extractor
class HFExtractor(LLMExtractor):
    name = "hf"
    description = "transformers AutoModelForCausalLM + chat template, batched (CPU or GPU)"
    Options = HFOptions

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        if self.options.batch_size < 1:
            raise UserError(f"--extractor-args: batch_size must be at least 1, got {self.options.batch_size}")
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = ""

    def backend_identity(self) -> dict[str, Any]:
        o = self.options
        return {"device": self._device or o.device or "auto", "dtype": o.dtype, "batch_size": o.batch_size}

    # ------------------------------------------------------------ loading
    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise MissingExtraError(exc.name or "transformers", "hf", what="the 'hf' extractor") from None
        o = self.options
        device = resolve_device(o.device, what="--extractor-args device")
        dtype = resolve_dtype(o.dtype, device, what="--extractor-args dtype")
        model_id = str(o.model)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(model_id, trust_remote_code=o.trust_remote_code)
        except Exception as exc:  # OSError, ValueError, hub errors: one line whichever it is
            raise UserError(f"hf: cannot load the tokenizer of '{model_id}' (not a model folder, and not a hub id "
                            f"that can be fetched): {first_line(exc)}") from None
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"hf: the tokenizer of '{model_id}' has no chat template; the protocol asks an "
                            "instruction-tuned model through its chat template (e.g. Qwen2.5-7B-Instruct)")
        tokenizer.padding_side = "left"  # decoder-only batches grow to the right
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                model_id, trust_remote_code=o.trust_remote_code, **{_dtype_kwarg(transformers): dtype})
            model.to(device)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise UserError(f"hf: out of memory loading '{model_id}' on {device} ({first_line(exc)}); "
                                "try dtype=bfloat16 or a larger GPU") from None
            raise UserError(f"hf: cannot load the model '{model_id}': {first_line(exc)}") from None
        model.eval()
        dec = self.decoding()
        if not dec.greedy and dec.seed is not None:
            torch.manual_seed(dec.seed)
        self._model, self._tokenizer, self._device = model, tokenizer, device

    def _generation_config(self) -> Any:
        from transformers import GenerationConfig

        dec = self.decoding()
        eos = getattr(self._model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = self._tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": dec.max_tokens, "pad_token_id": self._tokenizer.pad_token_id,
                                  "eos_token_id": eos, "do_sample": not dec.greedy}
        if not dec.greedy:
            # top_k=0 switches top-k off, as in the published vLLM SamplingParams
            kwargs.update(temperature=dec.temperature, top_p=dec.top_p, top_k=0)
        if dec.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = dec.repetition_penalty
        if dec.ignore_eos:
            kwargs["min_new_tokens"] = dec.max_tokens
        return GenerationConfig(**kwargs)

    # ------------------------------------------------------------ generation
    def generate_stream(self, prompts: list[str]) -> Iterator[ResultGroup]:
        self._load()
        texts = [chat_text(self._tokenizer, p) for p in prompts]
        order = list(range(len(texts)))
        if self.options.sort_by_length:
            order.sort(key=lambda i: len(texts[i]), reverse=True)
        config = self._generation_config()
        size = self.options.batch_size
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            answers = self._generate_batch([texts[i] for i in idx], config)
            yield list(zip(idx, answers))

    def _generate_batch(self, texts: list[str], config: Any) -> list[str | None]:
        import torch

        tok = self._tokenizer
        # The template already holds the special tokens: add none.
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
        try:
            with torch.inference_mode():
                out = self._model.generate(**enc, generation_config=config)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise UserError(f"hf: out of memory generating a batch of {len(texts)} on {self._device} "
                                f"({first_line(exc)}); lower batch_size (now {self.options.batch_size}) "
                                "or max_tokens") from None
            raise
        new_tokens = out[:, enc["input_ids"].shape[1]:]
        return list(tok.batch_decode(new_tokens, skip_special_tokens=True))

    def prepare(self) -> None:
        self._load()

    def release(self) -> None:
        self._model = None
        self._tokenizer = None
