"""Speaches' model API: which models are installed, and downloading the missing ones.

Speaches never downloads a model on first use: a request for a missing one is answered
404, so the agent pulls them before it calls itself ready. Speech itself goes through its
OpenAI-compatible audio API, in the pipeline (``agent.services``).
"""

from __future__ import annotations

import httpx
import structlog

from agent.backends.client import Backend, Refused, ServerError
from agent.backends.state import ModelState

log = structlog.get_logger("speaches")

# Speaches downloads synchronously; a large model on a slow line takes a while.
PULL_TIMEOUT = httpx.Timeout(30.0, read=1800.0)
HUB_HINT = "the first download of a model needs internet access to the model hub"


class Speaches(Backend):
    name = "speaches"

    def __init__(self, base_url: str, model_ids: list[str]) -> None:
        super().__init__(base_url)
        self.model_ids = list(dict.fromkeys(model_ids))  # STT and TTS may be one model
        for model_id in self.model_ids:
            self.state.models.setdefault(model_id, ModelState())

    async def is_installed(self, model_id: str) -> bool:
        response = await self.request("GET", f"/v1/models/{model_id}", expected={404})
        installed = response.status_code != 404
        self.state.models[model_id].seen(installed)
        return installed

    async def pull(self, model_id: str) -> float:
        """Download one model; returns the seconds it took. Speaches answers when done."""
        model = self.state.models[model_id]
        log.info("downloading model", backend="speaches", model=model_id)
        try:
            with model.pull():
                await self.request("POST", f"/v1/models/{model_id}", timeout=PULL_TIMEOUT)
        except Refused as error:
            model.error = (
                f"Speaches has no model named {model_id}"
                if error.status == 404
                else f"could not download {model_id} ({error})"
            )
            raise Refused(model.error, error.status) from error
        except ServerError as error:
            model.error = (
                f"Speaches is up but could not download {model_id} "
                f"(HTTP {error.status}): {HUB_HINT}"
            )
            raise ServerError(model.error, error.status) from error
        model.pulled()
        log.info("model pulled", model=model_id, secs=round(model.pull_secs, 1))
        return model.pull_secs

    async def make_ready(self) -> None:
        for model_id in self.model_ids:
            if not await self.is_installed(model_id):
                await self.pull(model_id)

    async def still_ready(self) -> bool:
        response = await self.request("GET", "/v1/models")
        installed = {entry.get("id") for entry in self.read_json(response).get("data", [])}
        for model_id in self.model_ids:
            self.state.models[model_id].seen(model_id in installed)
        return all(model_id in installed for model_id in self.model_ids)
