"""A turn of which nothing could be transcribed ends, so that the person is asked to say
it again and their next words are a turn of their own.

``agent.turns.WholeSentenceStopStrategy`` ends a turn only once it has words. When
speech-to-text fails (the backend refused, broke off or missed its deadline), a turn may
have none, and it would stay open until Pipecat's last-resort timeout, long after the
person was told "I couldn't hear that" (``agent.fault_notice``). This second stop strategy
ends such a turn once every segment spoken in it is accounted for (``SegmentTranscribedFrame``)
and the person has kept quiet for ``pause_secs`` of audio. A turn with words, or with only
noise that transcribed to nothing, is left to the other strategy.
"""

from __future__ import annotations

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import BaseUserTurnStopStrategy

from agent.turns import SegmentTranscribedFrame


class UnheardTurnStopStrategy(BaseUserTurnStopStrategy):
    def __init__(self, *, pause_secs: float) -> None:
        super().__init__()
        self._pause_secs = pause_secs
        self._speaking = False
        self._segments_in_flight = 0  # segments outlive turns, as in agent.turns
        self._pause_heard: float | None = None  # seconds of audio since the voice stopped
        self._failed = False  # a segment of this turn could not be transcribed
        self._heard = False  # and one was: the other strategy ends the turn

    async def handle_user_turn_started(self) -> None:
        self._forget_turn()

    async def handle_user_turn_stopped(self) -> None:
        self._forget_turn()

    def _forget_turn(self) -> None:
        self._failed = self._heard = False
        self._pause_heard = None

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            if self._pause_heard is not None:
                self._pause_heard += frame.num_frames / frame.sample_rate
                await self._consider_ending()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
            self._pause_heard = None
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            self._segments_in_flight += 1
            self._pause_heard = 0.0
        elif isinstance(frame, TranscriptionFrame):
            self._heard = True
        elif isinstance(frame, SegmentTranscribedFrame):
            self._segments_in_flight = max(0, self._segments_in_flight - 1)
            self._failed = self._failed or frame.outcome == "failed"
            await self._consider_ending()
        return ProcessFrameResult.CONTINUE

    async def _consider_ending(self) -> None:
        if (
            self._failed
            and not self._heard
            and not self._speaking
            and not self._segments_in_flight
            and self._pause_heard is not None
            and self._pause_heard >= self._pause_secs
        ):
            self._pause_heard = None
            await self.trigger_user_turn_stopped()
