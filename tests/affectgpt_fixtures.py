"""Tiny random-weight stand-ins for AffectGPT's parts, built here (no download, no network).

* ``build_llm``: a 2-layer Qwen2 with a byte-level BPE tokenizer trained here on
  the prompt's words (so '###', '##' and '#' are tokens, as in Qwen's vocab),
  a ``generation_config.json`` like Qwen2.5-7B-Instruct's (two eos ids, top_k 20);
* ``build_clip``: a CLIP whose vision tower takes 224x224 images (projection 12-d);
* ``build_hubert``: a 4-layer HuBERT with stable layer norm (as chinese-hubert-large);
* ``write_checkpoint``: a checkpoint holding exactly the spec's key names, with the
  tiny models' shapes (``{'model': state_dict, ...}``, fp32).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

PROMPT_WORDS = (
    "###Human: The audio and video merged info is: <Multi></Multi>. The audio content is as follows: <Audio></Audio>. "
    "Meanwhile, we uniformly sample raw frames from the video and extract faces from these frames: <Video></Video>. "
    "The subtitle of this video is: <Subtitle></Subtitle>. Now, please answer my question based on all the provided "
    "information. Please recognize all possible emotional states of the character. ###Assistant: "
    "happy sad angry worried surprised calm a## a# ## # ### I am so happy to see you again, this is wonderful! "
    "Why did you do that? I feel sad and angry. I am worried about tomorrow. Wow, what a surprise!"
)
D_LLM = 32
N_LAYERS = 2
D_VISUAL = 12
D_AUDIO = 24


def build_llm(folder: Path, seed: int = 0, tie: bool = True) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([PROMPT_WORDS] * 4, trainer)
    vocab = tok.get_vocab()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     additional_special_tokens=["<|im_start|>"])
    hf_tok.save_pretrained(folder)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=tok.get_vocab_size(), hidden_size=D_LLM, intermediate_size=48,
                         num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, eos_token_id=vocab["<|im_end|>"],
                         bos_token_id=vocab["<|endoftext|>"], tie_word_embeddings=tie)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    GenerationConfig(bos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"], do_sample=True,
                     eos_token_id=[vocab["<|im_end|>"], vocab["<|endoftext|>"]], repetition_penalty=1.05,
                     temperature=0.7, top_p=0.8, top_k=20).save_pretrained(folder)
    return folder


def build_clip(folder: Path, seed: int = 1) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=16, intermediate_size=24,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=D_VISUAL)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)  # CLIP's mean/std, 224 crops
    return folder


def build_hubert(folder: Path, seed: int = 2) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    config = HubertConfig(hidden_size=D_AUDIO, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8, 8, 8), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                          feat_extract_norm="layer", do_stable_layer_norm=True)
    HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def checkpoint_shapes(r: int = 16, d_llm: int = D_LLM, n_layers: int = N_LAYERS, inter: int = 48,
                      kv: int = 16) -> dict[str, tuple[int, ...]]:
    """The spec's key list with the tiny models' shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    io = {"self_attn.q_proj": (d_llm, d_llm), "self_attn.k_proj": (d_llm, kv), "self_attn.v_proj": (d_llm, kv),
          "self_attn.o_proj": (d_llm, d_llm), "mlp.gate_proj": (d_llm, inter), "mlp.up_proj": (d_llm, inter),
          "mlp.down_proj": (inter, d_llm)}
    for i in range(n_layers):
        for mod, (n_in, n_out) in io.items():
            base = f"llama_model.base_model.model.model.layers.{i}.{mod}"
            shapes[f"{base}.lora_A.default.weight"] = (r, n_in)
            shapes[f"{base}.lora_B.default.weight"] = (n_out, r)
    dmax = max(D_VISUAL, D_AUDIO)
    for name, (n_out, n_in) in {"image_llama_proj": (d_llm, D_VISUAL), "video_attention_mlp": (1, D_VISUAL),
                                "affectgpt_proj": (d_llm, D_VISUAL), "audio_attention_mlp": (1, D_AUDIO),
                                "audio_llama_proj": (d_llm, D_AUDIO), "multi_audio_embs": (dmax, D_AUDIO),
                                "multi_video_embs": (dmax, D_VISUAL), "attention_mlp": (dmax, 2 * dmax),
                                "fc_att": (2, dmax), "multi_llama_proj": (d_llm, dmax)}.items():
        shapes[f"{name}.weight"] = (n_out, n_in)
        shapes[f"{name}.bias"] = (n_out,)
    return shapes


def write_checkpoint(path: Path, seed: int, *, drop: Iterable[str] = (), rename: dict[str, str] | None = None,
                     extra: dict | None = None, tied_alias_of: Path | None = None, scale: float = 0.3) -> Path:
    """A checkpoint in the original's format; ``drop``/``rename``/``extra`` spoil it on purpose."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(*shape, generator=gen) * scale for k, shape in checkpoint_shapes().items()}
    for k in drop:
        state.pop(k)
    for old, new in (rename or {}).items():
        state[new] = state.pop(old)
    state.update(extra or {})
    if tied_alias_of is not None:  # a tied-embedding LLM: the original's saving keeps the lm_head alias
        from safetensors.torch import load_file

        weights = load_file(str(tied_alias_of / "model.safetensors"))
        state["llama_model.base_model.model.lm_head.weight"] = weights["model.embed_tokens.weight"].float()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "optimizer": {}, "config": {"model": {"arch": "affectgpt"}}, "scaler": None,
                "epoch": seed}, path)
    return path


def build_parts(root: Path) -> dict[str, Path]:
    """The three base models under ``root`` (llm/, clip/, hubert/)."""
    return {"llm": build_llm(root / "llm"), "clip": build_clip(root / "clip"), "hubert": build_hubert(root / "hubert")}


def model_args(parts: dict[str, Path], **more: object) -> str:
    args = {"llm": parts["llm"], "clip": parts["clip"], "hubert": parts["hubert"], **more}
    return ",".join(f"{k}={v}" for k, v in args.items())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
