"""`chat-univi`: the published Chat-UniVi baseline, driven through its own code.

Chat-UniVi is not on PyPI. Install it once:

    git clone https://github.com/PKU-YuanGroup/Chat-UniVi && cd Chat-UniVi && pip install -e .
    run_bench --model chat-univi --model-args path=Chat-UniVi/Chat-UniVi --task mer2023 ...

Per sample, as the authors' video inference does: frames at ``video_framerate``
per second (at most ``max_frames``, spread uniformly when there are more),
each through the vision tower's image processor; one image token per frame
before the user text (wrapped in start/end tokens when the model config says
so); the ``conv_mode`` template (default ``simple``, as their demo);
generation stopped at the template's separator. Frames are decoded with PyAV
instead of decord; the positions are the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unibench.adapters.base import Adapter, Sample, register_adapter
from unibench.errors import UserError
from unibench.inference import torch_device_dtype, user_text
from unibench.media import MediaError
from unibench.results import safe_name

REPO_URL = "https://github.com/PKU-YuanGroup/Chat-UniVi"
INSTALL = (f"model 'chat-univi' needs the Chat-UniVi code, which is not on PyPI: git clone {REPO_URL}; "
           "cd Chat-UniVi; pip install -e .")


@dataclass
class ChatUniViOptions:
    path: str                      # model folder or hub id, e.g. Chat-UniVi/Chat-UniVi
    model_base: str = ""
    name: str = ""                 # leaderboard name (default: chat-univi-<folder name>)
    conv_mode: str = "simple"
    max_frames: int = 64           # their MAX_IMAGE_LENGTH
    video_framerate: int = 1       # frames per second sampled before the max_frames cap
    do_sample: bool = True         # their inference samples
    temperature: float = 0.2
    top_p: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 1024
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"


# ---------------------------------------------------------------- request assembly (plain functions)

def frame_positions(n_total: int, fps: float, max_frames: int, video_framerate: int = 1) -> list[int]:
    """Chat-UniVi's frame choice: every round(fps / framerate)-th frame, then at most max_frames of them."""
    if n_total <= 0:
        return []
    stride = max(1, int(round(float(fps) / max(1, video_framerate))))
    positions = list(range(0, n_total, stride))
    if len(positions) > max_frames:
        positions = [positions[i] for i in np.linspace(0, len(positions) - 1, num=max_frames, dtype=int)]
    return positions


def video_prompt(text: str, n_frames: int, use_im_start_end: bool, image_token: str = "<image>",
                 im_start: str = "<im_start>", im_end: str = "<im_end>") -> str:
    """The user message: one image token per frame, then the text."""
    tokens = image_token * n_frames
    return (f"{im_start}{tokens}{im_end}" if use_im_start_end else tokens) + "\n" + text


def clean_output(text: str, stop_str: str) -> str:
    text = text.strip()
    if stop_str and text.endswith(stop_str):
        text = text[:-len(stop_str)]
    return text.strip()


def decode_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    """All RGB frames of a video and its frame rate (PyAV)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise MediaError(f"{path}: video missing or empty")
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode video ({exc})") from None
    if not frames:
        raise MediaError(f"{path}: video has no frames")
    return frames, fps


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ChatUniVi") is not None


# ---------------------------------------------------------------- the adapter

@register_adapter
class ChatUniViAdapter(Adapter):
    name = "chat-univi"
    description = "Chat-UniVi through its own repository (not on PyPI)"
    inputs = ("video", "subtitle")
    Options = ChatUniViOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._m: dict[str, Any] = {}

    @classmethod
    def status(cls) -> str:
        return "ready" if is_installed() else f"needs the Chat-UniVi repository installed ({REPO_URL})"

    def model_id(self) -> str:
        return self.options.name or safe_name(f"chat-univi-{Path(str(self.options.path)).name}")

    def _load(self) -> None:
        if not is_installed():
            raise UserError(INSTALL)
        import importlib

        import torch

        c = importlib.import_module("ChatUniVi.constants")
        conversation = importlib.import_module("ChatUniVi.conversation")
        builder = importlib.import_module("ChatUniVi.model.builder")
        mm_utils = importlib.import_module("ChatUniVi.mm_utils")
        if self.options.conv_mode not in conversation.conv_templates:
            raise UserError(f"chat-univi: unknown conv_mode '{self.options.conv_mode}' "
                            f"(known: {', '.join(conversation.conv_templates)})")
        device, dtype = torch_device_dtype(self.options.device, self.options.dtype)
        tokenizer, model, _, _ = builder.load_pretrained_model(str(self.options.path), self.options.model_base or None,
                                                               "ChatUniVi")
        use_start_end = getattr(model.config, "mm_use_im_start_end", False)
        if getattr(model.config, "mm_use_im_patch_token", True):
            tokenizer.add_tokens([c.DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
        if use_start_end:
            tokenizer.add_tokens([c.DEFAULT_IM_START_TOKEN, c.DEFAULT_IM_END_TOKEN], special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))
        tower = model.get_vision_tower()
        if not tower.is_loaded:
            tower.load_model()
        model = model.to(device=device, dtype=dtype).eval()
        self._m = {"c": c, "conversation": conversation, "mm": mm_utils, "tokenizer": tokenizer, "model": model,
                   "processor": tower.image_processor, "start_end": use_start_end, "device": device,
                   "dtype": dtype, "torch": torch}

    def _frames(self, sample: Sample) -> Any:
        from PIL import Image

        m = self._m
        frames, fps = decode_video(sample.video)
        picked = [frames[i] for i in frame_positions(len(frames), fps, self.options.max_frames,
                                                     self.options.video_framerate)]
        pixels = [m["processor"].preprocess(Image.fromarray(f), return_tensors="pt")["pixel_values"][0] for f in picked]
        return m["torch"].stack(pixels)

    def answer(self, samples: list[Sample]) -> list[Any]:
        if not self._m:
            self._load()
        m, o = self._m, self.options
        torch, c, tok = m["torch"], m["c"], m["tokenizer"]
        out: list[Any] = []
        for sample in samples:
            try:
                video = self._frames(sample)
            except MediaError as exc:
                out.append(exc)
                continue
            conv = m["conversation"].conv_templates[o.conv_mode].copy()
            conv.append_message(conv.roles[0], video_prompt(user_text(sample), len(video), m["start_end"],
                                                            c.DEFAULT_IMAGE_TOKEN, c.DEFAULT_IM_START_TOKEN,
                                                            c.DEFAULT_IM_END_TOKEN))
            conv.append_message(conv.roles[1], None)
            ids = m["mm"].tokenizer_image_token(conv.get_prompt(), tok, c.IMAGE_TOKEN_INDEX, return_tensors="pt")
            ids = ids.unsqueeze(0).to(m["device"])
            sep_two = conv.sep_style == m["conversation"].SeparatorStyle.TWO
            stop_str = conv.sep2 if sep_two else conv.sep
            stopping = m["mm"].KeywordsStoppingCriteria([stop_str], tok, ids)
            torch.manual_seed(o.seed)
            with torch.inference_mode():
                output_ids = m["model"].generate(
                    ids, images=video.to(device=m["device"], dtype=m["dtype"]), do_sample=o.do_sample,
                    temperature=o.temperature, top_p=o.top_p, num_beams=o.num_beams,
                    max_new_tokens=o.max_new_tokens, use_cache=True, stopping_criteria=[stopping])
            text = tok.batch_decode(output_ids[:, ids.shape[1]:], skip_special_tokens=True)[0]
            out.append(clean_output(text, stop_str))
        return out
