"""The three Pipecat services of a conversation: speech-to-text, LLM and text-to-speech.

All three talk to the backends' OpenAI-compatible ``/v1`` endpoints. Speaches speaks
OpenAI's audio API, but its voices are not OpenAI's (Pipecat's OpenAI TTS refuses them)
and without ``sample_rate`` it answers at the model's own rate (22,050 Hz for Piper
voices), so its TTS service is our own small subclass. It also asks for a reply's first
clause on its own (``agent/clauses.py``) and drops the silence a reply's speech starts with
(``agent/leading_silence.py``): both make the first word heard sooner.

Every request has deadlines (``agent/deadlines.py``): for the start of its answer and for
each pause within it. A backend that misses one has failed, as if it had answered with an
error. Each failure is reported once, as an ``ErrorFrame`` carrying its exception, which
``agent.fault_notice`` turns into words for the person. A failure never retires a service
for the rest of the conversation (``ReportsFailures``): the backend may be back by the next
turn.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.ollama.llm import OLLamaLLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.errors import ErrorCategory, classify_http_exception
from pipecat.utils.time import time_now_iso8601

from agent import metrics
from agent.backends.client import MESSAGE_CHARS
from agent.clauses import FirstClauseAggregator
from agent.config import Settings, load_settings
from agent.cut_replies import REPLY_CUT
from agent.deadlines import Deadlines
from agent.fault_words import Part
from agent.leading_silence import LeadingSilenceTrimmer
from agent.turns import Outcome, SegmentTranscribedFrame

# Neither backend checks a key unless configured to; the OpenAI client insists on one.
UNUSED_API_KEY = "not-needed"
# Tries after a failed request before the failure counts (the OpenAI client's default is
# 2, with back-off): one absorbs a pooled connection the server had just closed, without
# keeping the person waiting long for a backend that is really down.
RETRIES = 1
# Silence Pipecat appends to every uploaded segment (its default is 0.5 s). Measured with
# faster-whisper tiny.en on 18 short Piper segments: 0, 0.1, 0.25 and 0.5 s gave the same
# words and the same time (Whisper encodes a 30 s window whatever the clip's length); a
# little is kept against a last word cut short, as the segment already ends with the voice
# detector's VAD_STOP_SECS of real audio.
STT_TRAILING_SILENCE_SECS = 0.1


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates, loaded once per process. Every HTTP client would
    load them itself (25 ms of CPU on the event loop, three clients per conversation),
    even for a backend it reaches over plain HTTP."""
    return ssl.create_default_context()


def backend_http_client() -> Any:
    """An HTTP client of the kind the OpenAI client expects, for one service's client."""
    return openai.DefaultAsyncHttpxClient(verify=_tls_context())


@dataclass(frozen=True)
class Services:
    stt: SpeachesSTTService
    llm: OllamaChatService
    tts: SpeachesTTSService

    def parts(self) -> list[tuple[FrameProcessor, Part, str]]:
        """Each service, the part of the voice path it is, and the backend it talks to."""
        return [
            (self.stt, "stt", "speaches"),
            (self.llm, "llm", "ollama"),
            (self.tts, "tts", "speaches"),
        ]


def backend_deadlines(settings: Settings | None = None) -> Deadlines:
    """The backends' deadlines in ``settings`` (default: the settings' defaults)."""
    settings = settings or load_settings({})
    return Deadlines(
        first_byte_secs=settings.backend_first_byte_timeout_secs,
        stall_secs=settings.backend_stall_timeout_secs,
    )


def build_services(settings: Settings, tts_sample_rate: int) -> Services:
    speaches_v1 = f"{settings.speaches_base_url}/v1"
    services = Services(
        stt=SpeachesSTTService(
            api_key=UNUSED_API_KEY,
            base_url=speaches_v1,
            deadlines=backend_deadlines(settings),
            settings=SpeachesSTTService.Settings(
                model=settings.stt_model, language=Language(settings.language)
            ),
            trailing_silence_secs=STT_TRAILING_SILENCE_SECS,
        ),
        llm=OllamaChatService(
            base_url=f"{settings.ollama_base_url}/v1",
            deadlines=backend_deadlines(settings),
            settings=OllamaChatService.Settings(
                model=settings.ollama_model, system_instruction=settings.system_prompt
            ),
        ),
        tts=SpeachesTTSService(
            api_key=UNUSED_API_KEY,
            base_url=speaches_v1,
            deadlines=backend_deadlines(settings),
            sample_rate=tts_sample_rate,
            first_clause_words=settings.tts_first_clause_words,
            settings=SpeachesTTSService.Settings(
                model=settings.tts_model, voice=settings.tts_voice, speed=settings.tts_speed
            ),
        ),
    )
    for service, _part, backend in services.parts():
        metrics.count_backend_errors(service, backend)
    return services


class ReportsFailures(FrameProcessor):
    """How a service reports a backend's failure: as Pipecat does (its ``on_error`` event,
    which the metrics count, and the ``ErrorFrame`` upstream, where ``agent.fault_notice``
    tells the person and logs the cause once, with its kind), but without a log line of
    its own, and without ever retiring the service. Pipecat retires a service after a
    refusal it deems permanent (a 4xx, say a model not installed); here the model may be
    pulled or the backend fixed while the person goes on talking."""

    async def push_error_frame(
        self, error: ErrorFrame, force_treat_as_permanent: bool = False
    ) -> None:
        error.processor = error.processor or self
        if error.category is None:
            error.category = (
                classify_http_exception(error.exception)
                if error.exception is not None
                else ErrorCategory.UNKNOWN
            )
        await self._call_event_handler("on_error", error)
        await self.push_frame(error, FrameDirection.UPSTREAM)

    async def cleanup(self) -> None:
        await super().cleanup()
        # The service's OpenAI client and its pooled connections to the backend: Pipecat
        # leaves them for the garbage collector, which a long-running worker runs rarely.
        await self._client.close()


class SpeachesSTTService(ReportsFailures, OpenAISTTService):
    """OpenAI transcription against Speaches, telling the turn strategy when each segment's
    request has ended (``SegmentTranscribedFrame``), whatever came of it. A transcription
    is one answer, so it has the first-byte deadline as a whole."""

    def __init__(self, *, deadlines: Deadlines | None = None, **kwargs: Any) -> None:
        super().__init__(http_client=backend_http_client(), **kwargs)
        self._client = self._client.with_options(max_retries=RETRIES)
        self._deadlines = deadlines or backend_deadlines()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        outcome: Outcome = "empty"
        try:
            await self.start_processing_metrics()
            transcription = await self._deadlines.first(
                self._transcribe(audio), self._deadlines.start()
            )
            await self.stop_processing_metrics()
        except Exception as error:  # whatever the backend did, this segment is not heard
            outcome = "failed"
            yield ErrorFrame(
                error=f"Speaches did not transcribe: {_describe(error)}", exception=error
            )
        else:
            if text := transcription.text.strip():
                outcome = "text"
                await self._handle_transcription(text, True, self._settings.language)
                yield TranscriptionFrame(
                    text, self._user_id, time_now_iso8601(), result=transcription
                )
        yield SegmentTranscribedFrame(outcome=outcome)


class OllamaChatService(ReportsFailures, OLLamaLLMService):
    """Ollama's streamed chat completions with deadlines; a reply that breaks off after
    some of it was said is marked as cut (``agent.cut_replies``)."""

    def __init__(self, *, deadlines: Deadlines | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deadlines = deadlines or backend_deadlines()
        self._reply_said = False  # some of the reply under way has been pushed
        self._reply_failed = False  # and an error was reported while it was under way

    def create_client(
        self, api_key: str | None = None, base_url: str | None = None, **_: Any
    ) -> Any:
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=RETRIES,
            http_client=backend_http_client(),
        )

    async def get_chat_completions(self, context: Any) -> Any:
        due = self._deadlines.start()
        stream = await self._deadlines.first(super().get_chat_completions(context), due)
        return _BoundedStream(stream, self._deadlines, due)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if isinstance(frame, LLMFullResponseStartFrame):
            self._reply_said = self._reply_failed = False
        elif isinstance(frame, LLMTextFrame):
            self._reply_said = True
        elif isinstance(frame, LLMFullResponseEndFrame) and self._reply_said and self._reply_failed:
            frame.metadata[REPLY_CUT] = True
        await super().push_frame(frame, direction)

    async def push_error_frame(
        self, error: ErrorFrame, force_treat_as_permanent: bool = False
    ) -> None:
        self._reply_failed = True
        await super().push_error_frame(error, force_treat_as_permanent=force_treat_as_permanent)


class _BoundedStream:
    """An OpenAI chat stream whose chunks must come within the deadlines."""

    def __init__(self, stream: Any, deadlines: Deadlines, due: float) -> None:
        self._stream = stream
        self._deadlines = deadlines
        self._due = due

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._deadlines.bounded(self._stream, self._due)

    async def close(self) -> None:
        await self._stream.close()


class SpeachesTTSService(ReportsFailures, OpenAITTSService):
    """OpenAI TTS against Speaches: any voice the model has, at the pipeline's rate.

    A reply is spoken in chunks: its first clause of ``first_clause_words`` words or more
    (0: none), then whole sentences. The first chunk of each reply starts without the
    silence the engine put before it; later chunks keep theirs, as the pause between two
    sentences or clauses.
    """

    def __init__(
        self, *, first_clause_words: int, deadlines: Deadlines | None = None, **kwargs: Any
    ) -> None:
        super().__init__(http_client=backend_http_client(), **kwargs)
        self._client = self._client.with_options(max_retries=RETRIES)
        self._deadlines = deadlines or backend_deadlines()
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
        due = self._deadlines.start()
        try:
            speech = self._client.audio.speech.with_streaming_response.create(
                **request, extra_body={"sample_rate": self.sample_rate}
            )
            response = await self._deadlines.first(speech.__aenter__(), due)
            try:
                await self.start_tts_usage_metrics(text)
                async for chunk in self._deadlines.bounded(
                    response.iter_bytes(self.chunk_size), due
                ):
                    if chunk:
                        await self.stop_ttfb_metrics()
                    if audio := trimmer.feed(chunk):
                        yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)
            finally:
                await response.close()
            if audio := trimmer.flush():
                yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)
        except Exception as error:  # whatever the backend did, this text is not spoken
            yield ErrorFrame(error=f"Speaches could not speak: {_describe(error)}", exception=error)


def _describe(error: BaseException) -> str:
    """What went wrong, for the log: the backend's status and words, or the exception's."""
    if isinstance(error, openai.APIStatusError):
        body = error.body
        if isinstance(body, dict):
            body = body.get("detail") or body.get("message") or body.get("error") or body
        return f"({error.status_code}) {str(body or error.message)[:MESSAGE_CHARS]}"
    return str(error) or type(error).__name__
