"""Talking to OpenAI-compatible servers: the client, one chat completion with retries, why a server
cannot be reached.

Neutral leaf module: the ``openai`` extractor (metrics) and the ``openai``
adapter (adapters) both use it. 429, 5xx, timeouts and broken responses are
retried with exponential backoff honouring ``Retry-After``; an address where
nothing can answer fails after a couple of quick retries.
"""
from __future__ import annotations

import email.utils
import errno
import os
import random
import socket
import time
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

from unibench.errors import MissingExtraError, UserError
from unibench.strict import first_line

MAX_RETRY_AFTER_S = 300.0
# A connection refused, a host name that does not resolve, a network that cannot reach the host: a server
# restarting gets these quick retries (seconds before each), not the long backoff meant for a busy server.
QUICK_RETRY_DELAYS = (0.25, 0.5)


class FatalRequestError(Exception):
    """A failure that no retry will fix for any sample (bad key, no such model, server gone)."""


class RequestFailed(Exception):
    """One sample's request failed for good, after its retries (counted, not fatal)."""


class RejectedRequest(RequestFailed):
    """The server refused this request (HTTP 4xx other than 401/403/404/429): retrying will not help."""


class Stopping(Exception):
    """The run is stopping while a request waits to retry."""


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds a server asked us to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    delay = min(cap, base * (2 ** attempt))
    return delay * (1.0 + 0.1 * random.random())  # a little jitter: threads do not retry in lockstep


def chat_with_retries(client: Any, errors: Any, body: dict[str, Any], options: Any,
                      fatal: Callable[[str], Exception], sleep: Callable[[float], Any] = time.sleep) -> str:
    """One chat completion with retries: the message content.

    429, 5xx, timeouts, connection errors and malformed responses are retried
    with exponential backoff that honours ``Retry-After``. A bad key, a
    missing model or a server that never answers raise ``fatal(message)``
    (run-wide); so does an address where nothing can answer (connection
    refused, unknown host, unreachable network: :func:`unreachable`), after
    only :data:`QUICK_RETRY_DELAYS`. Another 4xx raises :class:`RejectedRequest`;
    running out of retries raises :class:`RequestFailed`. ``sleep(seconds)`` returning True
    means the run is stopping (:class:`Stopping`). Shared by the extractor
    and the ``openai`` adapter; ``options`` needs api_key_env, timeout,
    max_retries, backoff (and optionally max_backoff).
    """
    o, err = options, errors
    max_backoff = getattr(o, "max_backoff", 60.0)
    reason, connection_failures, quick = "", 0, 0
    for attempt in range(o.max_retries + 1):
        retry_after = None
        try:
            response = client.chat.completions.create(**body)
            choices = getattr(response, "choices", None) or []
            content = choices[0].message.content if choices and choices[0].message is not None else None
            if content is not None:
                return content
            reason = "response without message content"
        except err.AuthenticationError as exc:
            raise fatal(f"the server refused the API key from ${o.api_key_env} (HTTP {exc.status_code})") from None
        except err.PermissionDeniedError as exc:
            raise fatal(f"the API key from ${o.api_key_env} may not use this model (HTTP {exc.status_code})") from None
        except err.NotFoundError:
            raise fatal("no such model or endpoint (HTTP 404); check model= and base_url= "
                        "(it usually ends in /v1)") from None
        except err.APITimeoutError:
            reason = f"timed out after {o.timeout:g} s"
        except err.APIConnectionError as exc:
            connection_failures += 1
            reason = f"cannot connect ({first_line(exc.__cause__ or exc)})"
            problem = unreachable(exc, resolve_base_url(getattr(o, "base_url", "")))
            if problem is not None:
                if quick >= len(QUICK_RETRY_DELAYS) or attempt >= o.max_retries:
                    raise fatal(problem) from None
                quick += 1
                if sleep(QUICK_RETRY_DELAYS[quick - 1]):
                    raise Stopping()
                continue
        except err.APIStatusError as exc:
            status = exc.status_code
            if status == 429 or status >= 500:
                reason = f"HTTP {status}"
                retry_after = retry_after_seconds(getattr(exc.response, "headers", None))
            else:  # 400, 413, 422, ...: this request is wrong (e.g. the endpoint takes no audio); no retry
                raise RejectedRequest(f"HTTP {status}: {error_message(exc)}") from None
        except Exception as exc:  # malformed JSON, a body that is not a completion, ...
            reason = f"malformed response ({type(exc).__name__}: {first_line(exc, 120)})"
        if attempt < o.max_retries and sleep(backoff_delay(attempt, o.backoff, max_backoff, retry_after)):
            raise Stopping()
    if connection_failures == o.max_retries + 1:
        raise fatal(f"cannot reach the server after {o.max_retries + 1} tries: {reason}")
    raise RequestFailed(f"{reason} after {o.max_retries + 1} tries")


_DNS_TEXT = ("name or service not known", "nodename nor servname", "temporary failure in name resolution",
             "getaddrinfo failed", "no address associated with hostname", "name resolution")
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH}
_UNREACHABLE_TEXT = ("network is unreachable", "no route to host")
_REFUSED_TEXT = ("connection refused", "actively refused")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        yield node
        node = node.__cause__ or node.__context__


def unreachable(exc: BaseException, base_url: str) -> str | None:
    """Why nothing at ``base_url`` can answer, or None for another connection error.

    Looks through the chain of causes (openai.APIConnectionError <- httpx.ConnectError
    <- ConnectionRefusedError / socket.gaierror / OSError) for a refused
    connection, a host name that does not resolve, or an unreachable network.
    Resets, broken responses and timeouts are not in it: they are retried as usual.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    where = f"{host}:{port}" if port else host
    for node in _causes(exc):
        text = str(node).lower()
        detail = first_line(node, 120)
        if isinstance(node, ConnectionRefusedError) or any(t in text for t in _REFUSED_TEXT):
            return (f"nothing listens at {where} (connection refused): start the server, "
                    "or check the host and port in base_url=")
        if isinstance(node, socket.gaierror) or any(t in text for t in _DNS_TEXT):
            return f"cannot resolve the host name '{host}' ({detail}): check the host in base_url="
        if (isinstance(node, OSError) and node.errno in _UNREACHABLE_ERRNOS) or \
                any(t in text for t in _UNREACHABLE_TEXT):
            return f"cannot reach {where} ({detail}): check base_url= and the network"
    return None


def resolve_base_url(base_url: str) -> str:
    return (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")


def make_client(options: Any, what: str) -> tuple[Any, Any]:
    """An ``openai.OpenAI`` client and the ``openai`` module (for its error classes).

    The key comes only from the environment variable ``options.api_key_env``.
    Shared by the extractor and the ``openai`` adapter.
    """
    try:
        import openai
    except ImportError:
        raise MissingExtraError("openai", "openai", what=what) from None
    key = os.environ.get(options.api_key_env, "")
    if not key:
        if not options.base_url:
            raise UserError(f"openai: no API key: set the environment variable {options.api_key_env} "
                            "(or name another with api_key_env=VAR)")
        key = "EMPTY"  # local servers (vllm serve) accept any key, but the SDK wants one
    # Retries are ours (they honour Retry-After and count per sample), so the SDK's are off.
    client = openai.OpenAI(api_key=key, base_url=resolve_base_url(options.base_url), timeout=options.timeout,
                           max_retries=0)
    return client, openai


def error_message(exc: Any) -> str:
    """The server's own message when its error body has one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        msg = inner.get("message") if isinstance(inner, dict) else body.get("message")
        if msg:
            return first_line(Exception(str(msg)), 200)
    return first_line(exc, 200)
