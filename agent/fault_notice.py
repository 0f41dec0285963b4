"""Tells the person, in words, when a backend fails, and logs the cause once.

Every error a Pipecat service reports travels upstream as an ``ErrorFrame`` to the front of
the pipeline, where Pipecat's RTVI processor would send its text to the page as it is:
"Unknown error occurred: Connection error.", "Error code: 500". This processor sits first,
before the transport's input (so no microphone frame passes it), where every such frame
arrives, and instead:

- logs the failure once, with the part of the voice path (stt, llm, tts), its backend and
  the kind of fault (``agent.backend_errors``);
- sends the page a ``backend-fault`` server message with a sentence for a person
  (``agent.fault_words``), and has the sentence spoken where the voice path still works;
- keeps the frame from going further: what the person needed to know is said, and the
  cause is in the log.

One failure often reports more than one error (each sentence of a reply that cannot be
spoken): a part's failure is told once until the person speaks or types again. Errors of
anything but the three services go on to the page with their text replaced by a plain
sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMMessagesAppendFrame,
    LLMRunFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame

from agent.backend_errors import error_frame_kind
from agent.fault_words import SOMETHING_ELSE, STOPPED, WORDS, Part

log = structlog.get_logger("faults")

CAUSE_CHARS = 300


class FaultNotice(FrameProcessor):
    def __init__(self, watched: Sequence[tuple[FrameProcessor, Part, str]]) -> None:
        """``watched``: each service with the part of the voice path it is and its backend."""
        super().__init__()
        self._watched = list(watched)
        self._told: set[Part] = set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame) and direction is FrameDirection.UPSTREAM:
            await self._report(frame)
            return
        if isinstance(frame, UserStartedSpeakingFrame | LLMMessagesAppendFrame | LLMRunFrame):
            self._told.clear()  # something new was said or asked: a failure is news again
        await self.push_frame(frame, direction)

    async def _report(self, frame: ErrorFrame) -> None:
        found = next(((p, b) for s, p, b in self._watched if s is frame.processor), None)
        if found is None:
            frame.error = STOPPED if frame.fatal else SOMETHING_ELSE
            await self.push_frame(frame, FrameDirection.UPSTREAM)
            return
        part, backend = found
        if frame.exception is None or part in self._told:
            # Told already; or Pipecat's own bookkeeping (a reply's speech "completed with
            # no audio"), which follows a failure of ours, or speech that merely started
            # late (Pipecat gives up waiting for it after 3 s, then plays it all the same).
            return
        self._told.add(part)
        log.warning(
            "backend failed",
            part=part,
            backend=backend,
            kind=error_frame_kind(frame),
            cause=str(frame.error)[:CAUSE_CHARS],
            detail=_innermost(frame.exception)[:CAUSE_CHARS],
        )
        words = WORDS[part]
        message = {"type": "backend-fault", "part": part, "text": words.sentence}
        await self.push_frame(RTVIServerMessageFrame(data=message))
        if words.spoken:
            await self.push_frame(TTSSpeakFrame(words.sentence, append_to_context=False))


def _innermost(error: BaseException) -> str:
    """The exception a client's error was raised from ("Connection error." says little)."""
    seen = {id(error)}
    while (cause := error.__cause__ or error.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        error = cause
    return f"{type(error).__name__}: {error}"
