"""AffectGPT's inference model on transformers + peft: encoders, fusion, LoRA LLM, checkpoint mapping.

Built from ``spec/affectgpt.md`` (attention fusion, one token per modality):
frozen CLIP ViT-L/14 (projected 768-d features of 8 face crops) and frozen
chinese-hubert-large (mean of the last four hidden layers of 8 audio clips),
the fusion layers of the released checkpoints, and Qwen2.5-7B-Instruct with a
LoRA adapter. Only the fusion layers and the LoRA weights come from a
checkpoint, so switching epochs swaps those and nothing else.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from unibench.adapters import affectgpt_inputs as agi
from unibench.errors import UserError

LORA_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
LLM_PREFIX = "llama_model."
FUSION_LAYERS = ("image_llama_proj", "video_attention_mlp", "affectgpt_proj", "audio_attention_mlp",
                 "audio_llama_proj", "multi_audio_embs", "multi_video_embs", "attention_mlp", "fc_att",
                 "multi_llama_proj")
# Keys that only other fusion configurations of the original hold (fusion type 'qformer').
QFORMER_MARKERS = ("Qformer", "query_tokens", "position_embedding")
TIED_ALIAS = LLM_PREFIX + "base_model.model.lm_head.weight"


# --------------------------------------------------------------------------- fusion

class Fusion(nn.Module):
    """The trained layers between the encoders and the LLM; names are the checkpoint's.

    No softmax and no activation anywhere: attention weights are raw linear outputs.
    """

    def __init__(self, d_visual: int, d_audio: int, d_llm: int):
        super().__init__()
        d_max = max(d_visual, d_audio)
        self.image_llama_proj = nn.Linear(d_visual, d_llm)  # built and saved; unused by these modes
        self.video_attention_mlp = nn.Linear(d_visual, 1)
        self.affectgpt_proj = nn.Linear(d_visual, d_llm)
        self.audio_attention_mlp = nn.Linear(d_audio, 1)
        self.audio_llama_proj = nn.Linear(d_audio, d_llm)
        self.multi_audio_embs = nn.Linear(d_audio, d_max)
        self.multi_video_embs = nn.Linear(d_visual, d_max)
        self.attention_mlp = nn.Linear(2 * d_max, d_max)
        self.fc_att = nn.Linear(d_max, 2)
        self.multi_llama_proj = nn.Linear(d_max, d_llm)

    @staticmethod
    def _pool(hidden: torch.Tensor, scorer: nn.Linear) -> torch.Tensor:
        """[b, t, h] -> [b, h]: sum over t weighted by the (unnormalised) scores."""
        weights = scorer(hidden)                                   # [b, t, 1]
        return torch.matmul(hidden.transpose(1, 2), weights).squeeze(2)

    def visual_token(self, hidden: torch.Tensor) -> torch.Tensor:
        """Face (or frame) features [b, 8, d_visual] -> [b, d_llm]."""
        return self.affectgpt_proj(self._pool(hidden, self.video_attention_mlp))

    def audio_token(self, hidden: torch.Tensor) -> torch.Tensor:
        """Audio features [b, 8, d_audio] -> [b, d_llm]."""
        return self.audio_llama_proj(self._pool(hidden, self.audio_attention_mlp))

    def multi_token(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Pre-fusion of the raw encoder features -> [b, d_llm]."""
        v = self.multi_video_embs(visual.mean(dim=1))
        u = self.multi_audio_embs(audio.mean(dim=1))
        w = self.fc_att(self.attention_mlp(torch.cat([v, u], dim=1))).unsqueeze(2)   # [b, 2, 1]
        return self.multi_llama_proj(torch.matmul(torch.stack([v, u], dim=2), w).squeeze(2))


# --------------------------------------------------------------------------- checkpoint keys

def lora_keys(n_layers: int) -> list[str]:
    """The LoRA keys of a checkpoint, as the original saves them (``llama_model.`` + peft's names)."""
    return [f"{LLM_PREFIX}base_model.model.model.layers.{i}.{m}.lora_{ab}.default.weight"
            for i in range(n_layers) for m in LORA_MODULES for ab in "AB"]


def fusion_keys() -> list[str]:
    return [f"{layer}.{p}" for layer in FUSION_LAYERS for p in ("weight", "bias")]


def _group(key: str) -> str:
    return "LoRA" if key.startswith(LLM_PREFIX) else "fusion"


def _listing(keys: Sequence[str], limit: int = 3) -> str:
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(_group(k), []).append(k)
    parts = []
    for name, items in groups.items():
        shown = ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
        parts.append(f"{name} {len(items)}: {shown}")
    return "; ".join(parts)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a released checkpoint (weights_only: no code runs on load)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # pickle / zip errors come in many types
        raise UserError(f"{path}: not a loadable AffectGPT checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    state = blob.get("model") if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: no 'model' state dict of tensors in this file (an AffectGPT checkpoint "
                        "holds {'model', 'optimizer', 'config', 'scaler', 'epoch'})")
    return state


def check_keys(path: Path, state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> None:
    """Refuse a checkpoint that does not fit, in one readable line (counts and first names, by group)."""
    qformer = [k for k in state if any(m in k for m in QFORMER_MARKERS)]
    if qformer:
        raise UserError(f"{path}: this checkpoint is of a Q-Former fusion configuration of AffectGPT "
                        f"({len(qformer)} Q-Former keys, e.g. {qformer[0]}); this adapter runs the attention-"
                        "fusion configuration of the published row (emercoarse_highlevelfilter4_outputhybird_"
                        "bestsetup_bestfusion_lz)")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and k != TIED_ALIAS]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_listing(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
    if problems:
        raise UserError(f"{path}: keys do not match AffectGPT's attention-fusion model: {'; '.join(problems)}")
    wrong = [(k, tuple(state[k].shape), shape) for k, shape in expected.items() if tuple(state[k].shape) != shape]
    if wrong:
        k, got, want = wrong[0]
        hint = ""
        if ".lora_A." in k and got[1:] == want[1:]:
            hint = f"; its LoRA rank is {got[0]}: pass lora_r={got[0]}"
        elif _group(k) == "fusion":
            hint = "; was it trained with another base LLM, CLIP or HuBERT?"
        raise UserError(f"{path}: {len(wrong)} tensor(s) of the wrong shape (e.g. {k}: checkpoint "
                        f"{list(got)}, model {list(want)}{hint})")


# --------------------------------------------------------------------------- encoders

def _json(folder: str, name: str) -> dict[str, Any]:
    path = Path(folder).expanduser() / name
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _load(kind: str, loader: Any, path: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the {kind} from {path}: {first}") from None


class FaceEncoder:
    """CLIP ViT-L/14, frozen: 224x224 crops -> projected (not normalised) 768-d features."""

    def __init__(self, path: str, device: str):
        from transformers import AutoModel

        self.model = _load("CLIP model (clip=)", AutoModel, path).to(device).eval()
        if not hasattr(self.model, "get_image_features"):
            raise UserError(f"clip={path}: holds a '{self.model.config.model_type}' model, not CLIP")
        pre = _json(path, "preprocessor_config.json")
        self.mean = pre.get("image_mean", [0.48145466, 0.4578275, 0.40821073])
        self.std = pre.get("image_std", [0.26862954, 0.26130258, 0.27577711])
        self.dim = int(self.model.config.projection_dim)
        self.device = device

    def __call__(self, crops: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(agi.clip_pixels(crops, self.mean, self.std)).to(self.device)
        out = self.model.get_image_features(pixel_values=pixels)
        # transformers 5 returns an output object whose pooled output is the projection
        return out if isinstance(out, torch.Tensor) else out.pooler_output


class AudioEncoder:
    """chinese-hubert-large, frozen: 8 clips -> mean over time of the mean of the last four layers.

    "The last four layers" keep transformers 4.49's meaning: the inputs of the
    last three encoder layers and the final (layer-normed) output. Captured with
    hooks, so the meaning does not depend on how this transformers version
    collects ``hidden_states``.
    """

    def __init__(self, path: str, device: str):
        from transformers import AutoModel

        self.model = _load("HuBERT model (hubert=)", AutoModel, path).to(device).eval()
        layers = getattr(getattr(self.model, "encoder", None), "layers", None)
        if layers is None or len(layers) < 3:
            raise UserError(f"hubert={path}: expected a HuBERT-like encoder with at least 3 layers")
        self.layers = layers
        self.do_normalize = bool(_json(path, "preprocessor_config.json").get("do_normalize", True))
        self.dim = int(self.model.config.hidden_size)
        self.device = device

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        values = torch.from_numpy(agi.hubert_input(clips, self.do_normalize)).to(self.device)
        seen: list[torch.Tensor] = []

        def keep_input(_module: Any, args: tuple, kwargs: dict) -> None:
            seen.append(args[0] if args else kwargs["hidden_states"])

        hooks = [layer.register_forward_pre_hook(keep_input, with_kwargs=True) for layer in self.layers[-3:]]
        try:
            last = self.model(values).last_hidden_state
        finally:
            for h in hooks:
                h.remove()
        return torch.stack([*seen, last]).mean(dim=0).mean(dim=1)


# --------------------------------------------------------------------------- the LLM side

@dataclass
class Encoded:
    """One sample, ready for the LLM."""

    prompt: str
    input_ids: list[int]
    embeds: torch.Tensor          # [T, d_llm] in the LLM's dtype
    mask: torch.Tensor            # [T] bool
    tokens: dict[str, torch.Tensor]   # modality -> [d_llm]


def load_tokenizer(path: str) -> Any:
    """The original's tokenizer set-up: BOS <|im_start|>, pad = eos, five special placeholders."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=False)
    except Exception:  # noqa: BLE001 - no slow class here: the fast one tokenizes the same byte-level BPE
        tokenizer = _load("tokenizer (llm=)", AutoTokenizer, path)
    if "<|im_start|>" in tokenizer.get_vocab():
        tokenizer.bos_token = "<|im_start|>"
    tokenizer.pad_token = tokenizer.eos_token
    for token in agi.PLACEHOLDERS:
        tokenizer.add_tokens([token], special_tokens=True)
    return tokenizer


class AffectGPTModel:
    """Encoders + fusion + LoRA LLM, loaded once; ``load_checkpoint`` swaps the trained parts."""

    def __init__(self, llm: str, clip: str, hubert: str, device: str, dtype: torch.dtype,
                 lora_r: int = 16, lora_alpha: int = 32, need_face: bool = True, need_audio: bool = True):
        from transformers import AutoModelForCausalLM

        self.device, self.dtype = device, dtype
        self.tokenizer = load_tokenizer(llm)
        base = _load("LLM (llm=)", AutoModelForCausalLM, llm, dtype=dtype).to(device)
        self.llm = self._with_lora(base, lora_r, lora_alpha).eval()
        self.n_layers = int(base.config.num_hidden_layers)
        self.d_llm = int(base.config.hidden_size)
        # the encoders are always built (their sizes define the fusion layers the checkpoint holds)
        self.face = FaceEncoder(clip, device)
        self.audio = AudioEncoder(hubert, device)
        self.fusion = Fusion(self.face.dim, self.audio.dim, self.d_llm).to(device).eval()
        self.ids = {tok: self.tokenizer.convert_tokens_to_ids(tok) for tok in agi.PLACEHOLDERS}
        self.stops = agi.stop_sequences(self.tokenizer)
        eos = self.llm.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])
        self.checkpoint: Path | None = None

    @staticmethod
    def _with_lora(base: Any, r: int, alpha: int) -> Any:
        from peft import LoraConfig, get_peft_model

        layers = int(base.config.num_hidden_layers)
        targets = [f"model.layers.{i}.{m}" for i in range(layers) for m in LORA_MODULES]
        config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=0.05,
                            target_modules=targets)
        return get_peft_model(base, config)

    # checkpoints -------------------------------------------------------------
    def trained_parameters(self) -> dict[str, torch.Tensor]:
        """Checkpoint key -> the parameter it fills: the explicit mapping from the spec's key list."""
        lora = dict(self.llm.named_parameters())
        fusion = dict(self.fusion.named_parameters())
        out: dict[str, torch.Tensor] = {}
        for key in lora_keys(self.n_layers):
            out[key] = lora[key[len(LLM_PREFIX):]]
        for key in fusion_keys():
            out[key] = fusion[key]
        return out

    def load_checkpoint(self, path: Path) -> None:
        if self.checkpoint == path:
            return
        state = read_checkpoint(path)
        targets = self.trained_parameters()
        check_keys(path, state, {k: tuple(p.shape) for k, p in targets.items()})
        with torch.no_grad():
            for key, param in targets.items():
                param.copy_(state[key].to(device=param.device, dtype=param.dtype))
        self.checkpoint = path

    # encoding ----------------------------------------------------------------
    def autocast(self) -> Any:
        """The original's encoders and fusion run under fp16 autocast on a GPU (fp32 weights)."""
        if self.device == "cpu" or self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=str(self.device).split(":")[0], dtype=self.dtype)

    @torch.inference_mode()
    def modality_tokens(self, mode: agi.InputMode, media: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Encoder features -> one [d_llm] token per modality the mode uses (and 'multi')."""
        tokens: dict[str, torch.Tensor] = {}
        hidden: dict[str, torch.Tensor] = {}
        with self.autocast():
            for kind in mode.media:
                if kind == "audio":
                    hidden[kind] = self.audio(media[kind])[None]            # [1, 8, d_audio]
                    tokens[kind] = self.fusion.audio_token(hidden[kind])[0]
                else:
                    hidden[kind] = self.face(media[kind])[None]             # [1, 8, d_visual]
                    tokens[kind] = self.fusion.visual_token(hidden[kind])[0]
            if mode.multi:
                tokens["multi"] = self.fusion.multi_token(hidden[mode.visual], hidden["audio"])[0]
        return tokens

    @torch.inference_mode()
    def encode(self, prompt: str, tokens: dict[str, torch.Tensor], max_new_tokens: int,
               max_length: int) -> Encoded:
        """Tokenize, truncate, embed, splice the modality tokens in place of their placeholders."""
        ids = agi.truncate(self.tokenizer(prompt, add_special_tokens=False)["input_ids"], max_new_tokens, max_length)
        id_t = torch.tensor(ids, dtype=torch.long, device=self.device)
        placeholder = torch.isin(id_t, torch.tensor(list(self.ids.values()), device=self.device))
        embeds = self.llm.get_input_embeddings()(id_t.masked_fill(placeholder, 0)).clone()
        for kind, token in agi.SPLICE_ORDER:
            where = (id_t == self.ids[token]).nonzero().flatten()
            if len(where) == 0:
                continue  # not in this mode, or cut away by truncation: silently not spliced
            if kind not in tokens:
                raise ValueError(f"the prompt holds {token} but this input mode has no {kind} token")
            if len(where) != 1:
                raise ValueError(f"the prompt holds {len(where)} {token} tokens where one is expected "
                                 "(does the subtitle contain that text?)")
            embeds[where[0]] = tokens[kind].to(embeds.dtype)
        mask = id_t != self.tokenizer.pad_token_id
        return Encoded(prompt, ids, embeds, mask, tokens)

    # generation --------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, batch: Sequence[Encoded], do_sample: bool, temperature: float, top_p: float,
                 max_new_tokens: int, seed: int) -> list[str]:
        """Left-padded batched generation; each row's answer as batch-size-1 generation returns it."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        width = max(len(e.input_ids) for e in batch)
        pad_embed = self.llm.get_input_embeddings()(
            torch.tensor([self.tokenizer.pad_token_id], device=self.device))[0]
        embeds = torch.stack([torch.cat([pad_embed.expand(width - len(e.input_ids), -1), e.embeds]) for e in batch])
        mask = torch.stack([torch.cat([torch.zeros(width - len(e.input_ids), dtype=torch.bool, device=self.device),
                                       e.mask]) for e in batch]).long()
        stops = [torch.tensor(s, device=self.device) for s in self.stops]

        class RowStop(StoppingCriteria):
            """The original's stop sequences, checked per row (the original checks row 0 only, at batch size 1)."""

            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
                done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                for stop in stops:
                    if input_ids.shape[1] >= len(stop):
                        done |= (input_ids[:, -len(stop):] == stop).all(dim=1)
                return done

        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, num_beams=1, min_length=1,
                                      repetition_penalty=1.0, length_penalty=1.0,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      stopping_criteria=StoppingCriteriaList([RowStop()]))
        if do_sample:  # top_k is not passed: it comes from the LLM's generation_config (20 for Qwen2.5-Instruct)
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        answers = []
        for row in out.tolist():
            n = agi.finished_length(row, self.eos_ids, self.stops)
            text = self.tokenizer.decode(row[:n], skip_special_tokens=False)
            answers.append(agi.postprocess(text, self.tokenizer.bos_token or "", self.tokenizer.eos_token or ""))
        return answers
