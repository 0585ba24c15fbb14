"""`openai`: any OpenAI-compatible chat-completions server (OpenAI, `vllm serve`, ...).

    export OPENAI_API_KEY=...        # or api_key_env=MY_VAR; never on the command line
    --extractor openai --extractor-args base_url=http://localhost:8000/v1,model=Qwen/Qwen2.5-7B-Instruct

The key is read from the environment variable named by ``api_key_env``; it
never appears in arguments, logs or results. Requests run on a bounded pool
of threads; 429, 5xx, timeouts and broken responses are retried with
exponential backoff that honours ``Retry-After``. A sample that still fails
is ``None`` (counted and listed); a server that refuses the key, or that
cannot be reached, stops the run with one line (finished answers stay
cached). Nothing listening at ``base_url`` (connection refused), a host name
that does not resolve and an unreachable network are not worth the long
backoff: two quick retries (under a second in all), then that line.
"""
from __future__ import annotations

import math
import socket
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from unibench.errors import UserError
from unibench.metrics.extraction import register_extractor
from unibench.metrics.llm import Decoding, LLMExtractor, LLMOptions, ResultGroup
from unibench.openai_http import (QUICK_RETRY_DELAYS, FatalRequestError, RejectedRequest,  # noqa: F401  (re-exported)
                                  RequestFailed, Stopping, backoff_delay, chat_with_retries, error_message,
                                  make_client, resolve_base_url, retry_after_seconds, unreachable)

@dataclass
class OpenAIOptions(LLMOptions):
    base_url: str = ""                # "" = the SDK's default (OPENAI_BASE_URL, else api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8              # requests in flight
    timeout: float = 60.0             # seconds per request
    max_retries: int = 5              # per sample, after the first try
    backoff: float = 1.0              # first retry delay (s); doubles each time
    max_backoff: float = 60.0


REJECTIONS_BEFORE_STOP = 8


def request_body(model: str, prompt: str, dec: Decoding) -> dict[str, Any]:
    """Keyword arguments of ``chat.completions.create`` for one prompt (a single user turn)."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "temperature": dec.temperature, "max_tokens": dec.max_tokens}
    if dec.top_p != 1.0:
        body["top_p"] = dec.top_p
    if not dec.greedy and dec.seed is not None:
        body["seed"] = dec.seed
    extra: dict[str, Any] = {}
    if dec.repetition_penalty != 1.0:
        extra["repetition_penalty"] = dec.repetition_penalty  # vLLM/TGI servers; not an OpenAI parameter
    if dec.ignore_eos:
        extra.update(ignore_eos=True, min_tokens=dec.max_tokens)
    if extra:
        body["extra_body"] = extra
    return body


@register_extractor
class OpenAIExtractor(LLMExtractor):
    name = "openai"
    description = "any OpenAI-compatible chat-completions server (key from an environment variable)"
    Options = OpenAIOptions

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        o = self.options
        if o.concurrency < 1:
            raise UserError(f"--extractor-args: concurrency must be at least 1, got {o.concurrency}")
        if not (math.isfinite(o.timeout) and o.timeout > 0):
            raise UserError(f"--extractor-args: timeout must be a positive number of seconds, got {o.timeout}")
        scheme = urlsplit(self._base_url()).scheme
        if scheme not in ("http", "https"):
            raise UserError(f"--extractor-args: base_url must start with http:// or https://, got "
                            f"'{self._base_url()}'")
        if o.max_retries < 0:
            raise UserError(f"--extractor-args: max_retries must be 0 or more, got {o.max_retries}")
        self._client: Any = None
        self._errors: Any = None
        self._stop = threading.Event()

    def model_identity(self) -> str:
        return f"{self._base_url()}|{self.options.model}"

    def preflight(self) -> None:
        """Before any work: something listens at base_url (a TCP connection, no request, no cost)."""
        base = self._base_url()
        parts = urlsplit(base)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            socket.create_connection((parts.hostname or "", port), timeout=min(self.options.timeout, 5.0)).close()
        except (OSError, ValueError) as exc:
            problem = unreachable(exc, base) if isinstance(exc, OSError) else f"bad address ({exc})"
            if problem:  # a timeout or anything else: the requests themselves retry
                raise UserError(f"openai: {problem} (server {base}, model '{self.options.model}'; "
                                "checked before any work)") from None

    def backend_identity(self) -> dict[str, Any]:
        o = self.options
        return {"base_url": self._base_url(), "api_key_env": o.api_key_env, "concurrency": o.concurrency,
                "timeout_s": o.timeout, "max_retries": o.max_retries}

    def _base_url(self) -> str:
        return resolve_base_url(self.options.base_url)

    # ------------------------------------------------------------ client
    def _connect(self) -> Any:
        if self._client is None:
            self._client, self._errors = make_client(self.options, "the 'openai' extractor")
        return self._client

    def _fatal(self, message: str) -> FatalRequestError:
        return FatalRequestError(f"openai: {message} (server {self._base_url()}, model '{self.options.model}')")

    def _request(self, prompt: str, dec: Decoding) -> str | None:
        """One sample with retries; None when it still fails. Raises FatalRequestError for run-wide problems."""
        try:
            return chat_with_retries(self._client, self._errors, request_body(str(self.options.model), prompt, dec),
                                     self.options, self._fatal, sleep=self._stop.wait)
        except Stopping:
            return None
        except RejectedRequest:
            raise  # counted by generate_stream: many in a row stop the run
        except RequestFailed as exc:
            self.note_failure(str(exc))
            return None

    # ------------------------------------------------------------ generation
    def generate_stream(self, prompts: list[str]) -> Iterator[ResultGroup]:
        """Keep ``concurrency`` requests in flight; hand each answer back as it arrives."""
        self._connect()
        dec = self.decoding()
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="unibench-openai")
        pending: dict[Any, int] = {}
        next_index = 0
        answered = rejected = 0
        clean = False
        try:
            while next_index < len(prompts) or pending:
                while next_index < len(prompts) and len(pending) < 2 * self.options.concurrency:
                    pending[pool.submit(self._request, prompts[next_index], dec)] = next_index
                    next_index += 1
                finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                group: ResultGroup = []
                fatal: FatalRequestError | None = None
                for fut in finished:
                    index = pending.pop(fut)
                    try:
                        group.append((index, fut.result()))
                        answered += 1
                    except FatalRequestError as exc:
                        fatal = fatal or exc
                    except RejectedRequest as exc:
                        self.note_failure(str(exc))
                        group.append((index, None))
                        rejected += 1
                        # The same request shape fails everywhere (e.g. a parameter the server does not
                        # know): stop instead of counting thousands of identical failures.
                        if not answered and rejected >= min(REJECTIONS_BEFORE_STOP, len(prompts)):
                            raise UserError(f"openai: the server rejects every request ({exc}; server "
                                            f"{self._base_url()}, model '{self.options.model}')") from None
                if fatal is not None:
                    self._stop.set()  # the others stop retrying now
                    if group:
                        yield group  # answers that finished alongside the failure are kept (and cached)
                    raise UserError(str(fatal)) from None
                yield group
            clean = True
        finally:
            self._stop.set()  # in-flight retries give up at once
            pool.shutdown(wait=clean, cancel_futures=True)

    def prepare(self) -> None:
        self._connect()

    def release(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a client must never mask the run's outcome
                pass
            self._client = None


