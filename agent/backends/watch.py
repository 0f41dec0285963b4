"""The loop that makes one backend ready and keeps it so.

A ``BackendWatcher`` calls the backend's ``make_ready`` (models present, LLM warm) until it
succeeds: transient failures (no connection, 5xx) are retried with capped, jittered
exponential backoff; a final one (a 4xx, a model that does not exist) is tried again only
after ``FINAL_RETRY_SECS``, in case someone fixes it by hand. Once ready, the backend is
probed every ``PROBE_INTERVAL_SECS`` so a restart, a lost model or (Ollama) one no
longer in memory is noticed and repaired. Each change of what is wrong is logged once.
Nothing here ever raises into the server, and the watcher outlives any failure.

How soon a backend that comes back is used again: at most the retry cap (the setting
``BACKEND_RETRY_MAX_SECS``) plus one try's timeout, plus the time ``make_ready`` takes.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from agent.backends.client import MESSAGE_CHARS, BackendError, retry_wait
from agent.backends.state import BackendState

log = structlog.get_logger("backends")

PROBE_INTERVAL_SECS = 5.0
FINAL_RETRY_SECS = 60.0


class Watchable(Protocol):
    state: BackendState

    async def make_ready(self) -> None: ...

    async def still_ready(self) -> bool: ...


class BackendWatcher:
    """Makes one backend ready and keeps it so, until stopped."""

    def __init__(
        self,
        backend: Watchable,
        retry_max_secs: float,
        final_retry_secs: float = FINAL_RETRY_SECS,
        probe_secs: float = PROBE_INTERVAL_SECS,
    ) -> None:
        self.backend = backend
        self._final_retry_secs = final_retry_secs
        self._probe_secs = probe_secs
        self.state = backend.state
        self._retry_max_secs = retry_max_secs
        self._task: asyncio.Task[None] | None = None
        self._told: str | None = None  # the problem last logged

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.state.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self._become_ready()
                await self._watch_until_lost()
            except Exception as error:  # an answer no rule foresaw, or a bug
                await self._survive(error)

    async def _become_ready(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BackendError),
            wait=self._wait,
            before_sleep=self._tell,
        )
        async for attempt in retrying:
            with attempt:
                await self.backend.make_ready()
        self.state.retrying(None)
        self._told = None
        log.info("backend ready", backend=self.state.name, url=self.state.url)

    def _wait(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_wait(error, retry_state.attempt_number, self._retry_max_secs)
        wait = self._final_retry_secs if wait is None else wait
        self.state.retrying(wait)
        return wait

    async def _watch_until_lost(self) -> None:
        while True:
            await asyncio.sleep(self._probe_secs)
            try:
                if not await self.backend.still_ready():
                    break
            except BackendError:
                break
        reason = self.state.reason()
        log.warning("backend no longer ready", backend=self.state.name, reason=reason)
        self._told = reason

    async def _survive(self, error: Exception) -> None:
        """Say what happened (once while it keeps happening) and try again after the cap."""
        why = f"unexpected answer ({type(error).__name__}: {str(error)[:MESSAGE_CHARS]})"
        self.state.failed(why)
        self.state.retrying(self._retry_max_secs)
        if why != self._told:
            self._told = why
            log.error("backend check failed", backend=self.state.name, exc_info=error)
        await asyncio.sleep(self._retry_max_secs)

    def _tell(self, retry_state: RetryCallState) -> None:
        """Log a problem when it first shows and whenever it changes, not at every try."""
        reason = self.state.reason()
        wait = retry_state.next_action.sleep if retry_state.next_action else 0
        if reason != self._told:
            self._told = reason
            log.warning(
                "backend not ready, retrying",
                backend=self.state.name,
                reason=reason,
                retry_in_secs=round(wait, 2),
            )
