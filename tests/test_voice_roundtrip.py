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
import numpy as np
import pytest

from tests.audio import normalize_words, pad_with_silence, synthesize, transcribe
from tests.conftest import STT_MODEL, AgentProcess
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

pytestmark = pytest.mark.voice

FIRST = "What is the weather like in Paris today"
SECOND = "Please turn on the kitchen lights"
GREETING = "Hello! I am your home voice assistant. How can I help you today?"


async def hear(samples) -> list[str]:
    # In a thread: the client's event loop must keep sending microphone frames meanwhile.
    return normalize_words(await asyncio.to_thread(transcribe, samples, SAMPLE_RATE))


async def speak_and_hear(client: VoiceClient, sentence: str) -> tuple[list[str], float]:
    """Say ``sentence``; return the words of the reply and end-of-speech → reply-audio secs."""
    speech = await asyncio.to_thread(synthesize, sentence, SAMPLE_RATE)
    since = len(client.messages)
    await client.microphone.say(pad_with_silence(speech, SAMPLE_RATE, 0.3, 0.0)).wait()
    spoke_until = client.microphone.speech_ended_at
    assert spoke_until is not None
    await client.wait_for_spoken_reply(since)
    onset = client.recording.first_sound_after(spoke_until)
    assert onset is not None
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
    agent: AgentProcess, ollama_url: str, speaches_url: str, artifacts
) -> None:
    loopback_only()
    client = VoiceClient(agent.base_url)
    connected_at = time.time()
    await client.connect()
    try:
        await client.wait_for_spoken_reply(since=0)
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

    async with httpx.AsyncClient() as http:
        speaches_log = (await http.get(f"{speaches_url}/_standin/requests")).json()
    uploads = [r for r in speaches_log if r["path"] == "/v1/audio/transcriptions"]
    assert uploads, "no speech-to-text request was made"
    for upload in uploads:  # OpenAI's transcription shape, as Speaches takes it
        assert upload["content_type"] == "multipart/form-data"
        assert {"file", "model", "language"} <= set(upload["fields"])
        assert upload["model"] == STT_MODEL and upload["language"] == "en"

    last_request = (await chat_requests(ollama_url))[-1]
    roles = [message["role"] for message in last_request["messages"]]
    assert roles == ["system", "assistant", "user", "assistant", "user"], roles
    assert last_request["stream"] is True

    figures = {"first_turn_ms": first_latency * 1000, "second_turn_ms": second_latency * 1000}
    (artifacts / "voice-roundtrip-latency.json").write_text(json.dumps(figures, indent=2))
    print(f"end of speech → first reply audio: {figures}")


PAUSE_SECS = 0.35


def trim(samples: np.ndarray, threshold: int = 300) -> np.ndarray:
    """Cut the synthesiser's own leading and trailing silence, so a pause is what we say."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def quiet_from(recording, start: float, quiet_secs: float) -> float | None:
    """Wall time from which received audio stayed below speech level for ``quiet_secs``."""
    quiet_since = None
    for at, samples in recording.frames:
        if at < start:
            continue
        loud = np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300
        if loud:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = at
        elif at - quiet_since >= quiet_secs:
            return quiet_since
    return None


async def test_speaking_over_the_greeting_stops_it(agent: AgentProcess) -> None:
    loopback_only()
    greeting_secs = len(await asyncio.to_thread(synthesize, GREETING, SAMPLE_RATE)) / SAMPLE_RATE
    interruption = await asyncio.to_thread(synthesize, "Sorry, stop please", SAMPLE_RATE)
    client = VoiceClient(agent.base_url)
    connected_at = time.time()
    await client.connect()
    try:
        greeting_onset = await client.wait_for_sound(after=connected_at, timeout=60)
        client.microphone.say(interruption)
        speech_started = time.time()
        await client.wait_for_message(lambda m: m.get("type") == "user-started-speaking")
        await client.wait_for_message(lambda m: m.get("type") == "bot-interrupted")
        async with client._new_audio:
            await asyncio.wait_for(
                client._new_audio.wait_for(
                    lambda: quiet_from(client.recording, speech_started, 0.5)
                ),
                30,
            )
        stopped_at = quiet_from(client.recording, speech_started, 0.5)
    finally:
        await client.close()
    natural_end = greeting_onset + greeting_secs
    print(f"bot audio stopped {stopped_at - speech_started:.2f} s after the user began speaking")
    assert stopped_at < natural_end - 1.0, "the greeting played on over the user"


async def test_a_pause_inside_a_sentence_does_not_cut_the_user_off(
    agent: AgentProcess, ollama_url: str
) -> None:
    loopback_only()
    first_half = trim(await asyncio.to_thread(synthesize, "I would like to know", SAMPLE_RATE))
    second_half = trim(await asyncio.to_thread(synthesize, "the weather in Paris", SAMPLE_RATE))
    comma = np.zeros(int(PAUSE_SECS * SAMPLE_RATE), np.int16)  # a natural mid-sentence pause
    client = VoiceClient(agent.base_url)
    await client.connect()
    try:
        await client.wait_for_spoken_reply(since=0)  # the greeting
        requests_before = len(await chat_requests(ollama_url))
        since = len(client.messages)
        await client.microphone.say(np.concatenate([first_half, comma, second_half])).wait()
        spoke_until = client.microphone.speech_ended_at
        await client.wait_for_spoken_reply(since)
        heard = await hear(client.recording.since(spoke_until))
    finally:
        await client.close()
    new_requests = (await chat_requests(ollama_url))[requests_before:]
    assert len(new_requests) == 1, "the pause ended the user's turn early"
    said = new_requests[0]["messages"][-1]["content"]
    # Both halves in one turn ("Paris" alone is often heard as "pairs" by Whisper tiny).
    assert contains_in_order(normalize_words(said), ["like", "to", "know", "the", "weather"])
    assert contains_in_order(heard, ["you", "said", "know", "the", "weather"]), heard
