"""`openai`: any OpenAI-compatible multimodal chat endpoint (OpenAI, `vllm serve`, LM Studio, ...).

    export OPENAI_API_KEY=...     # or api_key_env=MY_VAR; never on the command line
    run_bench --model openai --model-args model=gpt-4o-mini,frames=8 --task mer2023 ...

One chat request per sample: ``frames`` uniformly sampled video frames (or
OpenFace face crops with ``visual=face``) as base64 ``image_url`` parts, the
.wav as an ``input_audio`` part when ``audio=true`` (for endpoints that take
audio), then the subtitle and question as text. Requests run ``concurrency``
at a time; 429, 5xx, timeouts and broken responses are retried with
exponential backoff that honours ``Retry-After`` (the helpers are shared with
the ``openai`` extractor). A sample that still fails is counted, not fatal; a
refused key, an unknown model or an unreachable server stops the run.
"""
from __future__ import annotations

import base64
import io
import struct
import wave
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from unibench.adapters.base import Adapter, Sample, register_adapter
from unibench.errors import MissingExtraError, UserError
from unibench.runtime import requirement_status, user_text
from unibench.media import load_audio, load_faces, load_frames
from unibench.fileio import safe_name


@dataclass
class OpenAIAdapterOptions:
    model: str                        # the endpoint's model name
    base_url: str = ""                # "" = the SDK's default (OPENAI_BASE_URL, else api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"
    name: str = ""                    # leaderboard name (default: openai-<model>)
    visual: str = "video"             # video | face (OpenFace crops) | none
    frames: int = 8                   # images per sample
    max_side: int = 448               # downscale so the longer side is at most this (0 = keep)
    image_format: str = "auto"        # auto (jpeg with Pillow, else png) | jpeg | png
    audio: bool = False               # send the .wav as input_audio (endpoints that take audio)
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int | None = None
    system: str = ""
    concurrency: int = 4              # requests in flight
    timeout: float = 120.0            # seconds per request
    max_retries: int = 5              # per sample, after the first try
    backoff: float = 1.0              # first retry delay (s); doubles each time


# ---------------------------------------------------------------- request assembly (plain functions)

def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal PNG (8-bit RGB, no filtering) with zlib only: no Pillow needed."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))


def has_pillow() -> bool:
    import importlib.util

    return importlib.util.find_spec("PIL") is not None


def encode_image(rgb: np.ndarray, fmt: str) -> str:
    """An image as a data URL (jpeg through Pillow, png through :func:`png_bytes`)."""
    if fmt == "jpeg":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode()


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink by a whole factor (block mean) until the longer side fits ``max_side``."""
    h, w = rgb.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return rgb
    k = -(-max(h, w) // max_side)
    h2, w2 = h // k, w // k
    blocks = rgb[:h2 * k, :w2 * k].reshape(h2, k, w2, k, -1).astype(np.float32)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def wav_bytes(audio: np.ndarray, sample_rate: int = 16000) -> bytes:
    """Mono float audio -> 16-bit PCM .wav (stdlib only)."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def build_messages(sample: Sample, opts: OpenAIAdapterOptions) -> list[dict[str, Any]]:
    """The chat messages for one sample: images, audio, then the text. Raises MediaError."""
    content: list[dict[str, Any]] = []
    if opts.visual != "none" and opts.frames > 0:
        images = load_frames(sample.video, opts.frames) if opts.visual == "video" else load_faces(sample.face, opts.frames)
        for img in images:
            content.append({"type": "image_url", "image_url": {"url": encode_image(downscale(img, opts.max_side),
                                                                                   opts.image_format)}})
    if opts.audio:
        data = base64.b64encode(wav_bytes(load_audio(sample.audio))).decode()
        content.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
    content.append({"type": "text", "text": user_text(sample)})
    messages = [{"role": "system", "content": opts.system}] if opts.system else []
    return messages + [{"role": "user", "content": content}]


def request_body(messages: list[dict[str, Any]], opts: OpenAIAdapterOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": opts.model, "messages": messages, "max_tokens": opts.max_tokens,
                            "temperature": opts.temperature}
    if opts.seed is not None:
        body["seed"] = opts.seed
    return body


# ---------------------------------------------------------------- the adapter

@register_adapter
class OpenAIAdapter(Adapter):
    description = ("any OpenAI-compatible multimodal chat endpoint: frames as images + subtitle "
                   "(visual=face: OpenFace crops; audio=true: input_audio); key from $OPENAI_API_KEY")
    inputs = ("video", "subtitle")
    Options = OpenAIAdapterOptions
    resume_ignore = ("backoff",)

    def __init__(self, options: Any = None):
        super().__init__(options)
        o = self.options
        if o.visual not in ("video", "face", "none"):
            raise UserError(f"--model-args: visual must be video, face or none, got '{o.visual}'")
        if o.image_format not in ("auto", "jpeg", "png"):
            raise UserError(f"--model-args: image_format must be auto, jpeg or png, got '{o.image_format}'")
        if o.image_format == "jpeg" and not has_pillow():
            raise MissingExtraError("Pillow", "media", "image_format=jpeg")
        if o.image_format == "auto":  # resolved now, so results and the resume key say which was sent
            o.image_format = "jpeg" if has_pillow() else "png"
        if o.concurrency < 1 or o.max_retries < 0 or o.timeout <= 0 or o.frames < 0:
            raise UserError("--model-args: concurrency must be >= 1, max_retries >= 0, timeout > 0, frames >= 0")
        # what this instance feeds: the runner checks these files exist before asking
        self.inputs = tuple([o.visual] if o.visual != "none" and o.frames > 0 else []) + \
            (("audio",) if o.audio else ()) + ("subtitle",)
        self.default_batch_size = 2 * o.concurrency
        self._client: Any = None
        self._errors: Any = None

    @classmethod
    def status(cls) -> str:
        return requirement_status(("openai",))

    def model_id(self) -> str:
        return self.options.name or safe_name(f"openai-{self.options.model}")

    def _base_url(self) -> str:
        from unibench.openai_http import resolve_base_url

        return resolve_base_url(self.options.base_url)

    def _connect(self) -> Any:
        if self._client is None:
            from unibench.openai_http import make_client

            self._client, self._errors = make_client(self.options, "model 'openai'")
        return self._client

    def _fatal(self, message: str) -> UserError:
        return UserError(f"openai: {message} (server {self._base_url()}, model '{self.options.model}')")

    def _request(self, body: dict[str, Any]) -> str:
        from unibench.openai_http import chat_with_retries

        return chat_with_retries(self._client, self._errors, body, self.options, self._fatal)

    def _one(self, sample: Sample) -> str | Exception:
        try:
            return self._request(request_body(build_messages(sample, self.options), self.options))
        except UserError:
            raise
        except Exception as exc:  # MediaError, RequestFailed: this sample only
            return exc

    def answer(self, samples: list[Sample]) -> list[Any]:
        self._connect()
        if len(samples) == 1 or self.options.concurrency == 1:
            return [self._one(s) for s in samples]
        with ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="unibench-openai") as pool:
            return list(pool.map(self._one, samples))  # a UserError in any worker re-raises here
