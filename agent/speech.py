"""Speaches: the text-to-speech service for the pipeline, and the model checks.

Speaches speaks OpenAI's audio API, but it never downloads a model on first use, its
voices are not OpenAI's, and without ``sample_rate`` it answers at the model's own rate
(22,050 Hz for Piper voices), so the pipeline's rate is always sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

import httpx
import openai
import structlog
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.openai.tts import OpenAITTSService

from agent.backends import BackendError, BackendState, ModelState, ProgressLog

log = structlog.get_logger("speaches")

# Speaches downloads synchronously; a large model on a slow line takes a while.
PULL_TIMEOUT_SECS = 1800.0


class SpeachesTTSService(OpenAITTSService):
    """OpenAI TTS against Speaches: any voice the model has, at the pipeline's rate."""

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        request = {
            "input": text,
            "model": self._settings.model,
            "voice": self._settings.voice,
            "response_format": "pcm",
        }
        if self._settings.speed:
            request["speed"] = self._settings.speed
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                **request, extra_body={"sample_rate": self.sample_rate}
            ) as response:
                await self.start_tts_usage_metrics(text)
                async for chunk in response.iter_bytes(self.chunk_size):
                    if chunk:
                        await self.stop_ttfb_metrics()
                        yield TTSAudioRawFrame(chunk, self.sample_rate, 1, context_id=context_id)
        except openai.APIStatusError as error:
            yield ErrorFrame(
                error=f"Speaches could not speak ({error.status_code}): {_detail(error)}"
            )
        except openai.APIError as error:
            yield ErrorFrame(error=f"Speaches text-to-speech failed: {error}")


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("message") or body.get("error") or body)
    return str(body or error.message)


class SpeachesModels:
    """Makes sure Speaches has the STT and TTS models; it never fetches them by itself."""

    def __init__(
        self, client: httpx.AsyncClient, model_ids: list[str], state: BackendState
    ) -> None:
        self._client = client
        self._model_ids = list(dict.fromkeys(model_ids))
        self.state = state
        for model_id in self._model_ids:
            self.state.models.setdefault(model_id, ModelState())

    async def is_installed(self, model_id: str) -> bool:
        response = await self._client.get(f"/v1/models/{model_id}")
        if response.status_code == 404:
            installed = False
        else:
            response.raise_for_status()
            installed = True
        self.state.answered()
        self.state.models[model_id].installed = installed
        return installed

    async def pull(self, model_id: str) -> float:
        """Download one model; returns the seconds it took. Speaches answers when done."""
        model = self.state.models[model_id]
        model.pulling, model.progress, model.pull_started = True, None, time.monotonic()
        ProgressLog("speaches", model_id).update(None, status="downloading")
        try:
            response = await self._client.post(
                f"/v1/models/{model_id}", timeout=httpx.Timeout(30.0, read=PULL_TIMEOUT_SECS)
            )
        finally:
            model.pulling = False
        if response.status_code == 404:
            raise BackendError(f"Speaches has no model named {model_id}")
        response.raise_for_status()
        model.installed = True
        secs = time.monotonic() - (model.pull_started or 0)
        log.info("model pulled", model=model_id, secs=round(secs, 1))
        return secs

    async def make_ready(self) -> None:
        for model_id in self._model_ids:
            if not await self.is_installed(model_id):
                await self.pull(model_id)

    async def still_ready(self) -> bool:
        response = await self._client.get("/v1/models")
        response.raise_for_status()
        installed = {entry.get("id") for entry in response.json().get("data", [])}
        for model_id in self._model_ids:
            self.state.models[model_id].installed = model_id in installed
        return all(model_id in installed for model_id in self._model_ids)
