"""Sentences with a natural pause in the middle, and how to tell whether each was answered
once, whole: shared by the tests of a busy speech-to-text and by ``make bench``."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.audio import normalize_words, synthesize, trim_silence
from tests.webrtc_client import SAMPLE_RATE

# A comma: long enough for the voice detector to end a segment (VAD_STOP_SECS, 0.2 s), so
# each half is transcribed on its own, and well short of ending the turn (a hesitation
# that long is another matter: see tests/test_voice_roundtrip.py and make bench).
PAUSE_SECS = 0.4
# (first half, second half, words that must reach the LLM together, in one request)
SENTENCES = [
    ("My train leaves at eight thirty", "how long until then", ["train", "long", "then"]),
    ("Please remind me to call my sister", "tomorrow after lunch", ["sister", "after", "lunch"]),
    ("I would like to book a table", "for four people tonight", ["table", "people", "tonight"]),
    ("Can you tell me a short story", "about a brave little dog", ["story", "brave", "dog"]),
]


async def sentence_with_a_pause(index: int) -> np.ndarray:
    """Sentence ``index`` (cycling through SENTENCES) as 48 kHz speech, paused mid-way."""
    first, second, _ = SENTENCES[index % len(SENTENCES)]
    halves = await asyncio.gather(
        asyncio.to_thread(synthesize, first, SAMPLE_RATE),
        asyncio.to_thread(synthesize, second, SAMPLE_RATE),
    )
    pause = np.zeros(int(PAUSE_SECS * SAMPLE_RATE), np.int16)
    return np.concatenate([trim_silence(halves[0]), pause, trim_silence(halves[1])])


def user_words(chat_requests: list[dict]) -> list[list[str]]:
    """What each user turn said: the words of every chat request that answers the user
    (a greeting answers nobody)."""
    last = [request["messages"][-1] for request in chat_requests]
    return [normalize_words(message["content"]) for message in last if message["role"] == "user"]


def not_answered_whole(said: list[list[str]], spoken: list[int]) -> int:
    """How many of the sentences ``spoken`` (indexes into SENTENCES, a sentence may be said
    more than once) did not reach the LLM once each, whole: a sentence said n times must be
    in exactly n requests with all its words."""
    spoken = [index % len(SENTENCES) for index in spoken]
    missing = 0
    for index in set(spoken):
        words = SENTENCES[index][2]
        whole = sum(all(word in request for word in words) for request in said)
        missing += abs(spoken.count(index) - whole)
    return missing
