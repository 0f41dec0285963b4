"""The two backends, Ollama and Speaches: one object each, built once from the settings.

``Backends`` is what both ``serve`` (kept ready in the background, reported by ``/health``)
and ``pull-models`` (pulled once, with progress) use.

- ``state``: what is known about a backend and its models (the ``/health`` body)
- ``client``: its HTTP client, its errors, the one retry rule
- ``ollama``, ``speaches``: each backend's own protocol
- ``watch``: the loop that makes a backend ready and keeps it so
"""

from __future__ import annotations

from typing import Any

from agent.backends.client import Backend, BackendError
from agent.backends.ollama import Ollama
from agent.backends.speaches import Speaches
from agent.backends.state import BackendState
from agent.backends.watch import BackendWatcher
from agent.config import Settings

__all__ = ["Backend", "BackendError", "Backends", "Ollama", "Speaches"]


class Backends:
    """Ollama and Speaches, with watchers that keep them ready once started."""

    def __init__(self, settings: Settings) -> None:
        self.ollama = Ollama(settings.ollama_base_url, settings.ollama_model)
        self.speaches = Speaches(
            settings.speaches_base_url, [settings.stt_model, settings.tts_model]
        )
        self._watchers = [
            BackendWatcher(backend, settings.backend_retry_max_secs) for backend in self.all
        ]

    @property
    def all(self) -> tuple[Backend, ...]:
        return (self.ollama, self.speaches)

    @property
    def states(self) -> list[BackendState]:
        return [backend.state for backend in self.all]

    @property
    def ready(self) -> bool:
        return all(state.ready for state in self.states)

    def reason(self) -> str | None:
        reasons = [reason for state in self.states if (reason := state.reason())]
        return "; ".join(reasons) or None

    def report(self) -> dict[str, Any]:
        return {state.name: state.as_dict() for state in self.states}

    def start(self) -> None:
        """Keep both backends ready in the background until ``stop``."""
        for watcher in self._watchers:
            watcher.start()

    async def stop(self) -> None:
        for watcher in self._watchers:
            await watcher.stop()
        for backend in self.all:
            await backend.aclose()

    async def __aenter__(self) -> Backends:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
