"""Tiny generated media and synthetic task folders for adapter and inference tests.

    from media_fixtures import make_task_folder
    folder = make_task_folder(tmp_path / "data", "mer2023", n=2)   # --data-root is folder.parent

Each sample gets a video (8 frames 32x32; frame i is filled with the value
``frame_value(i)`` so frame sampling can be checked), a 16 kHz mono .wav and,
an ``openface_face/<name>.npy`` array [4, 16, 16, 3].
Ground truth and subtitles follow spec §1 through ``fixtures.write_task``;
the subtitles name the sample's emotion, so a text model or the lexicon
extractor has something to find. Everything is invented and written here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fixtures import IEMOCAP_EMOTIONS, MELD_EMOTIONS, write_task

# task id -> (video folder, video extension, audio folder, has openface faces); spec §1
MEDIA_LAYOUT = {
    "mer2023": ("video", ".mp4", "audio", True),
    "mer2024": ("video", ".mp4", "audio", True),
    "meld": ("subvideo", ".mp4", "subaudio", True),
    "iemocapfour": ("subvideo-tgt", ".avi", "subaudio", True),
    "cmumosi": ("subvideo", ".mp4", "subaudio", True),
    "cmumosei": ("subvideo_new", ".mp4", "subaudio", True),
    "sims": ("video", ".mp4", "audio", True),
    "simsv2": ("video_new", ".mp4", "audio", True),
    "ovmerdplus": ("video", ".mp4", "audio", True),
}
SUBTITLES = [
    "I am so happy to see you again, this is wonderful!",
    "Why did you do that? I feel sad and angry.",
    "I am worried about tomorrow.",
    "Wow, what a surprise!",
]
_BASIC_WORDS = {"mer2023": ["happy", "sad", "worried", "surprise"], "mer2024": ["happy", "sad", "worried", "surprise"],
                "meld": ["joy", "sadness", "fear", "surprise"], "iemocapfour": ["happy", "sad", "neutral", "anger"]}
_VALENCES = [1.6, -1.4, -0.6, 0.8]
_OPENSET = [["happy", "joyful"], ["sad", "angry"], ["worried"], ["surprised"]]


def frame_value(i: int) -> int:
    """The grey level of generated frame i (spaced widely so lossy coding keeps them apart)."""
    return 16 + 28 * i


def write_video(path: Path, n_frames: int = 8, size: int = 32, fps: int = 8) -> Path:
    """A tiny video (.mp4 or .avi, MPEG-4 part 2) whose frame i is uniformly ``frame_value(i)``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            img = np.full((size, size, 3), frame_value(i) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_wav(path: Path, seconds: float = 0.5, sample_rate: int = 16000, channels: int = 1) -> Path:
    """A 440 Hz tone (soundfile)."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(str(path), np.stack([tone] * channels, axis=1) if channels > 1 else tone, sample_rate)
    return path


def write_faces(path: Path, n: int = 4, size: int = 16) -> Path:
    """OpenFace-style face crops: uint8 [n, size, size, 3], face j filled with 10*j."""
    path.parent.mkdir(parents=True, exist_ok=True)
    faces = np.stack([np.full((size, size, 3), 10 * j, dtype=np.uint8) for j in range(n)])
    np.save(path, faces)
    return path


def sample_names(task_id: str, n: int) -> list[str]:
    if task_id == "iemocapfour":  # the test split is session 5: 5th character '5'
        return [f"Ses05F_impro0{i}_F00{i}" for i in range(n)]
    return [f"sample_{i:08d}" for i in range(n)]


def task_gt(task_id: str, names: list[str]) -> dict:
    if task_id in _BASIC_WORDS:
        words = _BASIC_WORDS[task_id]
        return {name: words[i % len(words)] for i, name in enumerate(names)}
    if task_id == "ovmerdplus":
        return {name: _OPENSET[i % len(_OPENSET)] for i, name in enumerate(names)}
    return {name: _VALENCES[i % len(_VALENCES)] for i, name in enumerate(names)}


def media_paths(folder: Path, task_id: str, name: str) -> dict[str, Path]:
    """Where a sample's media live in a task folder: {'video', 'audio', ('face')}."""
    video_dir, video_ext, audio_dir, has_face = MEDIA_LAYOUT[task_id]
    out = {"video": folder / video_dir / f"{name}{video_ext}", "audio": folder / audio_dir / f"{name}.wav"}
    if has_face:
        out["face"] = folder / "openface_face" / f"{name}.npy"
    return out


def make_task_folder(root: Path, task_id: str = "mer2023", n: int = 2, media: bool = True) -> Path:
    """A synthetic n-sample task in the real layout under ``root``; returns the task folder.

    Pass ``root`` as ``--data-root`` (with ``--allow-count-mismatch``: n is
    not the protocol's split size).
    """
    names = sample_names(task_id, n)
    subtitles = {name: SUBTITLES[i % len(SUBTITLES)] for i, name in enumerate(names)}
    folder = write_task(Path(root), task_id, task_gt(task_id, names), subtitles=subtitles)
    if media:
        for name in names:
            paths = media_paths(folder, task_id, name)
            write_video(paths["video"])
            write_wav(paths["audio"])
            if "face" in paths:
                write_faces(paths["face"])
    return folder


__all__ = ["IEMOCAP_EMOTIONS", "MELD_EMOTIONS", "MEDIA_LAYOUT", "SUBTITLES", "frame_value", "make_task_folder",
           "media_paths", "sample_names", "task_gt", "write_faces", "write_video", "write_wav"]
