"""Media loaders (unibench.media) on tiny generated files: frames, faces, audio, and every broken-file case."""
from __future__ import annotations

import numpy as np
import pytest

from media_fixtures import frame_value, write_faces, write_video, write_wav
from unibench.media import MediaError, load_audio, load_faces, load_frames, uniform_indices


def test_uniform_indices():
    assert uniform_indices(8, 4) == [0, 2, 5, 7]
    assert uniform_indices(8, 8) == list(range(8))
    assert uniform_indices(3, 5) == [0, 1, 2, 2, 2]  # short videos repeat the last frame
    assert uniform_indices(0, 4) == []


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_frames_are_sampled_uniformly(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", n_frames=8, size=32)
    frames = load_frames(path, 4)
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
    # frames 0, 2, 5, 7 of 8; lossy coding moves grey levels by a few steps at most
    got = [float(f.mean()) for f in frames]
    want = [frame_value(i) for i in (0, 2, 5, 7)]
    assert np.allclose(got, want, atol=8), (got, want)


def test_more_frames_than_the_video_has_repeat_the_last(tmp_path):
    path = write_video(tmp_path / "short.mp4", n_frames=3)
    frames = load_frames(path, 5)
    assert frames.shape[0] == 5
    assert np.array_equal(frames[2], frames[4])


def test_faces(tmp_path):
    path = write_faces(tmp_path / "s.npy", n=4, size=16)
    faces = load_faces(path, 8)
    assert faces.shape == (8, 16, 16, 3)
    # fewer crops than asked: each once, then the last repeated (as AffectGPT pads)
    assert [int(f[0, 0, 0]) for f in faces] == [0, 10, 20, 30, 30, 30, 30, 30]


def test_audio_16k_mono(tmp_path):
    audio = load_audio(write_wav(tmp_path / "a.wav", seconds=0.5))
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    assert abs(float(np.abs(audio).max()) - 0.3) < 0.01


def test_stereo_is_averaged_and_other_rates_resampled(tmp_path):
    stereo = load_audio(write_wav(tmp_path / "st.wav", seconds=0.25, channels=2))
    assert stereo.shape == (4000,)
    # a wrong sample rate is not an error: the file is resampled to 16 kHz (same duration)
    low = load_audio(write_wav(tmp_path / "8k.wav", seconds=0.5, sample_rate=8000))
    assert low.shape == (8000,)
    assert abs(float(np.abs(low).max()) - 0.3) < 0.02


def test_broken_media_raise_media_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    bad_npy = tmp_path / "bad.npy"
    bad_npy.write_bytes(b"\x93NUMPY garbage")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((4, 16), np.uint8))
    bad_wav = tmp_path / "bad.wav"
    bad_wav.write_bytes(b"RIFF....WAVEfmt junk")
    silent = tmp_path / "silent.wav"
    write_wav(silent, seconds=0.0)
    cases = [
        (lambda: load_frames(tmp_path / "missing.mp4"), "missing.mp4: video not found"),
        (lambda: load_frames(empty), "empty.mp4: empty video file"),
        (lambda: load_frames(junk), "junk.mp4: cannot decode video"),
        (lambda: load_frames(None), "no video file"),
        (lambda: load_faces(tmp_path / "nope.npy"), "nope.npy: face file not found"),
        (lambda: load_faces(bad_npy), "bad.npy: cannot read face array"),
        (lambda: load_faces(flat), "flat.npy: expected faces shaped [n, H, W, 3], got [4, 16]"),
        (lambda: load_audio(tmp_path / "none.wav"), "none.wav: audio not found"),
        (lambda: load_audio(bad_wav), "bad.wav: cannot read audio"),
        (lambda: load_audio(silent), "silent.wav: empty audio"),
    ]
    for call, message in cases:
        with pytest.raises(MediaError) as info:
            call()
        assert message in str(info.value)


def test_faces_are_sampled_as_affectgpt_does(tmp_path):
    """spec/affectgpt.md: np.arange(0, n, n / min(8, n)).astype(int), padded with the last index."""
    import numpy as np

    from unibench.media import affectgpt_indices, load_faces

    assert affectgpt_indices(20, 8) == [0, 2, 5, 7, 10, 12, 15, 17]
    assert affectgpt_indices(9, 8) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert affectgpt_indices(3, 8) == [0, 1, 2, 2, 2, 2, 2, 2]
    faces = np.stack([np.full((4, 4, 3), i, dtype=np.uint8) for i in range(20)])
    np.save(tmp_path / "s.npy", faces)
    got = load_faces(tmp_path / "s.npy", 8)
    assert got[:, 0, 0, 0].tolist() == [0, 2, 5, 7, 10, 12, 15, 17]


def test_long_clips_keep_only_the_sampled_frames(tmp_path, monkeypatch):
    """Memory does not grow with the clip: only the picked frames become arrays, and they are the frames a
    full decode would pick."""
    import av

    path = write_video(tmp_path / "long.mp4", n_frames=240, size=16, fps=24)
    with av.open(str(path)) as container:
        full = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    converted = []
    original = av.VideoFrame.to_ndarray

    def counting(self, *args, **kwargs):
        converted.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting)
    frames = load_frames(path, 8)
    assert len(converted) == 8  # not 240
    want = np.stack([full[i] for i in uniform_indices(len(full), 8)])
    assert np.array_equal(frames, want)
