"""`openai` adapter against a local OpenAI-compatible server on 127.0.0.1 (no network)."""
from __future__ import annotations

import base64
import csv
import json
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fixtures import tiny_lexicon_dir  # noqa: F401  (pytest fixture)
from media_fixtures import SUBTITLES, frame_value, make_task_folder, media_paths
from unibench.adapters.base import Sample, make_adapter
from unibench.adapters.openai_adapter import OpenAIAdapter, build_messages, downscale, png_bytes, wav_bytes
from unibench.cli import main
from unibench.errors import UserError
from unibench.inference import read_answer_log
from unibench.prompts import AFFECTGPT_OV_QUESTION

pytest.importorskip("openai")
SECRET = "sk-test-secret-value-123"


class FakeServer:
    """Records every chat request; answers from a script of (status, headers) first, then 200."""

    def __init__(self):
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.script: list[tuple[int, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization", ""))
                    status, headers = server.script.pop(0) if server.script else (200, {})
                if status != 200:
                    payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                else:
                    user = body["messages"][-1]["content"]
                    n_images = sum(1 for part in user if part["type"] == "image_url")
                    text = next(part["text"] for part in user if part["type"] == "text")
                    word = "happy" if "happy" in text else "sad"
                    payload = json.dumps({
                        "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant",
                                                 "content": f"I see {n_images} frames; the person is {word}."}}],
                    }).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("UNIBENCH_TEST_KEY", SECRET)
    with FakeServer() as srv:
        yield srv


def decode_png(data: bytes) -> np.ndarray:
    """Just enough of a PNG reader for png_bytes' output (RGB, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(tag + chunk) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if tag == b"IHDR":
            size = struct.unpack(">II", chunk[:8])
        elif tag == b"IDAT":
            idat += chunk
        pos += 12 + length
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def image_arrays(user_content: list[dict]) -> list[np.ndarray]:
    out = []
    for part in user_content:
        if part["type"] == "image_url":
            url = part["image_url"]["url"]
            assert url.startswith("data:image/png;base64,")
            out.append(decode_png(base64.b64decode(url.split(",", 1)[1])))
    return out


def test_png_encoder_round_trips():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(png_bytes(img)), img)


def test_downscale_keeps_the_longer_side_within_bounds():
    img = np.arange(8 * 6 * 3, dtype=np.uint8).reshape(8, 6, 3)
    small = downscale(img, 4)
    assert small.shape == (4, 3, 3)
    assert small[0, 0, 0] == round(img[:2, :2, 0].mean())
    assert downscale(img, 0) is img and downscale(img, 8) is img


def test_run_bench_sends_frames_and_subtitle(capsys, server, tmp_path, tiny_lexicon_dir):
    make_task_folder(tmp_path / "data", "mer2023", n=2)
    rc = main(["--model", "openai", "--model-args",
               f"model=test-vlm,base_url={server.url},api_key_env=UNIBENCH_TEST_KEY,frames=4,image_format=png,"
               "concurrency=2",
               "--task", "mer2023", "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
               "--allow-count-mismatch", "--extractor", "lexicon", "--lexicon", str(tiny_lexicon_dir),
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert len(server.requests) == 2
    by_subtitle = {}
    for body in server.requests:
        assert body["model"] == "test-vlm" and body["temperature"] == 0.0 and body["max_tokens"] == 512
        content = body["messages"][-1]["content"]
        frames = image_arrays(content)
        assert len(frames) == 4 and frames[0].shape == (32, 32, 3)
        # the frames are the video's (0, 2, 5, 7 of 8), in order
        assert np.allclose([f.mean() for f in frames], [frame_value(i) for i in (0, 2, 5, 7)], atol=8)
        text = content[-1]["text"]
        assert content[-1]["type"] == "text" and text.endswith(AFFECTGPT_OV_QUESTION)
        by_subtitle[text] = body
    assert set(by_subtitle) == {f"The subtitle of this video is: {s}\n{AFFECTGPT_OV_QUESTION}" for s in SUBTITLES[:2]}
    assert server.auth == [f"Bearer {SECRET}"] * 2
    # answers on disk and a leaderboard row; the key appears nowhere in the results
    records, _ = read_answer_log(tmp_path / "out" / "openai-test-vlm" / "answers" / "mer2023.jsonl")
    assert sorted(r["answer"] for r in records) == ["I see 4 frames; the person is happy.",
                                                     "I see 4 frames; the person is sad."]
    with open(tmp_path / "out" / "leaderboard.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert row["model"] == "openai-test-vlm" and row["mer2023"] == "100.00"
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in out + err


def test_retries_honour_retry_after_then_succeed(server, tmp_path):
    server.script = [(429, {"Retry-After": "0"}), (503, {"retry-after-ms": "10"})]
    make_task_folder(tmp_path / "data", "mer2023", n=1)
    adapter = make_adapter("openai", f"model=m,base_url={server.url},api_key_env=UNIBENCH_TEST_KEY,"
                                     "frames=1,image_format=png,backoff=0.01")
    sample = _sample(tmp_path, 0)
    assert adapter.answer([sample]) == ["I see 1 frames; the person is happy."]
    assert len(server.requests) == 3


def test_a_sample_that_keeps_failing_is_returned_as_its_error(server, tmp_path):
    server.script = [(500, {})] * 3 + [(400, {})]
    make_task_folder(tmp_path / "data", "mer2023", n=2)
    adapter = make_adapter("openai", f"model=m,base_url={server.url},api_key_env=UNIBENCH_TEST_KEY,frames=1,"
                                     "image_format=png,max_retries=2,backoff=0.01,concurrency=1")
    out = adapter.answer([_sample(tmp_path, 0), _sample(tmp_path, 1)])
    assert str(out[0]) == "HTTP 500 after 3 tries"
    assert str(out[1]).startswith("HTTP 400: scripted 400")  # a rejected request is not retried
    assert len(server.requests) == 4


def test_a_refused_key_stops_the_run(server, tmp_path):
    server.script = [(401, {})]
    make_task_folder(tmp_path / "data", "mer2023", n=1)
    adapter = make_adapter("openai", f"model=m,base_url={server.url},api_key_env=UNIBENCH_TEST_KEY,frames=1,"
                                     "image_format=png")
    with pytest.raises(UserError, match=r"refused the API key from \$UNIBENCH_TEST_KEY \(HTTP 401\)"):
        adapter.answer([_sample(tmp_path, 0)])


def test_audio_and_faces_parts(tmp_path):
    make_task_folder(tmp_path / "data", "mer2023", n=1)
    opts = make_adapter("openai", "model=m,visual=face,frames=2,audio=true,image_format=png,max_side=8,"
                                  "system=be brief").options
    messages = build_messages(_sample(tmp_path, 0), opts)
    assert messages[0] == {"role": "system", "content": "be brief"}
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "input_audio", "text"]
    faces = image_arrays(parts)
    assert faces[0].shape == (8, 8, 3) and int(faces[1][0, 0, 0]) == 20  # crops 0 and 2 of 4 (AffectGPT sampling), halved
    audio = parts[2]["input_audio"]
    assert audio["format"] == "wav"
    wav = base64.b64decode(audio["data"])
    assert wav[:4] == b"RIFF" and len(wav) == 44 + 2 * 8000  # 0.5 s, 16 kHz, 16-bit mono
    assert wav_bytes(np.zeros(10, np.float32))[:4] == b"RIFF"


def test_declared_inputs_follow_the_options():
    assert make_adapter("openai", "model=m").inputs == ("video", "subtitle")
    assert make_adapter("openai", "model=m,visual=face,audio=true").inputs == ("face", "audio", "subtitle")
    assert make_adapter("openai", "model=m,visual=none").inputs == ("subtitle",)
    assert make_adapter("openai", "model=m,concurrency=3").default_batch_size == 6
    with pytest.raises(UserError, match="visual must be video, face or none"):
        make_adapter("openai", "model=m,visual=faces")
    assert OpenAIAdapter.status() == "ready"


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("UNIBENCH_NO_SUCH_KEY", raising=False)
    adapter = make_adapter("openai", "model=m,api_key_env=UNIBENCH_NO_SUCH_KEY")
    with pytest.raises(UserError, match="no API key: set the environment variable UNIBENCH_NO_SUCH_KEY"):
        adapter.answer([Sample(name="a", task="t", question="q")])


def _sample(tmp_path: Path, i: int) -> Sample:
    folder = tmp_path / "data" / "mer2023-dataset-process"
    name = f"sample_{i:08d}"
    paths = media_paths(folder, "mer2023", name)
    return Sample(name=name, task="mer2023", question=AFFECTGPT_OV_QUESTION, subtitle=SUBTITLES[i],
                  video=paths["video"], audio=paths["audio"], face=paths["face"])
