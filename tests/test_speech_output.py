"""How a reply is spoken: its first clause as soon as it is written, then whole sentences
(``agent/clauses.py``), and its first words without the synthesiser's lead-in silence
(``agent/leading_silence.py``), checked on their own and through the real TTS service
against the stand-in backends (real Piper)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipecat.frames.frames import LLMContextFrame, TTSAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.ollama.llm import OLLamaLLMService
from pipecat.tests.utils import run_test
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from agent.clauses import FirstClauseAggregator, count_words, ends_with_clause_mark
from agent.leading_silence import (
    AUDIBLE_LEVEL,
    KEEP_SECS,
    MAX_TRIM_SECS,
    LeadingSilenceTrimmer,
)
from agent.services import SpeachesTTSService
from tests.helpers import LLM_MODEL, TTS_VOICE, clear_standin_requests, standin_requests
from tests.standins.engines import encode_wav
from tests.standins.speaches import STT_MODEL, TTS_MODEL

MIN_WORDS = 4
RATE = 24000
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- cutting a reply into chunks ------------------------------------------------------------


def chunks_of(pieces: Sequence[str], aggregator_class=FirstClauseAggregator, **kwargs) -> list[str]:
    """What the TTS is asked to say for a reply streamed in as ``pieces``."""
    return asyncio.run(_chunks(aggregator_class(**kwargs), [pieces]))[0]


def replies_of(replies: Sequence[Sequence[str]], **kwargs) -> list[list[str]]:
    """The chunks of several replies that follow each other through one aggregator."""
    return asyncio.run(_chunks(FirstClauseAggregator(min_words=MIN_WORDS, **kwargs), replies))


def sentences_of(text: str) -> list[str]:
    """Pipecat's own chunks: whole sentences."""
    return chunks_of([text], SimpleTextAggregator)


async def _chunks(aggregator, replies: Sequence[Sequence[str]]) -> list[list[str]]:
    said = []
    for pieces in replies:
        chunks = []
        for piece in pieces:
            chunks += [aggregation.text async for aggregation in aggregator.aggregate(piece)]
        if rest := await aggregator.flush():
            chunks.append(rest.text)
        # The TTS service drops chunks with nothing to say.
        said.append([chunk for chunk in chunks if chunk.strip()])
    return said


def clause_boundaries(text: str) -> Iterator[int]:
    """Where ``text`` could end a clause: after a clause mark followed by white space."""
    for end in range(1, len(text)):
        if text[end].isspace() and ends_with_clause_mark(text[:end]):
            yield end


def assert_pieces_of(text: str, chunks: list[str]) -> None:
    """The chunks are the text itself, in order, with only white space left between them."""
    position = 0
    for chunk in chunks:
        start = text.index(chunk, position)
        assert not text[position:start].strip(), f"{text[position:start]!r} went unsaid"
        position = start + len(chunk)
    assert not text[position:].strip(), f"{text[position:]!r} went unsaid"


WORDS = ["the", "weather", "looks", "sunny", "I", "you", "twenty", "minutes", "Okay", "so"]
TRICKY = ["3,000", "3:30", "e.g.", "Dr.", "well-known", "$3.50", "U.S.", "1.5", "—yes", "a-b"]
GAPS = [" "] * 6 + [", ", "; ", ": ", " - ", " — ", "—", "-", ". ", "? ", "! ", "\n", ",", " ,"]
# Two replies in three open with a few plain words and a clause mark, so first clauses of
# every length around MIN_WORDS come up often.
opening = st.tuples(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=2 * MIN_WORDS),
    st.sampled_from([", ", "; ", ": ", " - ", " — ", ",\n"]),
).map(lambda opening: " ".join(opening[0]) + opening[1])
openings = st.one_of(st.just(""), opening, opening)
reply_texts = st.tuples(
    openings,
    st.lists(
        st.tuples(st.sampled_from(WORDS + TRICKY), st.sampled_from(GAPS)), min_size=1, max_size=40
    ),
).map(lambda reply: reply[0] + "".join(word + gap for word, gap in reply[1]).rstrip() + ".")


@st.composite
def streamed(draw, texts=reply_texts) -> tuple[str, list[str]]:
    """A reply and the pieces it arrives in (as an LLM's tokens would)."""
    text = draw(texts)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=len(text) // 2)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@EXAMPLES
@given(streamed())
def test_the_chunks_are_the_reply_in_order_however_it_streams_in(reply) -> None:
    text, pieces = reply
    chunks = chunks_of(pieces, min_words=MIN_WORDS)
    assert_pieces_of(text, chunks)
    assert chunks == chunks_of([text], min_words=MIN_WORDS) == chunks_of(list(text), min_words=4)


@EXAMPLES
@given(streamed())
def test_only_a_first_clause_of_enough_words_differs_from_whole_sentences(reply) -> None:
    text, pieces = reply
    chunks, sentences = chunks_of(pieces, min_words=MIN_WORDS), sentences_of(text)
    if chunks[0] == sentences[0]:
        assert chunks == sentences
        return
    clause = chunks[0]
    assert sentences[0].startswith(clause), "a clause is the start of the first sentence"
    assert ends_with_clause_mark(clause)
    assert count_words(clause) >= MIN_WORDS, f"{clause!r} is too short to say alone"
    end = text.index(clause) + len(clause)
    assert text[end].isspace(), f"{text!r} was cut inside a word or number"
    # It is the earliest clause long enough, and the rest goes on by whole sentences.
    earlier = [cut for cut in clause_boundaries(clause) if count_words(clause[:cut]) >= MIN_WORDS]
    assert earlier == []
    assert chunks[1:] == sentences_of(text[end:])


@EXAMPLES
@given(streamed())
def test_the_first_clause_is_asked_for_as_soon_as_the_space_after_it_arrives(reply) -> None:
    text, _ = reply
    chunks = chunks_of([text], min_words=MIN_WORDS)
    if chunks[0] == sentences_of(text)[0]:
        return
    end = text.index(chunks[0]) + len(chunks[0])
    assert chunks_of([text[: end + 1]], min_words=MIN_WORDS)[0] == chunks[0]
    aggregator = FirstClauseAggregator(min_words=MIN_WORDS)

    async def released_before_flush(prefix: str) -> list[str]:
        return [chunk.text async for chunk in aggregator.aggregate(prefix)]

    assert asyncio.run(released_before_flush(text[: end + 1])) == [chunks[0]]


@EXAMPLES
@given(streamed(), streamed(), st.integers(0, 200))
def test_every_reply_may_start_with_a_clause_even_after_an_interruption(first, second, cut) -> None:
    (text1, pieces1), (_, pieces2) = first, second
    assert replies_of([pieces1, pieces2]) == [
        chunks_of(pieces1, min_words=MIN_WORDS),
        chunks_of(pieces2, min_words=MIN_WORDS),
    ]

    async def interrupted() -> list[str]:
        aggregator = FirstClauseAggregator(min_words=MIN_WORDS)
        async for _ in aggregator.aggregate(text1[:cut]):
            pass
        await aggregator.handle_interruption()
        return (await _chunks(aggregator, [pieces2]))[0]

    assert asyncio.run(interrupted()) == chunks_of(pieces2, min_words=MIN_WORDS)


@EXAMPLES
@given(streamed())
def test_no_clauses_is_pipecats_sentences(reply) -> None:
    text, pieces = reply
    assert chunks_of(pieces, min_words=0) == sentences_of(text)


@pytest.mark.parametrize(
    ("reply", "chunks"),
    [
        (
            "The weather tomorrow looks sunny, with a high of 3,000 degrees. Take a coat.",
            ["The weather tomorrow looks sunny,", "with a high of 3,000 degrees.", "Take a coat."],
        ),
        # Too few words before the comma: the first sentence is said whole.
        ("Okay, the kitchen lights are on now.", ["Okay, the kitchen lights are on now."]),
        ("You said: book a table.", ["You said: book a table."]),
        # Numbers, times, abbreviations and hyphenated words are never cut.
        (
            "It costs 3,000 dollars at 3:30, e.g. today.",
            ["It costs 3,000 dollars at 3:30,", "e.g. today."],
        ),
        (
            "A well-known and well-loved place; open late.",
            ["A well-known and well-loved place;", "open late."],
        ),
        (
            "I can help you with that - let me check.",
            ["I can help you with that -", "let me check."],
        ),
        # A sentence that ends first is the first chunk; after it, only sentences.
        (
            "Sure. I can set that timer, it is ten minutes.",
            ["Sure.", "I can set that timer, it is ten minutes."],
        ),
    ],
)
def test_chunks_of_typical_replies(reply: str, chunks: list[str]) -> None:
    assert chunks_of(list(reply), min_words=MIN_WORDS) == chunks


# --- the lead-in silence of real Piper speech -----------------------------------------------


def piper_pcm(speaches_url: str, text: str) -> bytes:
    body = {"model": TTS_MODEL, "input": text, "voice": TTS_VOICE, "response_format": "pcm"}
    response = httpx.post(
        f"{speaches_url}/v1/audio/speech", json={**body, "sample_rate": RATE}, timeout=60
    )
    response.raise_for_status()
    return response.content


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


def first_audible(pcm: bytes) -> int:
    return int(np.flatnonzero(np.abs(samples(pcm)) >= AUDIBLE_LEVEL)[0])


def trimmed(pcm: bytes, pieces: Sequence[int] = ()) -> tuple[bytes, LeadingSilenceTrimmer]:
    """``pcm`` through a trimmer, fed in pieces of the given sizes, then the rest."""
    trimmer, out, position = LeadingSilenceTrimmer(RATE), b"", 0
    for size in pieces:
        out += trimmer.feed(pcm[position : position + size])
        position += size
    return out + trimmer.feed(pcm[position:]) + trimmer.flush(), trimmer


@pytest.fixture(scope="module")
def weather_pcm(speaches_url: str) -> bytes:
    return piper_pcm(speaches_url, "The weather tomorrow looks sunny,")


@pytest.mark.parametrize(
    "text",
    [
        "Okay, the kitchen lights are on now.",
        "Hello! I am your home voice assistant.",
        "You said: book a table for four people.",
        "My train leaves at eight thirty.",
    ],
)
def test_real_piper_speech_starts_at_its_first_sound(speaches_url: str, text: str) -> None:
    pcm = piper_pcm(speaches_url, text)
    onset, keep = first_audible(pcm), round(KEEP_SECS * RATE)
    assert onset > 2 * keep, f"Piper's lead-in for {text!r} is only {onset / RATE * 1000:.1f} ms"
    out, trimmer = trimmed(pcm)
    assert trimmer.dropped_samples == onset - keep
    assert len(out) == len(pcm) - 2 * trimmer.dropped_samples
    assert first_audible(out) == keep, "the first sound now comes after the kept few ms"
    # Everything audible is as Piper made it; only the kept quiet start is faded in from 0.
    assert out[2 * keep :] == pcm[2 * onset :]
    faded, original = samples(out)[:keep], samples(pcm)[onset - keep : onset]
    assert faded[0] == 0
    assert np.all(np.abs(faded) <= np.abs(original))
    # A straight rise from silence at the cut to the samples as made at the first sound.
    rise = np.arange(keep) / keep
    assert np.all(np.abs(faded - original * rise) <= 0.5)


def test_trimmed_speech_says_the_same_words(speaches_url: str) -> None:
    text = "Okay, the kitchen lights are on now."
    out, _ = trimmed(piper_pcm(speaches_url, text))
    files = {"file": ("reply.wav", encode_wav(samples(out).astype(np.int16), RATE), "audio/wav")}
    response = httpx.post(
        f"{speaches_url}/v1/audio/transcriptions",
        files=files,
        data={"model": STT_MODEL},
        timeout=60,
    )
    response.raise_for_status()
    assert response.json()["text"].strip() == text


def test_speech_that_is_audible_at_once_is_untouched(speaches_url: str) -> None:
    pcm = piper_pcm(speaches_url, "Sure.")  # Piper's "S" is audible from the first sample
    assert first_audible(pcm) == 0
    assert trimmed(pcm)[0] == pcm


def test_a_pause_longer_than_padding_is_kept(weather_pcm: bytes) -> None:
    pcm = bytes(2 * round((MAX_TRIM_SECS + 0.1) * RATE)) + weather_pcm
    trimmer, longest = LeadingSilenceTrimmer(RATE), 2 * round(MAX_TRIM_SECS * RATE)
    # Nothing is let through while only silence has come, up to MAX_TRIM_SECS of it; then
    # all of it, as it was made.
    assert trimmer.feed(pcm[: longest - 2]) == b""
    assert trimmer.feed(pcm[longest - 2 :]) == pcm
    assert trimmer.flush() == b""
    assert trimmed(pcm)[0] == pcm


def test_an_utterance_of_silence_comes_out_whole_at_its_end() -> None:
    silence = bytes(2 * round(0.1 * RATE))
    trimmer = LeadingSilenceTrimmer(RATE)
    assert trimmer.feed(silence) == b""
    assert trimmer.flush() == silence


@EXAMPLES
@given(st.lists(st.integers(1, 4001), max_size=12))
def test_the_cut_does_not_depend_on_how_the_audio_streams_in(weather_pcm, pieces) -> None:
    assert trimmed(weather_pcm, pieces)[0] == trimmed(weather_pcm)[0]


# --- the TTS service: a real LLM stream in, real Piper speech out ---------------------------

SAID = [
    "the weather tomorrow looks sunny, with a high of twenty degrees",
    "set a timer for ten minutes, then tell me when the pasta is ready",
]
SPOKEN = [
    ["You said: the weather tomorrow looks sunny,", "with a high of twenty degrees."],
    ["You said: set a timer for ten minutes,", "then tell me when the pasta is ready."],
]


async def test_each_reply_is_spoken_first_clause_first_and_starts_at_its_first_sound(
    speaches_url: str, ollama_url: str
) -> None:
    clear_standin_requests(speaches_url)
    llm = OLLamaLLMService(
        base_url=f"{ollama_url}/v1", settings=OLLamaLLMService.Settings(model=LLM_MODEL)
    )
    tts = SpeachesTTSService(
        api_key="unused",
        base_url=f"{speaches_url}/v1",
        sample_rate=RATE,
        first_clause_words=MIN_WORDS,
        settings=SpeachesTTSService.Settings(model=TTS_MODEL, voice=TTS_VOICE),
    )
    replies = [
        LLMContextFrame(LLMContext(messages=[{"role": "user", "content": said}])) for said in SAID
    ]
    down, _ = await run_test(
        Pipeline([llm, tts]),
        frames_to_send=replies,
        pipeline_params=PipelineParams(audio_out_sample_rate=RATE),
        start_timeout=10,
    )
    asked = [
        entry["input"]
        for entry in standin_requests(speaches_url)
        if entry["path"] == "/v1/audio/speech"
    ]
    assert asked == [chunk for reply in SPOKEN for chunk in reply]

    heard = b"".join(frame.audio for frame in down if isinstance(frame, TTSAudioRawFrame))
    expected = b""
    for first, *rest in SPOKEN:
        # Piper is deterministic here: the same text gives the same samples.
        pcm = await asyncio.to_thread(piper_pcm, speaches_url, first)
        expected += trimmed(pcm)[0]
        assert len(trimmed(pcm)[0]) < len(pcm), "the reply's first chunk starts trimmed"
        for chunk in rest:  # later chunks keep their lead-in: the pause between clauses
            expected += await asyncio.to_thread(piper_pcm, speaches_url, chunk)
    assert heard == expected
