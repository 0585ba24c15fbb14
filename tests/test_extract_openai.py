"""`openai` backend against a real HTTP server on 127.0.0.1 with scripted answers (no network)."""
from __future__ import annotations

import json
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from unibench.errors import UserError
from unibench.metrics.backends.openai_backend import request_body, retry_after_seconds
from unibench.metrics.extraction import make_extractor
from unibench.metrics.llm import make_decoding

pytest.importorskip("openai")

KEY = "sk-test-secret-0123456789"


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str = "scripted"):
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = mode
        self.lock = threading.Lock()
        self.hits: dict[str, list[float]] = {}
        self.bodies: list[dict] = []
        self.auth: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def completion(text: str | None) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text}}]}).encode()


class Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args):  # keep the test output clean
        pass

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_POST(self):
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            return self.send(404, b'{"error": {"message": "no such route"}}')
        prompt = body["messages"][0]["content"]
        reason = prompt.split("Input: ")[-1].rsplit("; Output:", 1)[0]
        with srv.lock:
            srv.bodies.append(body)
            srv.auth.add(self.headers.get("Authorization", ""))
            srv.hits.setdefault(reason, []).append(time.monotonic())
            n = len(srv.hits[reason])
        if srv.mode == "auth":
            return self.send(401, b'{"error": {"message": "Incorrect API key provided"}}')
        if srv.mode == "reject" or reason == "bad400":
            return self.send(400, b'{"error": {"message": "unknown parameter: repetition_penalty"}}')
        if reason == "rate" and n == 1:
            return self.send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.4"})
        if reason == "e500" and n <= 2:
            return self.send(500, b'{"error": {"message": "boom"}}')
        if reason == "hang" and n == 1:
            time.sleep(1.5)  # past the client's 0.5 s timeout
        if reason == "broken":
            return self.send(200, b'{"choices": [ {not json')
        if reason == "nocontent":
            return self.send(200, completion(None))
        self.send(200, completion(f"Output: [{reason}]\n"))


@pytest.fixture
def server():
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def openai_ext(url: str, extra: str = ""):
    return make_extractor("openai", f"base_url={url},model=qwen-test,api_key_env=UNIBENCH_TEST_KEY,concurrency=3,"
                                    f"timeout=0.5,max_retries=3,backoff=0.01{extra}", use_cache=False, progress=False)


def test_scripted_answers_retries_and_failures(server, monkeypatch, capsys):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    ext = openai_ext(server.url)
    reasons = ["calm", "rate", "e500", "hang", "broken", "nocontent", "calm", "bad400"]
    out = ext.extract_ov(reasons)
    assert out == ["[calm]", "[rate]", "[e500]", "[hang]", None, None, "[calm]", None]
    hits = {r: len(t) for r, t in server.hits.items()}
    assert hits == {"calm": 1, "rate": 2, "e500": 3, "hang": 2, "broken": 4, "nocontent": 4, "bad400": 1}
    rate = server.hits["rate"]
    assert rate[1] - rate[0] >= 0.38  # Retry-After: 0.4 was honoured (our own backoff is 0.01 s)
    assert ext.stats["failed"] == 3 and ext.stats["generated"] == 4
    assert any("HTTP 400: unknown parameter" in r for r in ext.failure_reasons)
    assert any("malformed response" in r for r in ext.failure_reasons)

    body = next(b for b in server.bodies if "calm" in b["messages"][0]["content"])
    assert body["model"] == "qwen-test" and body["temperature"] == 0.0 and body["max_tokens"] == 512
    assert [m["role"] for m in body["messages"]] == ["user"]  # a single user turn
    assert "top_p" not in body and "repetition_penalty" not in body
    assert server.auth == {f"Bearer {KEY}"}

    ident = ext.identity()
    assert ident["base_url"] == server.url and ident["api_key_env"] == "UNIBENCH_TEST_KEY"
    ext.close()
    assert KEY not in json.dumps(ident) and KEY not in capsys.readouterr().err


def test_paper_sampling_request(server, monkeypatch):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    ext = openai_ext(server.url, ",paper_sampling=true,seed=11")
    assert ext.extract_ov(["calm"]) == ["[calm]"]
    body = server.bodies[0]
    assert (body["temperature"], body["top_p"], body["repetition_penalty"], body["seed"], body["max_tokens"]) == \
        (0.7, 0.8, 1.05, 11, 512)


def test_bad_key_is_one_line(monkeypatch):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    srv = ScriptedServer("auth")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UserError) as info:
            openai_ext(srv.url).extract_ov(["a", "b", "c"])
    finally:
        srv.shutdown()
        srv.server_close()
    msg = str(info.value)
    assert "refused the API key" in msg and "$UNIBENCH_TEST_KEY" in msg and "401" in msg
    assert KEY not in msg and "\n" not in msg
    assert max(len(t) for t in srv.hits.values()) == 1  # a bad key is not retried


def test_every_request_rejected_stops_the_run(monkeypatch):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    srv = ScriptedServer("reject")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UserError, match="rejects every request.*repetition_penalty"):
            openai_ext(srv.url, ",paper_sampling=true").extract_ov([f"s{i}" for i in range(20)])
    finally:
        srv.shutdown()
        srv.server_close()


def test_unreachable_server_is_one_line(monkeypatch):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    ext = make_extractor("openai", f"base_url=http://127.0.0.1:{port}/v1,model=m,api_key_env=UNIBENCH_TEST_KEY,"
                                   "max_retries=1,backoff=0.01,timeout=2", use_cache=False, progress=False)
    with pytest.raises(UserError) as info:
        ext.extract_ov(["a"])
    assert "cannot reach the server" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


def test_missing_key_for_the_default_endpoint(monkeypatch):
    monkeypatch.delenv("UNIBENCH_TEST_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    ext = make_extractor("openai", "model=gpt-x,api_key_env=UNIBENCH_TEST_KEY", use_cache=False)
    with pytest.raises(UserError, match="set the environment variable UNIBENCH_TEST_KEY"):
        ext.extract_ov(["a"])


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    now = time.time()
    assert 9 <= retry_after_seconds({"retry-after": formatdate(now + 10, usegmt=True)}, now=now) <= 10
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_request_body_is_plain_data():
    body = request_body("m", "hi", make_decoding(False, 64))
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0,
                    "max_tokens": 64}
