"""What the agent knows about its backends, and the loop that keeps each one ready.

Each backend (Ollama, Speaches) has a ``BackendState`` that ``/health`` reports. A
``BackendWatcher`` makes the backend ready (models present, LLM warm) with retries and
exponential backoff while it is unreachable, then probes it periodically so a restart
or a lost model is noticed and repaired. Nothing here ever raises into the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

log = structlog.get_logger("backends")

PROBE_INTERVAL_SECS = 5.0


class BackendError(Exception):
    """The backend answered, or failed to, in a way the user should be told about."""


@dataclass
class ModelState:
    installed: bool | None = None  # None: not known yet
    pulling: bool = False
    progress: float | None = None  # 0..1 when the backend reports byte counts
    pull_started: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"installed": self.installed, "pulling": self.pulling}
        if self.pulling:
            if self.progress is not None:
                data["progress"] = round(self.progress, 3)
            if self.pull_started is not None:
                data["pulling_secs"] = round(time.monotonic() - self.pull_started, 1)
        return data


@dataclass
class BackendState:
    name: str
    url: str
    models: dict[str, ModelState] = field(default_factory=dict)
    reachable: bool | None = None  # None: not tried yet
    error: str | None = None
    warm: bool = True  # backends that need no warm-up are always warm

    def answered(self) -> None:
        """The backend just answered a request: it is reachable, whatever went before."""
        self.reachable, self.error = True, None

    @property
    def ready(self) -> bool:
        return (
            bool(self.reachable)
            and self.error is None
            and self.warm
            and all(model.installed for model in self.models.values())
        )

    def reason(self) -> str | None:
        """Why the backend is not ready, in words; None when it is."""
        if self.ready:
            return None
        if self.reachable is None:
            return f"{self.name}: checking {self.url}"
        if not self.reachable:
            detail = f" ({self.error})" if self.error else ""
            return f"{self.name}: unreachable at {self.url}{detail}"
        if self.error:
            return f"{self.name}: {self.error}"
        for model_id, model in self.models.items():
            if model.pulling:
                percent = f" {model.progress:.0%}" if model.progress is not None else ""
                return f"{self.name}: downloading {model_id}{percent}"
            if not model.installed:
                return f"{self.name}: model {model_id} is not installed"
        return f"{self.name}: loading {', '.join(self.models)}"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "url": self.url,
            "reachable": self.reachable,
            "ready": self.ready,
            "models": {model_id: model.as_dict() for model_id, model in self.models.items()},
        }
        if self.error:
            data["error"] = self.error
        return data


def describe_http_error(error: Exception) -> str:
    """One short line for a failed request, without a traceback."""
    if isinstance(error, httpx.ConnectError):
        return "connection refused"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code} from {error.request.url.path}"
    if isinstance(error, httpx.TransportError):
        return f"connection failed: {type(error).__name__}"
    return str(error) or type(error).__name__


RETRYABLE = (httpx.TransportError, httpx.HTTPStatusError, BackendError)


class BackendWatcher:
    """Makes one backend ready and keeps it so, until stopped."""

    def __init__(
        self,
        state: BackendState,
        make_ready: Callable[[], Awaitable[None]],
        still_ready: Callable[[], Awaitable[bool]],
        retry_max_secs: float,
    ) -> None:
        self.state = state
        self._make_ready = make_ready
        self._still_ready = still_ready
        self._retry_max_secs = retry_max_secs
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.state.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._become_ready()
            await self._watch_until_lost()
            log.warning("backend lost", backend=self.state.name, reason=self.state.reason())

    async def _become_ready(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            wait=wait_exponential(multiplier=0.25, min=0.25, max=self._retry_max_secs),
            before_sleep=self._note_failure,
        )
        async for attempt in retrying:
            with attempt:
                await self._make_ready()
        self.state.reachable = True
        self.state.error = None
        log.info("backend ready", backend=self.state.name, url=self.state.url)

    async def _watch_until_lost(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_SECS)
            if not await self._probe():
                return

    async def _probe(self) -> bool:
        try:
            ok = await self._still_ready()
        except RETRYABLE as error:
            self._record(error)
            return False
        return ok

    def _note_failure(self, retry_state) -> None:
        error = retry_state.outcome.exception()
        first = retry_state.attempt_number == 1
        self._record(error)
        wait = retry_state.next_action.sleep if retry_state.next_action else 0
        # The first failure is worth a warning; the rest repeat it, so keep them quiet.
        (log.warning if first else log.debug)(
            "backend not ready, retrying",
            backend=self.state.name,
            reason=self.state.reason(),
            retry_in_secs=round(wait, 2),
            attempt=retry_state.attempt_number,
        )

    def _record(self, error: BaseException | None) -> None:
        if isinstance(error, BackendError):
            self.state.reachable = True
            self.state.error = str(error)
        else:
            self.state.reachable = False
            self.state.error = describe_http_error(error) if error else None
        for model in self.state.models.values():
            if not self.state.reachable:
                model.pulling = False


class ProgressLog:
    """Logs a long download at most every few seconds or tenth of the way."""

    def __init__(self, backend: str, model: str, every_secs: float = 5.0) -> None:
        self._backend = backend
        self._model = model
        self._every_secs = every_secs
        self._last_time = 0.0
        self._last_tenth = -1

    def update(self, progress: float | None, **extra: Any) -> None:
        now = time.monotonic()
        tenth = int(progress * 10) if progress is not None else self._last_tenth
        if tenth != self._last_tenth or now - self._last_time >= self._every_secs:
            self._last_time, self._last_tenth = now, tenth
            percent = f"{progress:.0%}" if progress is not None else None
            log.info(
                "downloading model",
                backend=self._backend,
                model=self._model,
                progress=percent,
                **extra,
            )
