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
instead of decord; the positions are the same: they are computed first from
the frame count decord reports (the number of video packets) and the average
frame rate, and only the frames at those positions are converted and kept, so
memory does not grow with the clip's length.

Their loader ends by moving the vision tower to CUDA unconditionally. Without
CUDA the adapter asks that loader for the plain model (the same tokenizer and
``from_pretrained`` call), loads the tower itself and moves the whole model to
the CPU; ``model_base`` (a projector-only or LoRA folder) then needs a GPU and
says so once. Any load failure stops the run with one line; it is never
retried per sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from unibench.adapters.base import Adapter, Sample, register_adapter
from unibench.errors import MissingExtraError, UserError
from unibench.runtime import torch_device_dtype, user_text
from unibench.media import MediaError
from unibench.fileio import safe_name

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


def _rgb(frame: Any) -> np.ndarray:
    """A decoded PyAV frame as an RGB array: the per-frame copy, made for the sampled frames only."""
    return frame.to_ndarray(format="rgb24")


class _PrepareError(Exception):
    """``prepare`` (the model's image processor) failed: not a media problem, re-raised as the original."""

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


def _open_video(path: Path) -> Any:
    import av

    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream")
    return container


def _decode_at(path: Path, positions: list[int], prepare: Callable[[np.ndarray], Any] | None) -> tuple[list, int]:
    """The frames at ``positions`` (sorted) through ``prepare``, and how many frames were decoded.

    Decoding stops after the last position; when the video ends before it, the
    count is the number of frames the video really has.
    """
    kept: list = []
    wanted = iter(positions)
    target = next(wanted, None)
    decoded = 0
    if target is None:
        return kept, decoded
    with _open_video(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            decoded = index + 1
            while target == index:
                rgb = _rgb(frame)
                if prepare is None:
                    kept.append(rgb)
                else:
                    try:
                        kept.append(prepare(rgb))
                    except Exception as exc:  # noqa: BLE001 - the processor's error, not the file's
                        raise _PrepareError(exc) from exc
                target = next(wanted, None)
            if target is None:
                break
    return kept, decoded


def sampled_frames(path: str | Path | None, max_frames: int = 64, video_framerate: int = 1,
                   prepare: Callable[[np.ndarray], Any] | None = None) -> tuple[list, list[int], float]:
    """Chat-UniVi's frames of a video, decoding only those: (frames, their positions, fps).

    The positions (:func:`frame_positions`) come first, from the frame count
    their decord loader uses (``len(VideoReader)``: the number of video
    packets, counted here without decoding) and the average frame rate; then
    one decoding pass converts only the frames at those positions to RGB
    arrays, each passed through ``prepare`` at once when given (e.g. the image
    processor), so at most ``max_frames`` frames are ever held, whatever the
    clip's length. A file whose decodable frames are fewer than its packets
    falls back to positions over the frames it really has (a second pass).
    """
    if path is None:
        raise MediaError("no video file for this sample")
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise MediaError(f"{path}: video missing or empty")
    try:
        import av  # noqa: F401
    except ImportError:
        raise MissingExtraError("av", "media", "chat-univi (reading video)") from None
    try:
        with _open_video(path) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            n_packets = sum(1 for packet in container.demux(stream) if packet.size)
        positions = frame_positions(n_packets, fps, max_frames, video_framerate)
        frames, decoded = _decode_at(path, positions, prepare)
        if len(frames) < len(positions) and decoded:  # fewer decodable frames than packets
            positions = frame_positions(decoded, fps, max_frames, video_framerate)
            frames, decoded = _decode_at(path, positions, prepare)
    except _PrepareError as exc:
        raise exc.original from None
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises many error types for broken files
        raise MediaError(f"{path}: cannot decode video ({exc})") from None
    if not frames:
        raise MediaError(f"{path}: video has no frames")
    return frames, positions, fps


def is_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ChatUniVi") is not None


# ---------------------------------------------------------------- the adapter

def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# Their loader (ChatUniVi/model/builder.py) takes the model name as its third
# argument; for names containing "chatunivi" it ends by loading the vision tower
# and moving it to CUDA unconditionally. Their evaluation scripts pass this one.
UPSTREAM_MODEL_NAME = "ChatUniVi"
# Without CUDA: a name without "chatunivi" makes it return the plain model after
# the very same tokenizer and from_pretrained calls (when there is no
# model_base); the adapter then adds the image tokens and loads the tower itself.
PLAIN_MODEL_NAME = "unibench-plain"


@register_adapter
class ChatUniViAdapter(Adapter):
    description = "Chat-UniVi through its own repository (not on PyPI)"
    inputs = ("video", "subtitle")
    Options = ChatUniViOptions

    def __init__(self, options: Any = None):
        super().__init__(options)
        self._m: dict[str, Any] = {}
        self._load_error: UserError | None = None

    @classmethod
    def status(cls) -> str:
        return "ready" if is_installed() else f"needs the Chat-UniVi repository installed ({REPO_URL})"

    def model_id(self) -> str:
        return self.options.name or safe_name(f"chat-univi-{Path(str(self.options.path)).name}")

    def _load(self) -> None:
        """Load once; a failure is a UserError (one line, the run stops) and is remembered, never retried."""
        if self._load_error is not None:
            raise self._load_error
        try:
            self._m = self._load_model()
        except UserError as exc:
            self._load_error = exc
            raise
        except Exception as exc:  # noqa: BLE001 - their code raises anything on a bad folder or environment
            self._load_error = UserError(f"chat-univi: loading the model from {self.options.path} failed "
                                         f"({_error_line(exc)})")
            raise self._load_error from None

    def _load_model(self) -> dict[str, Any]:
        if not is_installed():
            raise UserError(INSTALL)
        import importlib

        import torch

        o = self.options
        c = importlib.import_module("ChatUniVi.constants")
        conversation = importlib.import_module("ChatUniVi.conversation")
        builder = importlib.import_module("ChatUniVi.model.builder")
        mm_utils = importlib.import_module("ChatUniVi.mm_utils")
        if o.conv_mode not in conversation.conv_templates:
            raise UserError(f"chat-univi: unknown conv_mode '{o.conv_mode}' "
                            f"(known: {', '.join(conversation.conv_templates)})")
        device, dtype = torch_device_dtype(o.device, o.dtype)
        has_cuda = torch.cuda.is_available()
        if not has_cuda and o.model_base:
            raise UserError(f"chat-univi: model_base={o.model_base} needs a CUDA GPU (Chat-UniVi's loader moves the "
                            "vision tower to CUDA); without one, pass a full model folder as path and no model_base")
        tokenizer, model, _, _ = builder.load_pretrained_model(
            str(o.path), o.model_base or None, UPSTREAM_MODEL_NAME if has_cuda else PLAIN_MODEL_NAME)
        use_start_end = getattr(model.config, "mm_use_im_start_end", False)
        if getattr(model.config, "mm_use_im_patch_token", True):
            tokenizer.add_tokens([c.DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
        if use_start_end:
            tokenizer.add_tokens([c.DEFAULT_IM_START_TOKEN, c.DEFAULT_IM_END_TOKEN], special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))
        tower = model.get_vision_tower()
        if not tower.is_loaded:
            tower.load_model()
        model = model.to(device=device, dtype=dtype).eval()  # the tower is part of the model: it moves too
        return {"c": c, "conversation": conversation, "mm": mm_utils, "tokenizer": tokenizer, "model": model,
                "processor": tower.image_processor, "start_end": use_start_end, "device": device,
                "dtype": dtype, "torch": torch}

    def _frames(self, sample: Sample) -> Any:
        """The sampled frames through the image processor, [frames, 3, H, W] (only those frames are decoded)."""
        from PIL import Image

        m = self._m
        processor = m["processor"]

        def prepare(rgb: np.ndarray) -> Any:
            return processor.preprocess(Image.fromarray(rgb), return_tensors="pt")["pixel_values"][0]

        pixels, _, _ = sampled_frames(sample.video, self.options.max_frames, self.options.video_framerate, prepare)
        return m["torch"].stack(pixels)

    def _answer_one(self, sample: Sample) -> str:
        m, o = self._m, self.options
        torch, c, tok = m["torch"], m["c"], m["tokenizer"]
        video = self._frames(sample)  # MediaError: a media failure; anything else: a model error
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
        return clean_output(text, stop_str)

    def answer(self, samples: list[Sample]) -> list[Any]:
        if not self._m:
            self._load()
        out: list[Any] = []
        for sample in samples:
            try:
                out.append(self._answer_one(sample))
            except Exception as exc:  # noqa: BLE001 - this sample only (MediaError or a model error)
                out.append(exc)
        return out
