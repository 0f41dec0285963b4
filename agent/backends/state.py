"""What the agent knows about one backend and its models: the body of ``/health``.

Only the backend object that owns a ``BackendState`` (``agent.backends.client``) and its
watcher (``agent.backends.watch``, for when it tries again) write it; everyone else reads it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelState:
    installed: bool | None = None  # None: not known yet
    pulling: bool = False
    progress: float | None = None  # 0..1 when the backend reports byte counts
    pull_started: float | None = None
    error: str | None = None  # why the last download failed, while the backend answers

    @contextlib.contextmanager
    def pull(self) -> Iterator[None]:
        """Marks the model as being downloaded for the duration of the block."""
        self.pulling, self.progress, self.pull_started = True, None, time.monotonic()
        try:
            yield
        finally:
            self.pulling = False

    def pulled(self) -> None:
        self.seen(installed=True)
        self.progress = 1.0

    def seen(self, installed: bool) -> None:
        """The backend says whether the model is installed; an installed one has no error."""
        self.installed = installed
        if installed:
            self.error = None

    @property
    def pull_secs(self) -> float:
        return time.monotonic() - (self.pull_started or time.monotonic())

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"installed": self.installed, "pulling": self.pulling}
        if self.pulling:
            if self.progress is not None:
                data["progress"] = round(self.progress, 3)
            if self.pull_started is not None:
                data["pulling_secs"] = round(self.pull_secs, 1)
        if self.error:
            data["error"] = self.error
        return data


@dataclass
class BackendState:
    name: str
    url: str
    models: dict[str, ModelState] = field(default_factory=dict)
    reachable: bool | None = None  # None: not tried yet
    error: str | None = None  # the last failure: why it is unreachable, or what it answered
    warm: bool = True  # backends that need no warm-up are always warm
    retry_wait_secs: float | None = None  # while not ready: the wait between tries
    next_try_at: float | None = None  # while not ready: when the next try starts (monotonic)

    def answered(self) -> None:
        """The backend just answered a request: it is reachable, whatever went before."""
        self.reachable, self.error = True, None

    def unreachable(self, why: str) -> None:
        self.reachable, self.error = False, why
        for model in self.models.values():
            model.pulling = False

    def retrying(self, wait_secs: float | None) -> None:
        """The watcher tries again in ``wait_secs``; None: it has stopped (ready)."""
        self.retry_wait_secs = wait_secs
        self.next_try_at = None if wait_secs is None else time.monotonic() + wait_secs

    def failed(self, why: str) -> None:
        """The backend answered, but not with what was needed."""
        self.reachable, self.error = True, why

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
        for model_id, model in self.models.items():
            if model.pulling:
                percent = f" {model.progress:.0%}" if model.progress is not None else ""
                return f"{self.name}: downloading {model_id}{percent}"
            if model.error:
                return f"{self.name}: {model.error}"
        if self.error:
            return f"{self.name}: {self.error}"
        for model_id, model in self.models.items():
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
        if not self.ready and self.retry_wait_secs is not None:
            data["retry_wait_secs"] = round(self.retry_wait_secs, 2)
            if (next_try := (self.next_try_at or 0) - time.monotonic()) > 0:
                data["next_try_in_secs"] = round(next_try, 1)  # absent while a try is under way
        return data
