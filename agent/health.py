"""Both backends together: their clients, their watchers, and the health report."""

from __future__ import annotations

from typing import Any

import httpx

from agent.backends import BackendState, BackendWatcher
from agent.config import Settings
from agent.llm import OllamaModels
from agent.speech import SpeachesModels

REQUEST_TIMEOUT_SECS = 10.0


def ollama_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=settings.ollama_base_url, timeout=REQUEST_TIMEOUT_SECS)


def speaches_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=settings.speaches_base_url, timeout=REQUEST_TIMEOUT_SECS)


class Backends:
    """Keeps Ollama and Speaches ready in the background and says how they are."""

    def __init__(self, settings: Settings) -> None:
        self._clients = [ollama_client(settings), speaches_client(settings)]
        self.ollama = OllamaModels(
            self._clients[0],
            settings.ollama_model,
            BackendState("ollama", settings.ollama_base_url),
        )
        self.speaches = SpeachesModels(
            self._clients[1],
            [settings.stt_model, settings.tts_model],
            BackendState("speaches", settings.speaches_base_url),
        )
        self._watchers = [
            BackendWatcher(
                backend.state,
                backend.make_ready,
                backend.still_ready,
                settings.backend_retry_max_secs,
            )
            for backend in (self.ollama, self.speaches)
        ]

    @property
    def states(self) -> list[BackendState]:
        return [self.ollama.state, self.speaches.state]

    @property
    def ready(self) -> bool:
        return all(state.ready for state in self.states)

    def reason(self) -> str | None:
        reasons = [reason for state in self.states if (reason := state.reason())]
        return "; ".join(reasons) or None

    def report(self) -> dict[str, Any]:
        return {state.name: state.as_dict() for state in self.states}

    def start(self) -> None:
        for watcher in self._watchers:
            watcher.start()

    async def stop(self) -> None:
        for watcher in self._watchers:
            await watcher.stop()
        for client in self._clients:
            await client.aclose()
