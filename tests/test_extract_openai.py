"""`openai` backend against a real HTTP server on 127.0.0.1 with scripted answers (no network)."""
from __future__ import annotations

import json
import socket
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from unibench.errors import UserError
from unibench.metrics.backends.openai_backend import (QUICK_RETRY_DELAYS, OpenAIOptions, RequestFailed,
                                                      chat_with_retries, request_body, retry_after_seconds)
from unibench.metrics.extraction import make_extractor
from unibench.metrics.llm import format_stats, make_decoding, stats_worth_reporting

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
    assert ext.stats.failed == 3 and ext.stats.generated == 4
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


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_refused_connection_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    port = closed_port()
    # the default retry settings (5 retries, 1 s backoff doubling, 60 s timeout): once ~32 s of silence
    ext = make_extractor("openai", f"base_url=http://127.0.0.1:{port}/v1,model=m,api_key_env=UNIBENCH_TEST_KEY",
                         use_cache=False, progress=False)
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        ext.extract_ov(["a", "b", "c", "d", "e"])
    assert time.monotonic() - started < 5
    msg = str(info.value)
    assert f"nothing listens at 127.0.0.1:{port} (connection refused)" in msg, msg
    assert f"http://127.0.0.1:{port}/v1" in msg and "start the server" in msg and "\n" not in msg
    # nothing came back: nothing is reported as done
    st = ext.stats
    assert (st.prompts, st.hits, st.misses, st.generated, st.failed, st.unfinished) == \
        (5, 0, 0, 0, 0, 5)
    assert st.prompts_per_second is None and not stats_worth_reporting(st)
    line = format_stats(st)
    assert "0 generated" in line and "5 not done" in line, line
    ext.close()


def test_a_server_that_goes_away_keeps_what_was_answered(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    srv = ScriptedServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ext = make_extractor("openai", f"base_url={srv.url},model=m,api_key_env=UNIBENCH_TEST_KEY,concurrency=2",
                         cache_dir=tmp_path / "c", progress=False)
    try:
        assert ext.extract_ov(["a", "b"]) == ["[a]", "[b]"]
    finally:
        srv.shutdown()
        srv.server_close()
    started = time.monotonic()
    with pytest.raises(UserError, match="nothing listens"):
        ext.extract_ov(["a", "c", "d", "e"])
    assert time.monotonic() - started < 5
    st = ext.stats
    assert (st.hits, st.misses, st.generated, st.failed, st.unfinished) == (0, 2, 2, 0, 3)
    assert stats_worth_reporting(st) and "2 generated" in format_stats(st) and "3 not done" in format_stats(st)
    ext.close()


class FakeCompletions:
    """``client.chat.completions.create`` raising scripted exceptions (no sockets at all)."""

    def __init__(self, errors):
        self.errors, self.calls = list(errors), 0
        self.chat = self
        self.completions = self

    def create(self, **body):
        self.calls += 1
        raise self.errors.pop(0) if len(self.errors) > 1 else self.errors[0]


def connection_error(cause: BaseException):
    import openai

    exc = openai.APIConnectionError(request=None)
    exc.__cause__ = cause
    return exc


def retry_run(cause: BaseException, max_retries: int = 5, base_url: str = "http://llm.example:8000/v1"):
    import openai

    client, sleeps = FakeCompletions([connection_error(cause)]), []
    opts = OpenAIOptions(model="m", base_url=base_url, max_retries=max_retries, backoff=1.0)
    with pytest.raises(Exception) as info:
        chat_with_retries(client, openai, {}, opts, lambda m: UserError(f"openai: {m} (server {base_url})"),
                          sleep=lambda s: sleeps.append(s))
    return info.value, client.calls, sleeps


def test_no_listener_unknown_host_and_unreachable_network_get_two_quick_retries():
    for cause, needle in [(ConnectionRefusedError(111, "Connection refused"),
                           "nothing listens at llm.example:8000 (connection refused)"),
                          (socket.gaierror(-2, "Name or service not known"),
                           "cannot resolve the host name 'llm.example' ([Errno -2] Name or service not known)"),
                          (OSError(101, "Network is unreachable"), "cannot reach llm.example:8000 ("),
                          (OSError("[Errno 113] No route to host"), "cannot reach llm.example:8000 (")]:
        exc, calls, sleeps = retry_run(cause)
        assert isinstance(exc, UserError) and needle in str(exc), (needle, str(exc))
        assert calls == 1 + len(QUICK_RETRY_DELAYS) and sleeps == list(QUICK_RETRY_DELAYS)
    assert sum(QUICK_RETRY_DELAYS) <= 2
    exc, calls, sleeps = retry_run(ConnectionRefusedError(111, "Connection refused"), max_retries=0)
    assert isinstance(exc, UserError) and calls == 1 and sleeps == []
    exc, calls, sleeps = retry_run(ConnectionRefusedError(111, "Connection refused"), base_url="https://h.example/v1")
    assert "nothing listens at h.example:443" in str(exc)


def test_other_connection_errors_keep_the_backoff():
    # a reset connection is worth the full backoff (the server is there, maybe overloaded)
    exc, calls, sleeps = retry_run(ConnectionResetError(104, "Connection reset by peer"))
    assert isinstance(exc, UserError) and "cannot reach the server after 6 tries" in str(exc)
    assert calls == 6 and len(sleeps) == 5 and sleeps[0] >= 1.0 and sleeps[-1] >= 16.0
    # a timeout is not a refusal either: retried with backoff, then counted as a failed sample
    import openai

    client, sleeps = FakeCompletions([openai.APITimeoutError(request=None)]), []
    with pytest.raises(RequestFailed, match="timed out"):
        chat_with_retries(client, openai, {}, OpenAIOptions(model="m", base_url="http://x/v1", max_retries=2),
                          lambda m: UserError(m), sleep=lambda s: sleeps.append(s))
    assert client.calls == 3 and len(sleeps) == 2 and sleeps[0] >= 1.0


def test_progress_bar_on_stderr(server, monkeypatch, capsys):
    monkeypatch.setenv("UNIBENCH_TEST_KEY", KEY)
    for progress, expect in ((True, True), (False, False), (None, False)):  # None: a terminal only (capsys is none)
        ext = make_extractor("openai", f"base_url={server.url},model=m,api_key_env=UNIBENCH_TEST_KEY",
                             use_cache=False, progress=progress)
        ext.extract_ov([f"p{progress}{i}" for i in range(3)])
        ext.close()
        err = capsys.readouterr().err
        assert ("prompt A [openai]: 100%" in err and "3/3" in err) == expect, (progress, err)


# ---------------------------------------------------------------- through run_bench


def _cli_bench(tmp_path):
    from fixtures import CKPT_A, build_toy_bench, toy_answers, write_run

    bench = build_toy_bench(tmp_path / "b", tasks=("mer2023",))
    model = tmp_path / "answers" / "toy-model"  # answers without extractions: the extractor is needed
    write_run(model, "mer2023", "run_1", {CKPT_A: {"answers": toy_answers("mer2023", "A")["answers"]}})
    return bench, model


def _cli(bench, model, tmp_path, url, *extra):
    from unibench.cli import main

    return main(["--model", "replay", "--model-args", f"path={model}", "--task", "mer2023",
                 "--data-root", str(bench["data"]), "--lexicon", str(bench["lexicon"]),
                 "--output", str(tmp_path / "out"), "--allow-count-mismatch", "--cache-dir", str(tmp_path / "c"),
                 "--extractor", "openai", "--extractor-args", f"base_url={url},model=x", *extra])


def test_run_bench_against_a_closed_port_is_one_error_line(tmp_path, capsys):
    bench, model = _cli_bench(tmp_path)
    port = closed_port()
    started = time.monotonic()
    rc = _cli(bench, model, tmp_path, f"http://127.0.0.1:{port}/v1")
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1, captured.err
    assert f"nothing listens at 127.0.0.1:{port}" in errors[0] and f"http://127.0.0.1:{port}/v1" in errors[0]
    assert "Traceback" not in captured.err + captured.out
    assert "generated" not in captured.err  # no stats line claiming work that did not happen
    assert elapsed < 5


def test_run_bench_progress_bar_and_no_progress(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # as on a terminal
    for where, extra, bar in (("on", (), True), ("off", ("--no-progress",), False)):
        bench, model = _cli_bench(tmp_path / where)  # fresh answers: nothing extracted yet
        assert _cli(bench, model, tmp_path / where, server.url, "--no-cache", *extra) == 0
        err = capsys.readouterr().err
        assert ("prompt A [openai]: 100%" in err and "3/3" in err) == bar, err
        assert "extraction [openai]: 4 prompts (3 distinct): 0 cache hits, 3 generated" in err, err


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
