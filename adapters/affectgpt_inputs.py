"""What AffectGPT sees, computed as its released inference does (``spec/affectgpt.md``).

Everything here is model-free: the prompt templates of each input mode, face
sampling and CLIP pixel normalisation, audio loading / resampling / clip
sampling / per-clip mean removal / HuBERT normalisation, the two-step prompt
truncation, the stop sequences and the answer post-processing. The torch
modules live in ``affectgpt_model.py``; torch is imported inside functions so
this module imports with numpy alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unibench.errors import MissingExtraError
from unibench.media import MediaError, affectgpt_indices, existing_file, load_frames, read_audio

# Placeholder tokens, in the order the original adds them to the tokenizer (they take the next free ids).
IMAGE, AUDIO, FRAME, FACE, MULTI = "<ImageHere>", "<AudioHere>", "<FrameHere>", "<FaceHere>", "<MultiHere>"
PLACEHOLDERS = (IMAGE, AUDIO, FRAME, FACE, MULTI)
# The order in which placeholders are replaced by modality tokens (the original's splice loop).
SPLICE_ORDER = (("frame", FRAME), ("face", FACE), ("audio", AUDIO), ("multi", MULTI), ("image", IMAGE))

N_FRAMES = 8          # faces / frames per sample
N_CLIPS = 8           # audio clips per sample
SAMPLE_RATE = 16000
CLIP_SECONDS = 2
IMAGE_SIZE = 224

# --------------------------------------------------------------------------- input modes

_AUDIO_PART = "The audio content is as follows: <Audio><AudioHere></Audio>. "
_FACE_PART = "we uniformly sample raw frames from the video and extract faces from these frames: <Video><FaceHere></Video>. "
_FRAME_PART = "we uniformly sample raw frames from the video: <Video><FrameHere></Video>. "
_MULTI_PART = "The audio and video merged info is: <Multi><MultiHere></Multi>. "
_SUBTITLE_PART = "The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. "
_ASK = "Now, please answer my question based on all the provided information. {question} ###Assistant: "


@dataclass(frozen=True)
class InputMode:
    """One ``face_or_frame`` setting of the original: its prompt and what it encodes."""

    name: str
    template: str                 # with {subtitle} and {question}
    media: tuple[str, ...]        # of 'face', 'frame', 'audio' (loaded and encoded)
    multi: bool = False           # the pre-fused audio+visual token

    @property
    def visual(self) -> str | None:
        """The visual stream the multi token fuses with the audio ('face' or 'frame')."""
        return next((m for m in self.media if m in ("face", "frame")), None)

    def prompt(self, subtitle: str, question: str) -> str:
        # str.replace, not format(): subtitles may hold braces
        return self.template.replace("{subtitle}", subtitle).replace("{question}", question)


def _mode(name: str, parts: Sequence[str], media: tuple[str, ...], multi: bool = False,
          human: bool = True) -> InputMode:
    text = "".join(parts) + _ASK
    return InputMode(name, ("###Human: " if human else "") + text, media, multi)


# The prompts of base_dataset.get_prompt_for_multimodal at 5421fac, word for word (the capitals of
# 'Meanwhile, we ...' / 'We ...' and the missing '###Human: ' of the three *_text ablations included).
MODES: dict[str, InputMode] = {m.name: m for m in (
    _mode("multiface_audio_face_text", [_MULTI_PART, _AUDIO_PART, "Meanwhile, " + _FACE_PART, _SUBTITLE_PART],
          ("face", "audio"), multi=True),
    _mode("multiframe_audio_frame_text", [_MULTI_PART, _AUDIO_PART, "Meanwhile, " + _FRAME_PART, _SUBTITLE_PART],
          ("frame", "audio"), multi=True),
    _mode("multiface_text", [_MULTI_PART, _SUBTITLE_PART], ("face", "audio"), multi=True),
    _mode("face", [_AUDIO_PART, "Meanwhile, " + _FACE_PART, _SUBTITLE_PART], ("face", "audio")),
    _mode("frame", [_AUDIO_PART, "Meanwhile, " + _FRAME_PART, _SUBTITLE_PART], ("frame", "audio")),
    _mode("audio_text", [_AUDIO_PART, _SUBTITLE_PART], ("audio",), human=False),
    _mode("face_text", ["We" + _FACE_PART[2:], _SUBTITLE_PART], ("face",), human=False),
    _mode("frame_text", [_FRAME_PART, _SUBTITLE_PART], ("frame",), human=False),
    _mode("audioonly", [_AUDIO_PART], ("audio",)),
    _mode("faceonly", ["We" + _FACE_PART[2:]], ("face",)),
    _mode("frameonly", ["We" + _FRAME_PART[2:]], ("frame",)),
    _mode("textonly", [_SUBTITLE_PART], ()),
)}
DEFAULT_MODE = "multiface_audio_face_text"


# --------------------------------------------------------------------------- faces / frames

def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise MissingExtraError("cv2", "affectgpt", "AffectGPT's face resizing (opencv-python-headless)") from None
    return cv2


def sample_faces(faces: np.ndarray, source: str | Path, n: int = N_FRAMES) -> np.ndarray:
    """``load_face`` of the original: each crop cv2-resized to 224x224, ``n`` taken uniformly -> uint8 [n,224,224,3].

    The original resizes every crop and then samples; resizing only the sampled
    crops gives the same pixels. The float copy it builds is cast to uint8 before
    CLIP sees it (``func_VideoReader_to_Image``), so that cast is kept too.
    """
    if faces.ndim != 4 or faces.shape[0] == 0 or faces.shape[-1] != 3:
        raise MediaError(f"{source}: expected face crops shaped [n, H, W, 3], got {list(faces.shape)}")
    if faces.dtype.kind not in "uif" or faces.dtype == np.float16:
        raise MediaError(f"{source}: face crops of dtype {faces.dtype} (expected uint8 or float)")
    cv2 = _cv2()
    try:
        picked = [cv2.resize(faces[i], (IMAGE_SIZE, IMAGE_SIZE)) for i in affectgpt_indices(faces.shape[0], n)]
    except cv2.error as exc:
        raise MediaError(f"{source}: cannot resize face crops of dtype {faces.dtype} ({exc})") from None
    return np.stack(picked).astype(np.float32).astype(np.uint8)


def load_face_file(path: str | Path | None, n: int = N_FRAMES) -> np.ndarray:
    """``openface_face/<name>.npy`` -> uint8 [n, 224, 224, 3] (MediaError naming the file on a bad one)."""
    path = existing_file(path, "face", "face file not found")
    try:
        faces = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a broken file
        raise MediaError(f"{path}: cannot read face array ({type(exc).__name__}: {exc})") from None
    return sample_faces(np.asarray(faces), path, n)


def load_video_frames(path: str | Path | None, n: int = N_FRAMES) -> np.ndarray:
    """Frame modes: ``n`` frames with the original's index rule, resized to 224x224 -> uint8 [n,224,224,3].

    The original decodes with decord at 224x224; here PyAV decodes and cv2
    resizes, so frame-mode pixels are close to, not equal to, the original's.
    """
    frames = load_frames(path, n, sampler=affectgpt_indices)
    cv2 = _cv2()
    return np.stack([cv2.resize(f, (IMAGE_SIZE, IMAGE_SIZE)) for f in frames])


def clip_pixels(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """CLIP's image processor on 224x224 uint8 crops: resize and crop are no-ops, so ``(x/255 - mean)/std``.

    Computed the way transformers 4.49's numpy processor does it: rescale in
    float64 then cast to float32, normalise in float32. -> float32 [n, 3, 224, 224].
    """
    if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected 224x224 crops, got {images.shape[1:3]}")
    x = (images.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- audio

def resample(waveform: Any, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
             rolloff: float = 0.99) -> Any:
    """Band-limited sinc resampling with a Hann window: torchaudio.functional.resample's defaults.

    The original resamples with torchaudio (whose builds lag torch's); this is
    the same windowed-sinc polyphase filter written on plain torch.
    ``waveform``: float tensor [..., time].
    """
    import torch

    if orig_freq == new_freq:
        return waveform
    g = math.gcd(int(orig_freq), int(new_freq))
    up, down = int(new_freq) // g, int(orig_freq) // g
    dtype = waveform.dtype
    base = min(up, down) * rolloff
    width = math.ceil(lowpass_filter_width * down / base)
    # kernel[j, k]: weight of input sample (k - width) for output phase j, times in input periods
    taps = torch.arange(-width, width + down, dtype=dtype)[None, None] / down
    t = torch.arange(0, -up, -1, dtype=dtype)[:, None, None] / up + taps
    t = (t * base).clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=dtype), t.sin() / t) * (window * (base / down))
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + down))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=down)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[..., :math.ceil(up * length / down)]
    return out.reshape(*shape[:-1], out.shape[-1])


def load_waveform(path: str | Path | None) -> Any:
    """The original's ``load_audio`` up to clipping: float32 tensor [channels, >= 32000] at 16 kHz.

    Resampled before the channel mix; averaged to mono only for exactly two
    channels; zero-padded to 2 s when shorter.
    """
    import torch

    data, sr = read_audio(path)
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    if sr != SAMPLE_RATE:
        wave = resample(wave, sr, SAMPLE_RATE)
    if wave.shape[0] == 2:
        wave = wave.mean(dim=0, keepdim=True)
    need = CLIP_SECONDS * SAMPLE_RATE
    if wave.shape[1] < need:
        wave = torch.nn.functional.pad(wave, (0, need - wave.shape[1]))
    return wave


def clip_starts(n_samples: int, k: int = N_CLIPS, sample_rate: int = SAMPLE_RATE,
                seconds: int = CLIP_SECONDS) -> list[int]:
    """First sample of each of ``k`` clips: pytorchvideo's constant-clips sampler in exact fractions.

    The duration is a float (``n / sr``); the sampler turns ``max(D - 2, 0)``
    into an exact Fraction, so clip ``i`` starts at ``floor(i * (D-2)/k * sr)``.
    """
    duration = n_samples / sample_rate
    span = Fraction(max(duration - seconds, 0))
    return [int(span / k * i * sample_rate) for i in range(k)]


def audio_clips(wave: Any) -> Any:
    """[channels, L] -> float32 [k, channels, 32000], each clip's own mean removed.

    The mean removal is a side effect in the original (the unused mel-spectrogram
    transform runs ``waveform -= waveform.mean()`` on the clip tensors in place);
    it changes what HuBERT sees, so it is kept.
    """
    import torch

    size = CLIP_SECONDS * SAMPLE_RATE
    clips = torch.stack([wave[:, s:s + size] for s in clip_starts(wave.shape[1])])
    for clip in clips:
        clip -= clip.mean()
    return clips


def hubert_input(clips: Any, do_normalize: bool = True) -> np.ndarray:
    """Channel 0 of the clips as HuBERT's batch of 8, normalised the way the original calls the feature extractor.

    The original passes the stacked [8, 32000] tensor, which the Wav2Vec2
    feature extractor takes as ONE example: zero mean, unit variance over all
    eight clips together (numpy float32; the variance's square root in float64,
    as numpy 1.x promoted it).
    """
    x = np.ascontiguousarray(clips[:, 0, :].cpu().numpy() if hasattr(clips, "cpu") else clips[:, 0, :],
                             dtype=np.float32)
    if not do_normalize:
        return x
    mean = x.mean()
    denom = np.float32(np.sqrt(np.float64(x.var()) + 1e-7))
    return (x - mean) / denom


# --------------------------------------------------------------------------- prompt, truncation, answer

def truncate(ids: list[int], max_new_tokens: int, max_length: int) -> list[int]:
    """The two truncation steps: the tokenizer keeps the first ``max_length`` ids, then room is made
    for ``max_new_tokens`` by keeping only the last ``max_length - max_new_tokens``."""
    ids = list(ids[:max_length])
    begin = max(0, len(ids) + max_new_tokens - max_length)
    return ids[begin:]


def stop_sequences(tokenizer: Any) -> list[list[int]]:
    """The original's stop list: [eos], [id of '###'], ['##', '#'], ['#', '##'] (ids from this tokenizer)."""
    def piece(text: str, index: int) -> int | None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[index] if len(ids) > index else None

    three, two, one = piece("###", 0), piece("a##", 1), piece("a#", 1)
    stops = [[tokenizer.eos_token_id], [three]]
    if two is not None and one is not None:
        stops += [[two, one], [one, two]]
    return [s for s in stops if None not in s]


def finished_length(tokens: Sequence[int], eos_ids: Sequence[int], stops: Sequence[Sequence[int]]) -> int:
    """How many generated tokens a row really has: up to and including its first eos or stop sequence.

    Batched generation pads rows that finished early; cutting there makes each
    row's text what batch-size-1 generation would have returned.
    """
    eos = set(eos_ids)
    for i, tok in enumerate(tokens):
        if tok in eos:
            return i + 1
        for stop in stops:
            n = len(stop)
            if i + 1 >= n and list(tokens[i + 1 - n:i + 1]) == list(stop):
                return i + 1
    return len(tokens)


def postprocess(text: str, bos: str, eos: str) -> str:
    """The original's answer clean-up on the decoded new tokens (special tokens kept)."""
    if bos and bos in text:
        text = text.split(bos)[1]
    if eos and eos in text:
        text = text.split(eos)[0]
    text = text.rsplit("###", 1)[0]
    return text.split("Assistant:")[-1].strip()


# --------------------------------------------------------------------------- checkpoints and epochs

def parse_epochs(text: str) -> list[int] | None:
    """``30-60:5`` (every 5th epoch from 30 to 60), ``30,45,60``, ``50``; '' or 'all' -> None (every file)."""
    text = (text or "").strip()
    if text in ("", "all"):
        return None
    out: list[int] = []
    for part in text.split(";" if ";" in text else ","):
        part = part.strip()
        step = 1
        if ":" in part:
            part, step_text = part.split(":", 1)
            step = int(step_text)
            if step < 1:
                raise ValueError(text)
        if "-" in part:
            lo, hi = (int(p) for p in part.split("-", 1))
            # the original's test_epochs/skip_epoch rule: epochs in [lo, hi] divisible by the step
            out.extend(e for e in range(lo, hi + 1) if e % step == 0)
        else:
            out.append(int(part))
    if not out or any(e < 0 for e in out):
        raise ValueError(text)
    return sorted(dict.fromkeys(out))


def checkpoint_epoch(path: Path) -> int | None:
    """``checkpoint_000045_loss_0.551.pth`` -> 45 (None for other names)."""
    parts = path.stem.split("_")
    if len(parts) >= 2 and parts[0] == "checkpoint" and parts[1].isdigit():
        return int(parts[1])
    return None
