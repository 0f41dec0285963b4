"""Real speech, end to end: an aiortc client talks to the agent over WebRTC.

The agent runs as its own process against the stand-ins (Whisper tiny.en and Piper behind
Speaches' API, a rule-following LLM behind Ollama's). The client hears the greeting,
speaks synthesised sentences, and checks the words of the spoken replies.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.audio import normalize_words, pad_with_silence, synthesize, transcribe
from tests.conftest import AgentProcess
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

pytestmark = pytest.mark.voice

FIRST = "What is the weather like in Paris today"
SECOND = "Please turn on the kitchen lights"


async def hear(samples) -> list[str]:
    # In a thread: the client's event loop must keep sending microphone frames meanwhile.
    return normalize_words(await asyncio.to_thread(transcribe, samples, SAMPLE_RATE))


async def speak_and_hear(client: VoiceClient, sentence: str) -> tuple[list[str], float]:
    """Say ``sentence``; return the words of the reply and end-of-speech → reply-audio secs."""
    speech = await asyncio.to_thread(synthesize, sentence, SAMPLE_RATE)
    await client.microphone.say(pad_with_silence(speech, SAMPLE_RATE, 0.3, 0.0)).wait()
    spoke_until = client.microphone.speech_ended_at
    assert spoke_until is not None
    onset = await client.wait_for_silence_after_speech(spoke_until, timeout=60)
    return await hear(client.recording.since(spoke_until)), onset - spoke_until


def contains_in_order(words: list[str], expected: list[str]) -> bool:
    position = 0
    for word in words:
        if position < len(expected) and word == expected[position]:
            position += 1
    return position == len(expected)


async def chat_requests(ollama_url: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=ollama_url) as http:
        return (await http.get("/_standin/requests")).json()["chat"]


async def test_greeting_then_two_turns_with_the_whole_conversation(
    agent: AgentProcess, ollama_url: str, artifacts
) -> None:
    loopback_only()
    client = VoiceClient(agent.base_url)
    connected_at = time.time()
    await client.connect()
    try:
        await client.wait_for_silence_after_speech(connected_at, timeout=60)
        greeting = await hear(client.recording.since(connected_at))
        assert contains_in_order(greeting, ["hello", "voice", "assistant"]), greeting

        first, first_latency = await speak_and_hear(client, FIRST)
        assert contains_in_order(first, ["you", "said", "weather", "paris"]), first

        second, second_latency = await speak_and_hear(client, SECOND)
        assert contains_in_order(
            second, ["you", "said", "kitchen", "lights", "before", "you", "said", "paris"]
        ), second
    finally:
        await client.close()

    last_request = (await chat_requests(ollama_url))[-1]
    roles = [message["role"] for message in last_request["messages"]]
    assert roles == ["system", "assistant", "user", "assistant", "user"], roles
    assert last_request["stream"] is True

    figures = {"first_turn_ms": first_latency * 1000, "second_turn_ms": second_latency * 1000}
    (artifacts / "voice-roundtrip-latency.json").write_text(json.dumps(figures, indent=2))
    print(f"end of speech → first reply audio: {figures}")
