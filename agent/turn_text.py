"""Whether a transcript reads as a finished sentence.

People hesitate where a sentence cannot end: after "for", "the", "and", "um". Whisper
marks what it hears: a sentence that trails off ends in a comma, a dash, an ellipsis or
nothing. So a transcript that ends in ".", "!" or "?" on a word a sentence can end on
reads as finished, and the turn can end after a short pause; anything else reads as
unfinished, and the person gets time to go on.
"""

from __future__ import annotations

import re


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words a sentence does not end on: articles, conjunctions, fillers, possessives and the
# prepositions that need what follows. Words that are also particles ("Turn it off.",
# "Turn it on.") or answers ("Yes, it is.") are not here: a finished sentence that only
# reads unfinished waits longer, but one read wrongly as finished is cut off. So a few
# real questions ("Where are you from?") wait longer too.
UNFINISHED_ENDINGS = _words(
    """
    a an the and or but nor because if than that so
    um uh er erm uhm hmm mm
    my your his her our their its
    for to of from with at by in into onto about as like via per toward towards until during
    between among against upon unto within except beneath beside very
    """
)

_LAST_WORD = re.compile(r"([\w']+)\W*$")


def reads_finished(text: str) -> bool:
    """True if ``text`` ends as a finished sentence would: closing punctuation after a
    word that a sentence can end on."""
    text = text.strip()
    if not text or text[-1] not in ".!?" or text.endswith(".."):
        return False
    last = _LAST_WORD.search(text)
    if last is None:
        return False
    return last.group(1).lower() not in UNFINISHED_ENDINGS
