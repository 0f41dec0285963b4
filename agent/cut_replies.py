"""A reply the LLM broke off is kept in the conversation marked as cut, not as if complete.

When Ollama's stream fails after some of the reply was said ("You said:" and then nothing),
the LLM service marks the reply's end frame (``REPLY_CUT`` in its metadata). The reply's
words reach the assistant aggregator only as they are spoken; this processor, just before
the aggregator, adds the mark after them as an ``LLMMarkerFrame``, which the aggregator
writes into the reply's message in the context but never speaks or shows.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, LLMFullResponseEndFrame, LLMMarkerFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

REPLY_CUT = "reply_cut"  # key in an LLMFullResponseEndFrame's metadata
CUT_MARK = " [cut off]"  # what the LLM reads after a reply of its own that broke off


class MarkCutReplies(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame) and frame.metadata.get(REPLY_CUT):
            await self.push_frame(LLMMarkerFrame(CUT_MARK, append_to_context_immediately=False))
        await self.push_frame(frame, direction)
