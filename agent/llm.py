"""Ollama: is the model there, pull it with progress if not, and warm it up.

Only this module knows Ollama's native API (``/api/...``); conversations go through
its OpenAI-compatible ``/v1`` endpoint inside the pipeline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import structlog

from agent.backends import BackendError, BackendState, ModelState, ProgressLog

log = structlog.get_logger("ollama")

# Loading a model into memory on a CPU can take well over a minute.
WARM_UP_TIMEOUT_SECS = 300.0

PullProgress = Callable[[str, int, int], None]  # (status, completed, total)


def _same_model(wanted: str, installed: str) -> bool:
    def canonical(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return canonical(wanted) == canonical(installed)


class OllamaModels:
    def __init__(self, client: httpx.AsyncClient, model: str, state: BackendState) -> None:
        self._client = client
        self._model = model
        self.state = state
        self.state.models.setdefault(model, ModelState())
        self.state.warm = False

    @property
    def _model_state(self) -> ModelState:
        return self.state.models[self._model]

    async def is_installed(self) -> bool:
        response = await self._client.get("/api/tags")
        response.raise_for_status()
        self.state.answered()
        names = [entry.get("name", "") for entry in response.json().get("models", [])]
        installed = any(_same_model(self._model, name) for name in names)
        self._model_state.installed = installed
        return installed

    async def pull(self, on_progress: PullProgress | None = None) -> None:
        """Pull the model, streaming Ollama's progress into the state (and ``on_progress``).

        Ollama resumes an interrupted pull where it stopped.
        """
        model = self._model_state
        model.pulling, model.progress, model.pull_started = True, None, time.monotonic()
        progress_log = ProgressLog("ollama", self._model)
        layers: dict[str, tuple[int, int]] = {}  # digest -> (completed, total)
        log.info("pulling model", model=self._model)
        try:
            async with self._client.stream(
                "POST",
                "/api/pull",
                json={"model": self._model, "stream": True},
                timeout=httpx.Timeout(30.0, read=600.0),
            ) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if "error" in event:
                        raise BackendError(f"could not pull {self._model}: {event['error']}")
                    status = event.get("status", "")
                    if event.get("digest") and event.get("total"):
                        layers[event["digest"]] = (event.get("completed", 0), event["total"])
                    completed = sum(done for done, _ in layers.values())
                    total = sum(size for _, size in layers.values())
                    if total:
                        model.progress = completed / total
                    progress_log.update(model.progress, status=status)
                    if on_progress:
                        on_progress(status, completed, total)
                    if status == "success":
                        model.installed, model.progress = True, 1.0
        finally:
            model.pulling = False
        if not model.installed:
            raise BackendError(f"pull of {self._model} ended without success")
        log.info(
            "model pulled",
            model=self._model,
            secs=round(time.monotonic() - (model.pull_started or 0), 1),
        )

    async def warm_up(self) -> None:
        """Load the model into memory and keep it there, so the first turn is not slow."""
        started = time.monotonic()
        response = await self._client.post(
            "/api/generate",
            json={"model": self._model, "keep_alive": -1},
            timeout=WARM_UP_TIMEOUT_SECS,
        )
        response.raise_for_status()
        self.state.warm = True
        log.info("model warm", model=self._model, secs=round(time.monotonic() - started, 2))

    async def make_ready(self) -> None:
        self.state.warm = False
        if not await self.is_installed():
            await self.pull()
        await self.warm_up()

    async def still_ready(self) -> bool:
        return await self.is_installed()
