"""When the user's turn ends.

Speech-to-text here is segmented: each stretch of speech between two pauses the voice
detector hears is sent to Speaches on its own, as soon as it ends. Pipecat's pause-based
strategy ends the turn once the pause has lasted and *some* transcript has arrived, so
with a slow STT (a busy CPU server transcribes one request at a time) the transcript of
"I would like to know," can arrive after the user has finished "...the weather in Paris"
and end the turn without the second half, which then becomes a turn of its own: the
user is cut off mid-sentence.

So the STT service reports the end of every segment's transcription, whatever came of
it (``SegmentTranscribedFrame``: text, no text, or failure), and the turn ends only when
the pause has lasted and every segment spoken in it is accounted for. A slow
transcription delays the reply; it never splits the sentence. A stalled one ends at the
STT deadline as a failure (``agent.services``).

The pause itself is measured in audio heard, not in wall-clock time. The voice detector
judges the same audio, so a person who resumes within the pause is always heard to have
resumed before it runs out; a wall-clock timer on a busy machine, where audio is worked
through in bursts, could run out first and cut the sentence in two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipecat.frames.frames import (
    DataFrame,
    Frame,
    InputAudioRawFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

Outcome = Literal["text", "empty", "failed"]


@dataclass
class SegmentTranscribedFrame(DataFrame):
    """One speech segment's transcription request has ended (after its transcript, if any)."""

    outcome: Outcome = "text"
    # Must reach the turn strategy even if an interruption clears queues on the way.
    interruptible: bool = field(default=False, init=False)


class WholeSentenceStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """Pause-based end of turn that never ends a turn with a transcription still running."""

    def __init__(self, *, user_speech_timeout: float) -> None:
        super().__init__(user_speech_timeout=user_speech_timeout)
        self._segments_in_flight = 0
        self._pause_heard: float | None = None  # seconds of audio since the pause began

    @property
    def segments_in_flight(self) -> int:
        return self._segments_in_flight

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            await self._hear_pause(frame.num_frames / frame.sample_rate)
            return ProcessFrameResult.CONTINUE
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._segments_in_flight += 1  # the STT service queues this segment now
        result = await super().process_frame(frame)
        if isinstance(frame, SegmentTranscribedFrame):
            self._segments_in_flight = max(0, self._segments_in_flight - 1)
            if self._segments_in_flight == 0:
                # Speech-to-text has nothing more to send: no need for Pipecat's
                # latency safety-net timer (private upstream: the pinned version is tested).
                self._stt_wait_done = True
                await self._maybe_trigger_user_turn_stopped()
        return result

    # Pipecat 1.14 starts its pause timer here and drops it in _discard_pending_end_of_turn
    # (private upstream: the pinned version is tested); the pause is counted in audio instead.
    async def _restart_user_speech_timer(self):
        self._user_speech_wait_done = False
        self._pause_heard = 0.0
        await self._hear_pause(0.0)

    async def _discard_pending_end_of_turn(self):
        self._pause_heard = None
        await super()._discard_pending_end_of_turn()

    async def _hear_pause(self, secs: float) -> None:
        if self._pause_heard is None:
            return
        self._pause_heard += secs
        if self._pause_heard >= self._user_speech_timeout:
            self._pause_heard = None
            self._user_speech_wait_done = True
            await self._maybe_trigger_user_turn_stopped()

    # Pipecat 1.14 calls this whenever a wait ends or a transcript arrives; it is the one
    # place to add a condition.
    async def _maybe_trigger_user_turn_stopped(self):
        if self._segments_in_flight > 0:
            return
        await super()._maybe_trigger_user_turn_stopped()
