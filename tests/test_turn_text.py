"""Whether a transcript reads as finished: the hint that decides how long a pause ends a turn."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.turn_text import UNFINISHED_ENDINGS, reads_finished

words = st.lists(
    st.sampled_from(["please", "turn", "on", "the", "lights", "Paris", "now"]), min_size=1
)


@pytest.mark.parametrize(
    "text",
    [
        "Please turn on the kitchen lights.",
        "What is the weather like in Paris?",
        "Turn the lights off.",
        "Yes, it is.",
        "Okay!",
    ],
)
def test_finished_sentences(text: str) -> None:
    assert reads_finished(text)


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book a table for.",
        "Set a timer for, um.",
        "What's the weather like in",
        "Add milk, eggs,",
        "I was wondering...",
        "Tell me about the",
        "And?",
        "What is the weather going to be like in?",
        "",
    ],
)
def test_sentences_that_trail_off(text: str) -> None:
    assert not reads_finished(text)


@settings(max_examples=200)
@given(words=words, last=st.sampled_from(sorted(UNFINISHED_ENDINGS)), end=st.sampled_from(".!?"))
def test_a_sentence_never_ends_on_a_word_that_needs_more(words, last, end) -> None:
    assert not reads_finished(" ".join([*words, last]) + end)


@settings(max_examples=200)
@given(text=st.text(), end=st.sampled_from([",", "-", ":", ";", "...", "…", ""]))
def test_without_closing_punctuation_nothing_reads_finished(text, end) -> None:
    assert not reads_finished(re.sub(r"[.!?\s]+$", "", text) + end)


@settings(max_examples=200)
@given(words=words, end=st.sampled_from(".!?"))
def test_a_sentence_ending_on_a_content_word_reads_finished(words, end) -> None:
    assert reads_finished(" ".join([*words, "lights"]) + end)
