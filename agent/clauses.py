"""Cuts a reply's text into what the TTS is asked to speak: its first clause as soon as that
is complete, then whole sentences.

Pipecat's TTS asks for speech only once the LLM has written a whole sentence. A reply's
first clause ("The forecast for tomorrow is sunny," …) is a place where a speaker pauses
anyway, so speaking it on its own starts the voice sooner without sounding chopped. A
clause ends at a comma, semicolon, colon or dash followed by white space (so "3,000",
"3:30" and "well-known" never end one), and only once it has ``min_words`` words (so
"Sure," or "You said:" is never spoken alone; a whole sentence such as "Sure." still is,
as Pipecat does). After the first chunk of a reply, whatever it was, the text is cut by
sentences exactly as Pipecat cuts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

CLAUSE_MARKS = ",;:—–"
SPACED_ONLY_MARKS = "-"
"""A hyphen ends a clause only with white space on both sides: "sunny - with"."""


def count_words(text: str) -> int:
    """Words that are spoken: white-space separated pieces with a letter or digit."""
    return sum(any(c.isalnum() for c in piece) for piece in text.split())


def ends_with_clause_mark(text: str) -> bool:
    if not text:
        return False
    mark = text[-1]
    if mark in CLAUSE_MARKS:
        return True
    return mark in SPACED_ONLY_MARKS and len(text) > 1 and text[-2].isspace()


class FirstClauseAggregator(SimpleTextAggregator):
    """Pipecat's sentence aggregator, except that a reply's first chunk may be a clause.

    A reply ends with ``flush`` (the LLM's response ended) or ``handle_interruption``;
    the next reply may start with a clause again. ``min_words=0`` turns clauses off.
    """

    def __init__(self, *, min_words: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._min_words = min_words
        self._first_chunk_sent = False

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        if self._aggregation_type == TextType.TOKEN:
            async for aggregation in super().aggregate(text):
                yield aggregation
            return
        for char in text:
            self._text += char
            # A sentence end found at this character wins over a clause ending at it.
            chunk = await self._check_sentence_with_lookahead(char)
            if chunk is None and not self._first_chunk_sent:
                chunk = await self._take_clause(char)
            if chunk is not None:
                self._first_chunk_sent = True
                yield chunk

    async def _take_clause(self, char: str) -> Aggregation | None:
        """The buffer up to a clause mark, once the white space after the mark arrives."""
        if self._min_words <= 0 or not char.isspace():
            return None
        clause = self._text[:-1]
        if not ends_with_clause_mark(clause) or count_words(clause) < self._min_words:
            return None
        # Start over on the rest as on a new text (no sentence end pending), keeping the white
        # space in the buffer as Pipecat keeps a sentence's lookahead.
        await super().reset()
        self._text = char
        return Aggregation(text=clause.strip(" "), type=TextType.SENTENCE)

    async def handle_interruption(self) -> None:
        await super().handle_interruption()
        self._first_chunk_sent = False

    async def reset(self) -> None:
        # Also reached through flush(), at the end of every reply.
        await super().reset()
        self._first_chunk_sent = False
