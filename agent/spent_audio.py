"""Audio frames end where nothing further down the pipeline uses them.

The microphone's audio comes as a frame every 20 ms, and a frame a processor pushes on
travels to the end of the pipeline: through the queue and task of every processor it
passes, and past every observer at each of them. Once the user aggregator has run voice
and turn detection on it, nothing uses the microphone's audio (not the LLM, the TTS,
the output or the assistant aggregator); once the output transport has sent the bot's
audio, nothing uses that either. Carried on anyway, each 20 ms of the microphone went
through six more processors' queues and tasks, and every observer was woken for each,
whether anybody spoke or not. ``DropSpentAudio`` ends such frames where they are spent.

It works in Pipecat's direct mode (no queue, no task of its own): what it passes on is
handed to the next processor at once, from the task that pushed it, so it adds no wait.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class DropSpentAudio(FrameProcessor):
    """Drops frames of type ``spent`` going downstream; passes everything else on."""

    def __init__(self, spent: type[Frame], **kwargs) -> None:
        super().__init__(enable_direct_mode=True, **kwargs)
        self._spent = spent

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, self._spent):
            return
        await self.push_frame(frame, direction)
