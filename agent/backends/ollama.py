"""Ollama's native API (``/api/...``): is the model there, pull it with progress, warm it up.

Conversations go through its OpenAI-compatible ``/v1`` endpoint, in the pipeline
(``agent.services``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog

from agent.backends.client import Backend, Refused
from agent.backends.state import ModelState

log = structlog.get_logger("ollama")

# Loading a model into memory on a CPU can take well over a minute.
WARM_UP_TIMEOUT_SECS = 300.0
PULL_TIMEOUT = httpx.Timeout(30.0, read=600.0)
PROGRESS_LOG_SECS = 5.0

PullProgress = Callable[[str, int, int], None]  # (status, completed, total)


def same_model(wanted: str, installed: str) -> bool:
    def canonical(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return canonical(wanted) == canonical(installed)


class Ollama(Backend):
    name = "ollama"

    def __init__(self, base_url: str, model: str) -> None:
        super().__init__(base_url)
        self.model_id = model
        self.model = self.state.models.setdefault(model, ModelState())
        self.state.warm = False

    async def is_installed(self) -> bool:
        response = await self.request("GET", "/api/tags")
        names = [entry.get("name", "") for entry in self.read_json(response).get("models", [])]
        self.model.seen(any(same_model(self.model_id, name) for name in names))
        return bool(self.model.installed)

    async def pull(self, on_progress: PullProgress | None = None) -> None:
        """Pull the model, streaming Ollama's progress into the state (and ``on_progress``).

        Ollama resumes an interrupted pull where it stopped.
        """
        layers: dict[str, tuple[int, int]] = {}  # digest -> (completed, total)
        progress_log = _ProgressLog(self.model_id)
        log.info("pulling model", model=self.model_id)
        with self.model.pull():
            async with self.stream(
                "POST",
                "/api/pull",
                json={"model": self.model_id, "stream": True},
                timeout=PULL_TIMEOUT,
            ) as response:
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event: dict[str, Any] = json.loads(line)
                    except ValueError:
                        why = f"Ollama sent a progress line that is not JSON: {line[:80]}"
                        raise Refused(why) from None
                    if "error" in event:  # Ollama reports a failed pull inside a 200
                        why = f"could not pull {self.model_id}: {event['error']}"
                        self.model.error = why
                        raise Refused(why)
                    status = event.get("status", "")
                    if event.get("digest") and event.get("total"):
                        layers[event["digest"]] = (event.get("completed", 0), event["total"])
                    completed = sum(done for done, _ in layers.values())
                    total = sum(size for _, size in layers.values())
                    if total:
                        self.model.progress = completed / total
                    progress_log.update(self.model.progress, status=status)
                    if on_progress:
                        on_progress(status, completed, total)
                    if status == "success":
                        self.model.pulled()
        if not self.model.installed:
            self.model.error = f"the pull of {self.model_id} ended without success"
            raise Refused(self.model.error)
        log.info("model pulled", model=self.model_id, secs=round(self.model.pull_secs, 1))

    async def warm_up(self) -> None:
        """Load the model into memory and keep it there, so the first turn is not slow."""
        started = time.monotonic()
        await self.request(
            "POST",
            "/api/generate",
            json={"model": self.model_id, "keep_alive": -1},
            timeout=WARM_UP_TIMEOUT_SECS,
        )
        self.state.warm = True
        log.info("model warm", model=self.model_id, secs=round(time.monotonic() - started, 2))

    async def make_ready(self) -> None:
        self.state.warm = False
        if not await self.is_installed():
            await self.pull()
        await self.warm_up()

    async def is_loaded(self) -> bool:
        """Whether the model is in memory (``/api/ps``)."""
        response = await self.request("GET", "/api/ps")
        loaded = [
            entry.get("name") or entry.get("model") or ""
            for entry in self.read_json(response).get("models", [])
            if isinstance(entry, dict)
        ]
        return any(same_model(self.model_id, name) for name in loaded)

    async def still_ready(self) -> bool:
        """The model is still in memory (so installed too). A restarted Ollama has nothing
        loaded, and Ollama unloads a model once its keep-alive runs out (each chat sets it
        back to the server's default): then ``make_ready`` warms it again (and pulls it
        first if it is gone), before the next turn pays for it."""
        if await self.is_loaded():
            return True
        self.state.warm = False
        log.info("model no longer in memory", model=self.model_id)
        return False


class _ProgressLog:
    """Logs a long download at most every few seconds or tenth of the way."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._last_time = 0.0
        self._last_tenth = -1

    def update(self, progress: float | None, status: str) -> None:
        now = time.monotonic()
        tenth = int(progress * 10) if progress is not None else self._last_tenth
        if tenth != self._last_tenth or now - self._last_time >= PROGRESS_LOG_SECS:
            self._last_time, self._last_tenth = now, tenth
            percent = f"{progress:.0%}" if progress is not None else None
            log.info(
                "downloading model",
                backend="ollama",
                model=self._model,
                progress=percent,
                status=status,
            )
