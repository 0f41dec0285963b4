"""Real speech, end to end: an aiortc client talks to the agent over WebRTC.

The agent runs as its own process against the stand-ins (Whisper tiny.en and Piper behind
Speaches' API, a rule-following LLM behind Ollama's). The client hears the greeting,
speaks synthesised sentences, and checks the words of the spoken replies.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from tests.audio import normalize_words, pad_with_silence, synthesize, transcribe, trim_silence
from tests.helpers import STT_MODEL, AgentProcess, chat_requests, standin_requests
from tests.standins.ollama import GREETING  # the LLM stand-in's answer to the greeting turn
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

pytestmark = pytest.mark.voice

FIRST = "What is the weather like in Paris today"
SECOND = "Please turn on the kitchen lights"


# Speech engines run in a thread: the client's event loop must keep its audio flowing.
async def hear(samples) -> list[str]:
    return normalize_words(await asyncio.to_thread(transcribe, samples, SAMPLE_RATE))


async def spoken(text: str) -> np.ndarray:
    return await asyncio.to_thread(synthesize, text, SAMPLE_RATE)


async def speak_and_hear(client: VoiceClient, sentence: str) -> tuple[list[str], float]:
    """Say ``sentence``; return the words of the reply and end-of-speech → reply-audio secs."""
    speech = await spoken(sentence)
    since = len(client.messages)
    spoke_until = await client.microphone.say(pad_with_silence(speech, SAMPLE_RATE, 0.3, 0.0))
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

    speaches_log = await asyncio.to_thread(standin_requests, speaches_url)
    uploads = [r for r in speaches_log if r["path"] == "/v1/audio/transcriptions"]
    assert uploads, "no speech-to-text request was made"
    for upload in uploads:  # OpenAI's transcription shape, as Speaches takes it
        assert upload["content_type"] == "multipart/form-data"
        assert {"file", "model", "language"} <= set(upload["fields"])
        assert upload["model"] == STT_MODEL and upload["language"] == "en"

    last_request = (await asyncio.to_thread(chat_requests, ollama_url))[-1]
    roles = [message["role"] for message in last_request["messages"]]
    assert roles == ["system", "assistant", "user", "assistant", "user"], roles
    assert last_request["stream"] is True

    figures = {"first_turn_ms": first_latency * 1000, "second_turn_ms": second_latency * 1000}
    (artifacts / "voice-roundtrip-latency.json").write_text(json.dumps(figures, indent=2))
    print(f"end of speech → first reply audio: {figures}")


PAUSE_SECS = 0.35


async def test_speaking_over_the_greeting_stops_it(agent: AgentProcess) -> None:
    loopback_only()
    greeting_secs = len(await spoken(GREETING)) / SAMPLE_RATE
    interruption = await spoken("Sorry, stop please")
    client = VoiceClient(agent.base_url)
    connected_at = time.time()
    await client.connect()
    try:
        greeting_onset = await client.wait_for_sound(after=connected_at, timeout=60)
        client.microphone.say(interruption)  # not awaited: the bot goes on talking meanwhile
        speech_started = time.time()
        await client.wait_for_message(lambda m: m.get("type") == "user-started-speaking")
        await client.wait_for_message(lambda m: m.get("type") == "bot-interrupted")
        stopped_at = await client.wait_for_audio(
            lambda recording: recording.quiet_from(speech_started, 0.5), 30, "quiet"
        )
    finally:
        await client.close()
    natural_end = greeting_onset + greeting_secs
    print(f"bot audio stopped {stopped_at - speech_started:.2f} s after the user began speaking")
    assert stopped_at < natural_end - 1.0, "the greeting played on over the user"


async def test_a_pause_inside_a_sentence_does_not_cut_the_user_off(
    agent: AgentProcess, ollama_url: str
) -> None:
    loopback_only()
    # Without the synthesiser's own silence at either end, the pause is only what we put in.
    first_half = trim_silence(await spoken("I would like to know"))
    second_half = trim_silence(await spoken("the weather in Paris"))
    comma = np.zeros(int(PAUSE_SECS * SAMPLE_RATE), np.int16)  # a natural mid-sentence pause
    client = VoiceClient(agent.base_url)
    await client.connect()
    try:
        await client.wait_for_spoken_reply(since=0)  # the greeting
        requests_before = len(await asyncio.to_thread(chat_requests, ollama_url))
        since = len(client.messages)
        spoke_until = await client.microphone.say(np.concatenate([first_half, comma, second_half]))
        await client.wait_for_spoken_reply(since)
        heard = await hear(client.recording.since(spoke_until))
    finally:
        await client.close()
    new_requests = (await asyncio.to_thread(chat_requests, ollama_url))[requests_before:]
    assert len(new_requests) == 1, "the pause ended the user's turn early"
    said = new_requests[0]["messages"][-1]["content"]
    # Both halves in one turn ("Paris" alone is often heard as "pairs" by Whisper tiny).
    assert contains_in_order(normalize_words(said), ["like", "to", "know", "the", "weather"])
    assert contains_in_order(heard, ["you", "said", "know", "the", "weather"]), heard
