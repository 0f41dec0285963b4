"""The three Pipecat services of a conversation: speech-to-text, LLM and text-to-speech.

All three talk to the backends' OpenAI-compatible ``/v1`` endpoints. Speaches speaks
OpenAI's audio API, but its voices are not OpenAI's (Pipecat's OpenAI TTS refuses them)
and without ``sample_rate`` it answers at the model's own rate (22,050 Hz for Piper
voices), so its TTS service is our own small subclass. It also asks for a reply's first
clause on its own (``agent/clauses.py``) and drops the silence a reply's speech starts with
(``agent/leading_silence.py``): both make the first word heard sooner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import openai
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame, TTSAudioRawFrame
from pipecat.services.ollama.llm import OLLamaLLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transcriptions.language import Language

from agent import metrics
from agent.backends.client import MESSAGE_CHARS
from agent.clauses import FirstClauseAggregator
from agent.config import Settings
from agent.leading_silence import LeadingSilenceTrimmer
from agent.turns import Outcome, SegmentTranscribedFrame

# Neither backend checks a key unless configured to; the OpenAI client insists on one.
UNUSED_API_KEY = "not-needed"
# A transcription that has not answered by then counts as failed. Generous: a busy CPU
# server transcribes one request at a time, and a slow answer must not split a sentence.
STT_DEADLINE_SECS = 30.0
# Silence Pipecat appends to every uploaded segment (its default is 0.5 s). Measured with
# faster-whisper tiny.en on 18 short Piper segments: 0, 0.1, 0.25 and 0.5 s gave the same
# words and the same time (Whisper encodes a 30 s window whatever the clip's length); a
# little is kept against a last word cut short, as the segment already ends with the voice
# detector's VAD_STOP_SECS of real audio.
STT_TRAILING_SILENCE_SECS = 0.1


@dataclass(frozen=True)
class Services:
    stt: OpenAISTTService
    llm: OLLamaLLMService
    tts: OpenAITTSService


def build_services(settings: Settings, tts_sample_rate: int) -> Services:
    speaches_v1 = f"{settings.speaches_base_url}/v1"
    services = Services(
        stt=SpeachesSTTService(
            api_key=UNUSED_API_KEY,
            base_url=speaches_v1,
            settings=SpeachesSTTService.Settings(
                model=settings.stt_model, language=Language(settings.language)
            ),
            trailing_silence_secs=STT_TRAILING_SILENCE_SECS,
        ),
        llm=OLLamaLLMService(
            base_url=f"{settings.ollama_base_url}/v1",
            settings=OLLamaLLMService.Settings(
                model=settings.ollama_model, system_instruction=settings.system_prompt
            ),
        ),
        tts=SpeachesTTSService(
            api_key=UNUSED_API_KEY,
            base_url=speaches_v1,
            sample_rate=tts_sample_rate,
            first_clause_words=settings.tts_first_clause_words,
            settings=SpeachesTTSService.Settings(
                model=settings.tts_model, voice=settings.tts_voice, speed=settings.tts_speed
            ),
        ),
    )
    metrics.count_backend_errors(services.stt, "speaches")
    metrics.count_backend_errors(services.llm, "ollama")
    metrics.count_backend_errors(services.tts, "speaches")
    return services


class SpeachesSTTService(OpenAISTTService):
    """OpenAI transcription against Speaches, telling the turn strategy when each segment's
    request has ended (``SegmentTranscribedFrame``), and ending a stalled one as a failure."""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        outcome: Outcome = "empty"
        try:
            async with asyncio.timeout(STT_DEADLINE_SECS):
                async for frame in super().run_stt(audio):
                    if isinstance(frame, TranscriptionFrame):
                        outcome = "text"
                    elif isinstance(frame, ErrorFrame):
                        outcome = "failed"
                    yield frame
        except TimeoutError:
            outcome = "failed"
            yield ErrorFrame(error=f"Speaches did not transcribe within {STT_DEADLINE_SECS:g} s")
        yield SegmentTranscribedFrame(outcome=outcome)


class SpeachesTTSService(OpenAITTSService):
    """OpenAI TTS against Speaches: any voice the model has, at the pipeline's rate.

    A reply is spoken in chunks: its first clause of ``first_clause_words`` words or more
    (0: none), then whole sentences. The first chunk of each reply starts without the
    silence the engine put before it; later chunks keep theirs, as the pause between two
    sentences or clauses.
    """

    def __init__(self, *, first_clause_words: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._text_aggregator = FirstClauseAggregator(
            min_words=first_clause_words, language=self._text_aggregator.language
        )
        self._last_context_id: str | None = None

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        # Every chunk of one reply shares its context ID (Pipecat reuses it within a turn).
        first_chunk = context_id != self._last_context_id
        self._last_context_id = context_id
        trimmer = LeadingSilenceTrimmer(self.sample_rate, trim=first_chunk)
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
                    if audio := trimmer.feed(chunk):
                        yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)
                if audio := trimmer.flush():
                    yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)
        except openai.APIStatusError as error:
            yield ErrorFrame(
                error=f"Speaches could not speak ({error.status_code}): {_detail(error)}"
            )
        except openai.APIError as error:
            yield ErrorFrame(error=f"Speaches text-to-speech failed: {error}")


def _detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        body = body.get("detail") or body.get("message") or body.get("error") or body
    return str(body or error.message)[:MESSAGE_CHARS]
