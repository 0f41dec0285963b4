"""Turn-taking with real speech, at the agent's default settings: a person who hesitates
mid-sentence or goes on after the bot began answering is answered once, for the whole
sentence, and a reply started speculatively and dropped never reaches them or the
conversation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest

from tests.audio import normalize_words, synthesize, trim_silence
from tests.helpers import AgentProcess, chat_requests
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

pytestmark = pytest.mark.voice

HESITATION_SECS = 0.8


async def spoken(text: str) -> np.ndarray:
    return trim_silence(await asyncio.to_thread(synthesize, text, SAMPLE_RATE))


def silence(secs: float) -> np.ndarray:
    return np.zeros(int(secs * SAMPLE_RATE), np.int16)


def user_messages(request: dict) -> list[list[str]]:
    return [normalize_words(m["content"]) for m in request["messages"] if m["role"] == "user"]


def replies_heard(client: VoiceClient, since: int) -> list[str]:
    """The replies the page would show: each bot-llm-text run since message ``since``."""
    replies, current = [], None
    for message in client.messages[since:]:
        kind = message.get("type")
        if kind == "bot-llm-started":
            current = []
        elif kind == "bot-llm-text" and current is not None:
            current.append(message["data"]["text"])
        elif kind == "bot-llm-stopped" and current is not None:
            replies.append("".join(current))
            current = None
    return replies


async def say_and_wait(client: VoiceClient, speech: np.ndarray) -> float:
    since = len(client.messages)
    spoke_until = await client.microphone.say(speech)
    await client.wait_for_spoken_reply(since)
    return spoke_until


@asynccontextmanager
async def greeted(agent: AgentProcess, ollama_url: str) -> AsyncIterator[tuple[VoiceClient, int]]:
    """A connected client that has heard the greeting, and the chat requests made so far."""
    loopback_only()
    client = VoiceClient(agent.base_url)
    await client.connect()
    try:
        await client.wait_for_spoken_reply(since=0)
        yield client, len(await asyncio.to_thread(chat_requests, ollama_url))
    finally:
        await client.close()


def assert_one_user_message_then_thanks(requests: list[dict], words: set[str]) -> None:
    """The conversation the last request carries: the sentence as one user message, its
    one reply, then the "Thank you" turn."""
    history = user_messages(requests[-1])
    assert len(history) == 2, f"the sentence is not one user message: {history}"
    assert words <= set(history[0]), history
    roles = [m["role"] for m in requests[-1]["messages"]]
    assert roles == ["system", "assistant", "user", "assistant", "user"], (
        f"a withdrawn reply is still in the conversation: {roles}"
    )


async def test_a_hesitation_is_one_turn_and_the_dropped_speculative_reply_is_never_heard(
    agent: AgentProcess, ollama_url: str
) -> None:
    first, second = await asyncio.gather(
        spoken("What is the weather going to be like in"), spoken("Rome on Saturday")
    )
    async with greeted(agent, ollama_url) as (client, requests_before):
        since = len(client.messages)
        sentence = np.concatenate([first, silence(HESITATION_SECS), second])
        spoke_until = await say_and_wait(client, sentence)
        onset = client.recording.first_sound_after(spoke_until - len(sentence) / SAMPLE_RATE)
        assert onset is not None and onset >= spoke_until, "a reply began before the sentence ended"
        assert len(replies_heard(client, since)) == 1, replies_heard(client, since)
        await say_and_wait(client, await spoken("Thank you"))
    requests = (await asyncio.to_thread(chat_requests, ollama_url))[requests_before:]
    halves = [request for request in requests if "saturday" not in user_messages(request)[-1]]
    assert halves, "no reply was started speculatively for the first half (nothing was tested)"
    assert_one_user_message_then_thanks(requests, {"weather", "saturday"})


async def test_going_on_after_the_reply_began_is_one_turn(
    agent: AgentProcess, ollama_url: str
) -> None:
    first, second = await asyncio.gather(
        spoken("Please turn on the lights in the kitchen"), spoken("and in the hallway too")
    )
    async with greeted(agent, ollama_url) as (client, requests_before):
        first_until = await client.microphone.say(first)
        # The turn ends and the bot begins to answer "…in the kitchen"; the person goes on.
        await client.wait_for_sound(after=first_until, timeout=30)
        await client.wait_for_message(lambda m: m.get("type") == "bot-started-speaking")
        since = len(client.messages)
        await say_and_wait(client, second)
        assert any(m.get("type") == "bot-interrupted" for m in client.messages[since:])
        told = [m.get("data") for m in client.messages[since:] if m.get("type") == "server-message"]
        assert {"type": "turn-continued"} in told, "the page was not told the turn went on"
        await say_and_wait(client, await spoken("Thank you"))
    requests = (await asyncio.to_thread(chat_requests, ollama_url))[requests_before:]
    assert_one_user_message_then_thanks(requests, {"kitchen", "hallway"})
