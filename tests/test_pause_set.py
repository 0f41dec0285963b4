"""The pause set of ``make bench`` (tests/pause_set.py): its speech has the pauses it claims,
where it claims, and its scoring counts a sentence that reached the conversation in pieces,
or not at all, as cut off. Real Piper speech, real Whisper tiny.en transcripts."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.audio import transcribe
from tests.pause_set import (
    COMPLETE,
    LEAD_SECS,
    NOT_CONTENT,
    PAUSED,
    QUIET_LEVEL,
    Utterance,
    content_words,
    conversation_before,
    half_heard,
    judge,
    quiet_gaps,
    session_order,
    speech_for,
)
from tests.webrtc_client import SAMPLE_RATE

VAD_STOP_SECS = 0.2  # the voice detector's pause before it ends a segment (agent default)


def spoken_part(samples: np.ndarray) -> np.ndarray:
    return samples[round(LEAD_SECS * SAMPLE_RATE) :]


@cache
def halves_heard(utterance: Utterance) -> tuple[str, str]:
    """What Whisper tiny.en hears before and after the longest silence of the utterance."""
    speech = spoken_part(speech_for(utterance))
    start, length = max(quiet_gaps(speech, 1), key=lambda gap: gap[1])
    before, after = speech[:start], speech[start + length :]
    return transcribe(before, SAMPLE_RATE), transcribe(after, SAMPLE_RATE)


def test_the_set_has_enough_sentences_and_spreads_its_pauses() -> None:
    assert len(PAUSED) >= 20 and len(COMPLETE) >= 20
    pauses = sorted(u.pause_ms for u in PAUSED)
    assert pauses[0] == 300 and pauses[-1] == 1000
    assert max(np.diff(pauses)) <= 70, pauses  # no stretch of the range left out
    # Each half has words of its own to be recognised by, not only "the", "um" or numbers.
    for utterance in PAUSED:
        for half in utterance.halves:
            assert content_words(half).isdisjoint(NOT_CONTENT), half
    order = session_order()
    assert sorted(map(id, order)) == sorted(map(id, PAUSED + COMPLETE))
    assert order[:4] == [PAUSED[0], COMPLETE[0], PAUSED[1], COMPLETE[1]]


@pytest.mark.parametrize("utterance", PAUSED, ids=lambda u: f"{u.pause_ms}ms")
def test_a_paused_sentence_pauses_for_its_time_between_its_halves(utterance: Utterance) -> None:
    samples = speech_for(utterance)
    assert not np.any(samples[: round(LEAD_SECS * SAMPLE_RATE)]), "the lead is silent"
    speech = spoken_part(samples)
    gaps = quiet_gaps(speech, 1)
    start, length = max(gaps, key=lambda gap: gap[1])
    assert length == round(utterance.pause_ms * SAMPLE_RATE / 1000)
    # Speech on both sides; it starts after the lead and ends with its last sample.
    assert start > 0.5 * SAMPLE_RATE and len(speech) - start - length > 0.3 * SAMPLE_RATE
    assert abs(int(speech[0])) > QUIET_LEVEL and abs(int(speech[-1])) > QUIET_LEVEL
    before, after = halves_heard(utterance)
    assert half_heard(utterance.first, before), before
    assert not half_heard(utterance.second, before), before
    assert half_heard(utterance.second, after), after
    assert not half_heard(utterance.first, after), after


@pytest.mark.parametrize("utterance", COMPLETE, ids=lambda u: u.text.split()[-1].strip(".?"))
def test_a_complete_sentence_has_no_pause_the_voice_detector_would_take_for_its_end(
    utterance: Utterance,
) -> None:
    speech = spoken_part(speech_for(utterance))
    assert len(speech) > SAMPLE_RATE
    assert quiet_gaps(speech, int(VAD_STOP_SECS * SAMPLE_RATE)) == []


def test_scoring_counts_a_split_or_a_lost_half_or_an_early_reply_as_a_cut_off() -> None:
    said = [PAUSED[0], COMPLETE[0], PAUSED[1]]
    first0, second0 = halves_heard(PAUSED[0])
    first1, second1 = halves_heard(PAUSED[1])
    complete = transcribe(spoken_part(speech_for(COMPLETE[0])), SAMPLE_RATE)
    on_time = [None, None, None]

    def cut_off(history: list[str], early: list[float | None]) -> list[bool]:
        return [verdict.cut_off for verdict in judge(said, history, early)]

    whole = [f"{first0} {second0}", complete, f"{first1} {second1}"]
    assert cut_off(whole, on_time) == [False, False, False], whole
    # The turn ended in the pause: two user messages, one per half.
    split = [first0, second0, complete, f"{first1} {second1}"]
    assert cut_off(split, on_time) == [True, False, False], split
    verdict = judge(said, split, on_time)[0]
    assert verdict.messages == (first0, second0)
    assert verdict.reasons == ["reached the conversation as 2 user messages"]
    # The answer to the first half was interrupted and the half lost: only the rest is left.
    lost = [*whole[:2], second1]
    assert cut_off(lost, on_time) == [False, False, True], lost
    assert judge(said, lost, on_time)[2].reasons == [f"the conversation lacks {PAUSED[1].first!r}"]
    # Whole in the conversation, but the person heard a reply before finishing.
    assert cut_off(whole, [None, None, 420.0]) == [False, False, True]
    # A sentence that never arrived.
    assert cut_off(whole[:2], on_time) == [False, False, True]
    assert judge(said, whole[:2], on_time)[2].reasons == ["never reached the conversation"]
    # Two sentences run together into one user message: one of them has none of its own.
    run_together = [whole[0], f"{complete} {whole[2]}"]
    verdicts = judge(said, run_together, on_time)
    assert not verdicts[0].cut_off and sum(v.cut_off for v in verdicts) == 1, run_together
    assert [v.inside for v in verdicts if v.cut_off] == [run_together[1]]


def test_the_conversation_is_the_history_of_the_marker_turn_not_every_request() -> None:
    first, second = halves_heard(PAUSED[0])
    greeting = {"messages": [{"role": "system", "content": "Be brief."}]}
    speculative = {"messages": [*greeting["messages"], {"role": "user", "content": first}]}
    history = [
        *greeting["messages"],
        {"role": "assistant", "content": "Okay, got it."},
        {"role": "user", "content": [{"type": "text", "text": f"{first} {second}"}]},
        {"role": "assistant", "content": "Okay, got it."},
    ]
    answered = {"messages": history[:3]}
    marker = {"messages": [*history, {"role": "user", "content": "That is all."}]}
    requests = [greeting, speculative, answered, marker]
    assert conversation_before("That is all.", requests[:3]) is None
    conversation = conversation_before("That is all.", requests)
    assert conversation == [f"{first} {second}"]
    assert not judge([PAUSED[0]], conversation, [None])[0].cut_off


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["whole", "split", "lost", "missing"]), min_size=42, max_size=42))
def test_scoring_finds_exactly_the_sentences_that_did_not_arrive_whole(fates: list[str]) -> None:
    """With perfect transcripts, any mix of fates is told apart sentence by sentence: whole,
    split at the pause, only the words after the pause, or nothing at all (a complete
    sentence has no pause: split or lost, it is missing)."""
    said = session_order()
    history: list[str] = []
    for utterance, fate in zip(said, fates, strict=True):
        if fate == "whole":
            history.append(utterance.text)
        elif utterance.paused and fate == "split":
            history += [utterance.first, utterance.second]
        elif utterance.paused and fate == "lost":
            history.append(utterance.second)
    verdicts = judge(said, history, [None] * len(said))
    assert [v.cut_off for v in verdicts] == [fate != "whole" for fate in fates]
