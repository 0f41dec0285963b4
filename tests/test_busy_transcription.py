"""A busy CPU-only server: Speaches transcribes one request at a time, so with several
calls at once a segment's transcript can come seconds after the person has finished.
A sentence with a pause in it must still be answered once, whole, in every call.

Real speech both ways, real Whisper tiny.en behind a stand-in that, like the real
Speaches on two cores, starts a transcription only when the one before has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.helpers import (
    LLM_MODEL,
    AgentProcess,
    agent_env,
    chat_requests,
    run_agent,
    standin_requests,
)
from tests.paused_speech import not_answered_whole, sentence_with_a_pause, user_words
from tests.standins.process import start_standin
from tests.webrtc_client import VoiceClient, loopback_only

pytestmark = pytest.mark.voice


@pytest.fixture(scope="module")
def ollama() -> Iterator[str]:
    with start_standin("tests.standins.ollama", "--installed", LLM_MODEL) as (_, url):
        yield url


def serial_speaches(*args: str):
    """The Speaches stand-in, transcribing one request at a time."""
    return start_standin(
        "tests.standins.speaches", "--installed-all", "--warm", "--stt-serial", *args
    )


async def calls_at_once(agent: AgentProcess, ollama: str, speaches: str, count: int) -> None:
    """``count`` calls each say their sentence at the same moment; each is answered once."""
    loopback_only()
    clients = [VoiceClient(agent.base_url) for _ in range(count)]
    speech = await asyncio.gather(*(sentence_with_a_pause(i) for i in range(count)))
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        await asyncio.gather(*(client.wait_for_spoken_reply(since=0) for client in clients))
        before = len(await asyncio.to_thread(chat_requests, ollama))
        transcribed_before = len(await asyncio.to_thread(standin_requests, speaches))
        marks = [len(client.messages) for client in clients]
        await asyncio.gather(*(c.microphone.say(s) for c, s in zip(clients, speech, strict=True)))
        await asyncio.gather(
            *(c.wait_for_spoken_reply(m, timeout=90) for c, m in zip(clients, marks, strict=True))
        )
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    segments = [
        entry
        for entry in (await asyncio.to_thread(standin_requests, speaches))[transcribed_before:]
        if entry["path"] == "/v1/audio/transcriptions"
    ]
    assert len(segments) >= 2 * count, "each sentence must reach speech-to-text in two halves"
    said = user_words((await asyncio.to_thread(chat_requests, ollama))[before:])
    assert len(said) == count, f"{count} sentences became {len(said)} turns: {said}"
    assert not_answered_whole(said, list(range(count))) == 0, f"not answered whole: {said}"


@pytest.mark.parametrize("count", [2, 4])
async def test_calls_at_once_on_a_one_at_a_time_stt_answer_each_sentence_once_whole(
    ollama: str, count: int
) -> None:
    with serial_speaches() as (_, speaches), run_agent(agent_env(speaches, ollama)) as agent:
        await calls_at_once(agent, ollama, speaches, count)


async def test_a_transcription_slower_than_any_fixed_cap_delays_the_reply_but_never_splits_it(
    ollama: str,
) -> None:
    # 4 s for every transcription: longer than the 3 s the agent once gave up after.
    with (
        serial_speaches("--stt-delay-ms", "4000") as (_, speaches),
        run_agent(agent_env(speaches, ollama)) as agent,
    ):
        await calls_at_once(agent, ollama, speaches, 1)
