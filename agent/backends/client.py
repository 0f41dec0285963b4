"""One backend's HTTP client, what can go wrong with it, and the one retry rule.

Every request to Ollama or Speaches outside the pipeline goes through ``Backend.request``
or ``Backend.stream``: a failure comes out as a ``BackendError`` whose text is a short
line for a person (with the backend's own message where it sent one), the backend's
``BackendState`` is updated by the same call, and ``is_transient`` says whether trying
again can help: connection failures and 5xx answers can, 4xx answers cannot.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import httpx
from tenacity import RetryCallState

from agent.backends.state import BackendState

REQUEST_TIMEOUT_SECS = 10.0
MESSAGE_CHARS = 200  # of a backend's error text, in our messages
FIRST_RETRY_SECS = 0.25


class BackendError(Exception):
    """A backend call failed; the text says how, in one line."""

    transient = False


class Unreachable(BackendError):
    """No answer: connection refused or cut, or timed out."""

    transient = True


class ServerError(BackendError):
    """The backend answered 5xx."""

    transient = True

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Refused(BackendError):
    """The backend answered 4xx, or an answer that says the request cannot succeed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def is_transient(error: BaseException) -> bool:
    return isinstance(error, BackendError) and error.transient


def retry_wait(error: BaseException, attempt: int, max_secs: float) -> float | None:
    """The one retry rule: seconds to wait after ``error``, the ``attempt``-th failure in a
    row, before trying again; None when trying again cannot help (a 4xx, say).

    The waits double from a quarter second, with up to a quarter second of jitter so that
    clients do not march in step, and never exceed ``max_secs``.
    """
    if not is_transient(error):
        return None
    doubling = FIRST_RETRY_SECS * 2 ** min(attempt - 1, 32)
    return min(max_secs, doubling + random.uniform(0, FIRST_RETRY_SECS))


def backoff(max_secs: float) -> Callable[[RetryCallState], float]:
    """``retry_wait`` as a tenacity ``wait`` (for retries already limited to transient errors)."""

    def wait(retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return retry_wait(error, retry_state.attempt_number, max_secs) or 0.0

    return wait


def describe_transport_error(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.ConnectError):
        return "connection refused"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return f"connection failed: {type(error).__name__}"


def backend_message(response: httpx.Response) -> str:
    """What the backend said about its error: JSON ``detail``/``error``/``message``, or text."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body = body.get("detail") or body.get("error") or body.get("message") or body
    text = " ".join(str(body).split())
    return text[:MESSAGE_CHARS] or response.reason_phrase


# A server that closes its side after an error (uvicorn does after a 500) leaves a dead
# connection in the pool; the next request on it fails at once with one of these.
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class Backend:
    """An HTTP backend: owns its client and its ``BackendState``."""

    name = "backend"

    def __init__(self, base_url: str) -> None:
        self.state = BackendState(self.name, base_url)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_SECS)

    async def aclose(self) -> None:
        await self._http.aclose()

    def read_json(self, response: httpx.Response) -> dict[str, Any]:
        """The answer's JSON object; any other answer means something else listens."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            why = f"what answers at {self.state.url} is not {self.name} (the answer is not JSON)"
            self.state.failed(why)
            raise Refused(why)
        return body

    async def request(
        self, method: str, path: str, *, expected: Collection[int] = (), **kwargs: Any
    ) -> httpx.Response:
        """Send a request; a status of 400 or more raises, unless it is ``expected``."""
        request = self._http.build_request(method, path, **kwargs)
        response = await self._send(request, stream=False)
        self._check(response, expected)
        return response

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """Like ``request``, with the body read as it arrives; errors while reading it are
        ``Unreachable`` too."""
        request = self._http.build_request(method, path, **kwargs)
        response = await self._send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
            self._check(response, ())
            try:
                yield response
            except httpx.TransportError as error:
                raise self._lost(error) from error
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request, stream: bool) -> httpx.Response:
        try:
            try:
                return await self._http.send(request, stream=stream)
            except STALE_CONNECTION:
                return await self._http.send(request, stream=stream)  # on a fresh connection
        except httpx.TransportError as error:
            raise self._lost(error) from error

    def _lost(self, error: httpx.TransportError) -> Unreachable:
        why = describe_transport_error(error)
        self.state.unreachable(why)
        return Unreachable(why)

    def _check(self, response: httpx.Response, expected: Collection[int]) -> None:
        self.state.answered()
        status = response.status_code
        if status < 400 or status in expected:
            return
        what = f"HTTP {status} from {response.request.url.path}: {backend_message(response)}"
        self.state.failed(what)
        if status >= 500:
            raise ServerError(what, status)
        raise Refused(what, status)
