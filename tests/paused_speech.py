"""Sentences with a natural pause in the middle, and how to tell whether each was answered
once, whole: shared by the tests of a busy speech-to-text and by ``make bench``."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.audio import normalize_words, synthesize, trim_silence
from tests.webrtc_client import SAMPLE_RATE

# Long enough for the voice detector to end a segment (0.2 s), short of ending the turn.
PAUSE_SECS = 0.5
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


def not_answered_whole(said: list[list[str]], count: int) -> list[int]:
    """Which of the first ``count`` sentences did not reach the LLM exactly once, whole."""
    return [
        index
        for index in range(count)
        if sum(all(w in words for w in SENTENCES[index % len(SENTENCES)][2]) for words in said) != 1
    ]
