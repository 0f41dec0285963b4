"""When the user's turn ends.

Speech-to-text here is segmented: each stretch of speech between two pauses the voice
detector hears is sent to Speaches on its own, as soon as it ends. Pipecat's pause-based
strategy ends the turn once the pause has lasted and *some* transcript has arrived, so
with a slow STT the transcript of "I would like to know," can arrive after the user has
already finished "...the weather in Paris" and end the turn without the second half,
which then becomes a turn of its own: the user is cut off mid-sentence. This strategy also
waits until every segment spoken in the turn has been transcribed (or a cap has passed,
for a segment that yields no text).
"""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import Frame, TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

# A segment that yields no text (a cough) sends no transcript; do not wait for it forever.
UNANSWERED_SEGMENT_CAP_SECS = 3.0


class WholeSentenceStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """Pause-based end of turn that never ends a turn with a transcript still on its way."""

    def __init__(
        self,
        *,
        user_speech_timeout: float,
        unanswered_segment_cap_secs: float = UNANSWERED_SEGMENT_CAP_SECS,
    ) -> None:
        super().__init__(user_speech_timeout=user_speech_timeout)
        self._cap_secs = unanswered_segment_cap_secs
        self._segments_in_flight = 0
        self._cap_task: asyncio.Task | None = None

    async def process_frame(self, frame: Frame):
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._segments_in_flight += 1
        elif isinstance(frame, TranscriptionFrame):
            self._segments_in_flight = max(0, self._segments_in_flight - 1)
        return await super().process_frame(frame)

    async def handle_user_turn_stopped(self):
        self._segments_in_flight = 0
        await self._cancel_cap()
        await super().handle_user_turn_stopped()

    async def cleanup(self):
        await self._cancel_cap()
        await super().cleanup()

    # Pipecat 1.14 calls this whenever the pause timer ends or a transcript arrives; it is
    # the one place to add a condition. (Private upstream: the pinned version is tested.)
    async def _maybe_trigger_user_turn_stopped(self):
        if self._segments_in_flight > 0:
            if self._cap_task is None:
                self._cap_task = self.task_manager.create_task(
                    self._give_up_waiting(), f"{self}::unanswered_segment_cap"
                )
            return
        await self._cancel_cap()
        await super()._maybe_trigger_user_turn_stopped()

    async def _discard_pending_end_of_turn(self):
        await self._cancel_cap()  # the user spoke again: the wait starts over
        await super()._discard_pending_end_of_turn()

    async def _give_up_waiting(self):
        await asyncio.sleep(self._cap_secs)
        self._cap_task = None
        self._segments_in_flight = 0
        await super()._maybe_trigger_user_turn_stopped()

    async def _cancel_cap(self):
        task, self._cap_task = self._cap_task, None
        if task is not None and task is not asyncio.current_task():
            await self.task_manager.cancel_task(task)
