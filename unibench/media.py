"""Reading a sample's media for the adapters: video frames, OpenFace faces, audio.

Every loader raises :class:`MediaError` naming the file on a missing, empty or
corrupt input; the inference runner counts those per sample instead of
stopping the run. PyAV and soundfile are imported lazily (the `media` extra).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from unibench.errors import MissingExtraError


class MediaError(Exception):
    """A sample's media file cannot be used (per-sample failure, not fatal)."""


def existing_file(path: str | Path | None, kind: str, missing: str) -> Path:
    """The sample's media file of this kind, or a MediaError saying why not."""
    if path is None:
        raise MediaError(f"no {kind} file for this sample")
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: {missing}")
    return path


def uniform_indices(n_total: int, n: int) -> list[int]:
    """n indices spread evenly over n_total items (repeats when n_total < n)."""
    if n_total <= 0:
        return []
    if n_total <= n:
        idx = list(range(n_total))
        return idx + [idx[-1]] * (n - n_total)
    return [int(round(x)) for x in np.linspace(0, n_total - 1, n)]


def affectgpt_indices(n_total: int, n: int = 8) -> list[int]:
    """AffectGPT's face sampling: ``np.arange(0, n_total, n_total / min(n, n_total))``, padded with the last index."""
    if n_total <= 0:
        return []
    idx = np.arange(0, n_total, n_total / min(n, n_total)).astype(int).tolist()[:n]
    return idx + [idx[-1]] * (n - len(idx))


def load_frames(path: str | Path | None, n: int = 8, sampler=uniform_indices) -> np.ndarray:
    """N RGB frames of a video, picked by ``sampler(total, n)`` (default: uniform): uint8 array [n, H, W, 3].

    Only the picked frames are kept (memory does not grow with the clip's length): the frames are counted
    from the stream's packets first, then decoded once; where a file decodes another number of frames than
    it has packets, the picks are made again on the decoded count, so the result is always
    ``sampler(decoded frames, n)``.
    """
    path = existing_file(path, "video", "video not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty video file")
    try:
        import av
    except ImportError:
        raise MissingExtraError("av", "media", "reading video") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            total = sum(1 for packet in container.demux(video=0) if packet.size)
        picks = sampler(total, n)
        kept, decoded = _decode_picks(av, path, picks)
        if decoded != total:
            picks = sampler(decoded, n)
            kept, decoded = _decode_picks(av, path, picks)
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises many error types for broken files
        raise MediaError(f"{path}: cannot decode video ({exc})") from None
    if not decoded:
        raise MediaError(f"{path}: video has no frames")
    return np.stack([kept[i] for i in picks])


def _decode_picks(av, path: Path, picks: list[int]) -> tuple[dict[int, np.ndarray], int]:
    """The frames at ``picks`` as arrays, and how many frames the file decodes to."""
    wanted = set(picks)
    kept: dict[int, np.ndarray] = {}
    count = 0
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24")
            count = i + 1
    return kept, count


def load_faces(path: str | Path | None, n: int = 8) -> np.ndarray:
    """N OpenFace face crops from ``openface_face/<name>.npy`` sampled as AffectGPT does: [n, H, W, 3]."""
    path = existing_file(path, "face", "face file not found")
    try:
        faces = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise MediaError(f"{path}: cannot read face array ({exc})") from None
    if faces.ndim != 4 or faces.shape[0] == 0 or faces.shape[-1] != 3:
        raise MediaError(f"{path}: expected faces shaped [n, H, W, 3], got {list(faces.shape)}")
    return faces[affectgpt_indices(faces.shape[0], n)].astype(np.uint8, copy=False)


def read_audio(path: str | Path | None) -> tuple[np.ndarray, int]:
    """All channels of an audio file as it is: float32 [samples, channels] and its sample rate."""
    path = existing_file(path, "audio", "audio not found")
    try:
        import soundfile as sf
    except ImportError:
        raise MissingExtraError("soundfile", "media", "reading audio") from None
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise MediaError(f"{path}: cannot read audio ({exc})") from None
    if data.size == 0:
        raise MediaError(f"{path}: empty audio")
    return data, sr


def load_audio(path: str | Path | None, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (resampled linearly when the file differs)."""
    data, sr = read_audio(path)
    mono = data.mean(axis=1)
    if sr != sample_rate:
        n_out = max(1, int(round(len(mono) * sample_rate / sr)))
        mono = np.interp(np.linspace(0, len(mono) - 1, n_out), np.arange(len(mono)), mono).astype(np.float32)
    return mono
