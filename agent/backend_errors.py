"""What kind of backend failure an exception or a Pipecat ``ErrorFrame`` is.

timeout: no answer in time; http_5xx / http_4xx: the backend answered with that status;
cut: the connection broke while the answer came; connection: the backend could not be
reached, or closed the connection before answering; other: anything else.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any, Literal

ErrorKind = Literal["timeout", "connection", "cut", "http_5xx", "http_4xx", "other"]


def _loaded_classes(*names: str) -> tuple[type[BaseException], ...]:
    """Exception classes named ``module.Class``, from the modules already imported: an
    exception of a module nobody imported cannot exist, and this module stays light (the
    supervisor imports it for /metrics)."""
    found = []
    for name in names:
        module_name, class_name = name.rsplit(".", 1)
        module = sys.modules.get(module_name)
        if module is not None and isinstance(cls := getattr(module, class_name, None), type):
            found.append(cls)
    return tuple(found)


def _http_families(*class_names: str) -> list[str]:
    # openai 3 is built on httpx2, the agent's own clients on httpx.
    return [f"{family}.{name}" for family in ("httpx", "httpx2") for name in class_names]


def _timeouts() -> tuple[type[BaseException], ...]:
    names = [*_http_families("TimeoutException"), "openai.APITimeoutError"]
    return (TimeoutError, *_loaded_classes(*names))


def _cuts() -> tuple[type[BaseException], ...]:
    names = _http_families("RemoteProtocolError", "ReadError", "WriteError")
    return (ConnectionResetError, BrokenPipeError, *_loaded_classes(*names))


def _connection_failures() -> tuple[type[BaseException], ...]:
    names = [*_http_families("ConnectError", "NetworkError"), "openai.APIConnectionError"]
    return (ConnectionError, *_loaded_classes(*names))


# httpx's words for a connection closed before the first byte of an answer.
_NO_ANSWER = re.compile(r"without sending a response", re.I)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it was raised from: clients wrap the network's exceptions."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    for candidate in (
        getattr(response, "status_code", None),
        getattr(error, "status_code", None),
        getattr(error, "status", None),  # agent.backends.client's ServerError and Refused
    ):
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
    return None


def error_kind(error: BaseException) -> ErrorKind:
    """The kind of a failed backend call's exception, looking through what it wraps."""
    chain = list(_causes(error))
    if any(isinstance(e, _timeouts()) for e in chain):
        return "timeout"
    for e in chain:
        status = _http_status(e)
        if status is not None and status >= 400:
            return "http_5xx" if status >= 500 else "http_4xx"
    if any(isinstance(e, _cuts()) for e in chain):
        # A server that closes the connection before any answer refused it; one that
        # closes it while the answer comes cut it.
        return "connection" if any(_NO_ANSWER.search(str(e)) for e in chain) else "cut"
    if any(isinstance(e, _connection_failures()) for e in chain):
        return "connection"
    return "other"


_CATEGORY_KINDS: dict[str, ErrorKind] = {  # pipecat.utils.errors.ErrorCategory values
    "connectivity": "connection",
    "server": "http_5xx",
    "invalid_request": "http_4xx",
    "authentication": "http_4xx",
    "authorization": "http_4xx",
    "rate_limit": "http_4xx",
    "quota": "http_4xx",
}
# Some services report an error as text only: Pipecat's OpenAI speech-to-text yields
# "Unknown error occurred: <the openai exception>", and ours say "timed out", "(503)".
_STATUS_TEXT = re.compile(r"(?:error code|status|http)\W{0,3}([45]\d\d)\b|\(([45]\d\d)\)", re.I)
_TEXT_KINDS: tuple[tuple[ErrorKind, re.Pattern[str]], ...] = (
    ("timeout", re.compile(r"timed? ?out|timeout|did not \w+ within", re.I)),
    ("cut", re.compile(r"peer closed|incomplete (?:chunked )?read|connection reset", re.I)),
    ("connection", re.compile(r"connection (?:error|refused|failed)|could not connect", re.I)),
)


def error_frame_kind(frame: Any) -> ErrorKind:
    """The kind of a Pipecat ``ErrorFrame``: from its exception, else its category, else
    its text."""
    if frame.exception is not None and (kind := error_kind(frame.exception)) != "other":
        return kind
    category = getattr(frame.category, "value", None)
    if category in _CATEGORY_KINDS:
        return _CATEGORY_KINDS[category]
    text = str(frame.error)
    if match := _STATUS_TEXT.search(text):
        return "http_5xx" if (match.group(1) or match.group(2)).startswith("5") else "http_4xx"
    for kind, pattern in _TEXT_KINDS:
        if pattern.search(text):
            return kind
    return "other"
