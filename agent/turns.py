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

How long the pause must be can depend on what was said: a sentence that reads as
finished ends the turn after a short pause, one that trails off ("a table for...") after
a long one (``agent.turn_text``); and on how it sounded, judged by the Smart Turn model
(``agent.prosody``).

The pause is measured in audio heard, not in wall-clock time. The voice detector
judges the same audio, so a person who resumes within the pause is always heard to have
resumed before it runs out; a wall-clock timer on a busy machine, where audio is worked
through in bursts, could run out first and cut the sentence in two.

With ``speculate``, the reply starts as soon as every segment is transcribed, while the
pause is still being waited out: Pipecat runs the LLM on a provisional copy of the
conversation and its LLM service holds the reply back until the turn ends, or drops it
if the person speaks again. Backend time then overlaps the pause instead of following it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import structlog
from pipecat.frames.frames import (
    DataFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

from agent.prosody import TurnAudio, sounds_finished
from agent.turn_text import reads_finished

log = structlog.get_logger("turns")

Outcome = Literal["text", "empty", "failed"]


@dataclass
class SegmentTranscribedFrame(DataFrame):
    """One speech segment's transcription request has ended (after its transcript, if any)."""

    outcome: Outcome = "text"
    # Must reach the turn strategy even if an interruption clears queues on the way.
    interruptible: bool = field(default=False, init=False)


class WholeSentenceStopStrategy(BaseUserTurnStopStrategy):
    """Ends the turn after a pause heard in the audio, never with a transcription
    running, optionally answering speculatively while the pause lasts.

    The pause is ``pause_secs``, or ``hesitation_secs`` after a turn that reads as
    unfinished (``read_transcript``) or sounds unfinished (``hear_tone``: Smart Turn).
    """

    def __init__(
        self,
        *,
        pause_secs: float,
        hesitation_secs: float | None = None,
        read_transcript: bool = False,
        hear_tone: bool = False,
        speculate: bool = False,
    ) -> None:
        super().__init__()
        self._pause_secs = pause_secs
        self._hesitation_secs = pause_secs if hesitation_secs is None else hesitation_secs
        self._read_transcript = read_transcript
        self._hear_tone = hear_tone
        self._speculate = speculate
        self._text = ""
        self._text_reads_finished = False  # judged once per transcript, not per audio frame
        self._speaking = False
        # Segments outlive turns: one spoken just before a turn ended is still owed.
        self._segments_in_flight = 0
        self._pause_heard: float | None = None  # seconds of audio since the voice stopped
        self._speculation: UserTurnSpeculation | None = None
        self._audio = TurnAudio()
        self._tone_task: asyncio.Task | None = None
        self._sounds_finished: bool | None = None  # None: not judged (yet)

    @property
    def segments_in_flight(self) -> int:
        return self._segments_in_flight

    async def handle_user_turn_started(self) -> None:
        await self._forget_turn()

    async def handle_user_turn_stopped(self) -> None:
        await self._forget_turn()
        self._audio.clear()
        self._speaking = False

    async def cleanup(self) -> None:
        self._speculation = None
        await self._stop_judging_tone()
        await super().cleanup()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            if self._hear_tone:
                self._audio.add(frame.audio)
            if self._pause_heard is not None:
                self._pause_heard += frame.num_frames / frame.sample_rate
                await self._consider_ending()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
            self._pause_heard = None
            await self._stop_judging_tone()
            await self._withdraw_speculation()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            self._segments_in_flight += 1  # the STT service queues this segment now
            self._pause_heard = 0.0
            if self._hear_tone:
                self._tone_task = self.task_manager.create_task(
                    self._judge_tone(self._audio.samples()), f"{self}::judge_tone"
                )
        elif isinstance(frame, TranscriptionFrame):
            self._text = f"{self._text} {frame.text}".strip()
            self._text_reads_finished = reads_finished(self._text)
            await self._consider_ending()
        elif isinstance(frame, SegmentTranscribedFrame):
            self._segments_in_flight = max(0, self._segments_in_flight - 1)
            await self._consider_ending()
        return ProcessFrameResult.CONTINUE

    def _pause_needed(self) -> float | None:
        """The pause that ends this turn; None until the tone has been judged."""
        if self._read_transcript and not self._text_reads_finished:
            return self._hesitation_secs
        if self._hear_tone:
            if self._sounds_finished is None:
                return None
            if not self._sounds_finished:
                return self._hesitation_secs
        return self._pause_secs

    async def _consider_ending(self) -> None:
        if (
            self._speaking
            or self._segments_in_flight
            or self._pause_heard is None
            or not self._text
        ):
            return
        needed = self._pause_needed()
        if needed is not None and self._pause_heard >= needed:
            self._pause_heard = None
            await self._end_turn()
        elif self._speculate and self._speculation is None:
            self._speculation = UserTurnSpeculation(text=self._text)
            await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def _end_turn(self) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.text == self._text:
            # The reply is already on its way: the turn's end releases it.
            await self.trigger_user_turn_finalized(confirms_speculation=True)
            return
        if speculation is not None:
            await self.trigger_user_turn_speculation_cancelled()
        await self.trigger_user_turn_stopped()

    async def _withdraw_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation = None
            await self.trigger_user_turn_speculation_cancelled()

    async def _judge_tone(self, samples: np.ndarray) -> None:
        try:
            self._sounds_finished = await sounds_finished(samples)
        except Exception:
            # Never leave the turn waiting on a model that cannot run: the transcript decides.
            log.exception("Smart Turn could not judge the turn; going by the transcript alone")
            self._sounds_finished = True
        self._tone_task = None
        await self._consider_ending()

    async def _stop_judging_tone(self) -> None:
        self._sounds_finished = None
        if self._tone_task is not None:
            task, self._tone_task = self._tone_task, None
            await self.task_manager.cancel_task(task)

    async def _forget_turn(self) -> None:
        self._text = ""
        self._text_reads_finished = False
        self._pause_heard = None
        await self._stop_judging_tone()
        await self._withdraw_speculation()
