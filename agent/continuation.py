"""A person who goes on after the bot began answering is still in the same turn.

"I'd like to book a table." … "for four, tomorrow evening": if the first half ended the
turn and the bot began answering it, the person's going on interrupts the reply (Pipecat
does that), and this makes the second half join the first: when the next turn is written
to the conversation, the interrupted reply is taken out and both halves become one user
message, answered once.

It sits between the user aggregator and the LLM, where it sees turns start, their words
written to the conversation, the bot stop speaking (upstream) and every context on its
way to the LLM.
"""

from __future__ import annotations

import time

import structlog
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    Frame,
    LLMContextFrame,
    LLMContextUserTurnFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame

log = structlog.get_logger("turns")


def joined_turn(
    messages: list[LLMContextMessage], first: LLMContextMessage
) -> list[LLMContextMessage] | None:
    """``messages`` with every user message after ``first`` joined to it and the replies
    in between taken out; None while nothing follows ``first`` to join."""
    index = next((i for i, message in enumerate(messages) if message is first), None)
    if index is None:
        return None
    later = messages[index + 1 :]
    parts = [m.get("content") for m in later if m.get("role") == "user"]
    if not parts or not all(isinstance(part, str) for part in (first.get("content"), *parts)):
        return None
    joined = {**first, "content": " ".join([first["content"], *parts])}
    kept = [m for m in later if m.get("role") not in ("user", "assistant")]
    return [*messages[:index], joined, *kept]


class TurnContinuation(FrameProcessor):
    def __init__(self, context: LLMContext, *, resume_secs: float) -> None:
        super().__init__()
        self._context = context
        self._resume_secs = resume_secs
        self._turn_ended_at: float | None = None
        self._reply_over = False
        self._first_part: LLMContextMessage | None = None  # the turn being gone on with

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStoppedSpeakingFrame):
            self._reply_over = True
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._first_part = self._turn_gone_on_with()
        elif isinstance(frame, LLMContextFrame) and frame.speculation:
            self._join(frame.context, keep_going=True)  # a provisional copy
        elif isinstance(frame, (LLMContextFrame, LLMContextUserTurnFrame)):
            if self._join(self._context, keep_going=False):
                # The page joins the two parts in its transcript and strikes the reply.
                await self.push_frame(RTVIServerMessageFrame(data={"type": "turn-continued"}))
            if isinstance(frame, LLMContextUserTurnFrame):
                # A turn's words are in the conversation: its reply is on its way. (A turn
                # that ended with no words, a cough, has no reply to withdraw.)
                self._turn_ended_at = time.monotonic()
                self._reply_over = False
        await self.push_frame(frame, direction)

    def _turn_gone_on_with(self) -> LLMContextMessage | None:
        if (
            self._resume_secs <= 0
            or self._turn_ended_at is None
            or self._reply_over
            or time.monotonic() - self._turn_ended_at > self._resume_secs
        ):
            return None
        users = [m for m in self._context.messages if m.get("role") == "user"]
        return users[-1] if users else None

    def _join(self, context: LLMContext, *, keep_going: bool) -> bool:
        """Join the turn gone on with in ``context``; True once it is joined for good."""
        if self._first_part is None:
            return False
        joined = joined_turn(context.messages, self._first_part)
        if joined is None:
            return False
        context.set_messages(joined)
        if keep_going:
            return False
        log.info("turn gone on with: one user message, the interrupted reply dropped")
        self._first_part = None
        return True
