"""A backend that fails, stalls or is slow never leaves the person in silence.

The real agent talks to the real stand-ins through a fault-injecting proxy
(``tests/standins/faults.py``). For each part of the voice path (speech-to-text and
text-to-speech at Speaches, the LLM at Ollama) and each kind of fault, one conversation
goes through the fault and then on:

- the person is told in words: the page gets a ``backend-fault`` message with the
  sentence for that part, and it is spoken (RTVI ``bot-tts-text``, sound received) unless
  the voice itself failed; nothing a library wrote reaches the page;
- the cause is logged once, with the backend and the kind of fault;
- once the fault is cleared, the next turn gets a normal, spoken reply in the same session;
- a slow backend within its deadlines is waited for, not cut off.

Short deadlines (``BACKEND_FIRST_BYTE_TIMEOUT_SECS``, ``BACKEND_STALL_TIMEOUT_SECS``) keep it
quick. Run with ``-s`` for the table of faults injected and survived.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from agent.cut_replies import CUT_MARK
from agent.fault_words import WORDS
from tests.audio import pad_with_silence, synthesize
from tests.helpers import (
    LLM_MODEL,
    AgentProcess,
    agent_env,
    chat_requests,
    run_agent,
)
from tests.standins.process import start_standin
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

pytestmark = pytest.mark.voice

FIRST_BYTE_SECS = 3.0
STALL_SECS = 1.5
HESITATION_SECS = 1.5  # TURN_HESITATION_SECS's default
SLOW_SECS = 1.0  # a slow backend's delay: well within FIRST_BYTE_SECS, real work included
REPLY = "Sure, I can help with that."  # every LLM answer: short, and cut halfway in words
PATHS = {
    "stt": "/v1/audio/transcriptions",
    "llm": "/v1/chat/completions",
    "tts": "/v1/audio/speech",
}
BACKENDS = {"stt": "speaches", "llm": "ollama", "tts": "speaches"}
# What the agent logs for each fault the proxy injects.
KINDS = {
    "refuse": "connection",
    "status": "http_5xx",
    "hang": "timeout",
    "stall": "timeout",
    "cut": "cut",
}
# Text a library or a backend writes, which must never reach the page.
LIBRARY_TEXT = (
    "Error code",
    "Unknown error",
    "Connection error",
    "completed with no audio",
    "peer closed",
    "incomplete",
    "Traceback",
    "Exception",
    "did not transcribe",
    "could not speak",
    "fault injected",
)


@dataclass
class Faults:
    """The two proxies, one in front of each stand-in."""

    speaches: str
    ollama: str

    def url(self, part: str) -> str:
        return self.ollama if part == "llm" else self.speaches

    def inject(self, part: str, fault: str, **options: Any) -> None:
        body = {"path": PATHS[part], "fault": fault, **options}
        httpx.put(f"{self.url(part)}/_faults", json=body, timeout=5).raise_for_status()

    def clear(self) -> None:
        for url in (self.speaches, self.ollama):
            httpx.delete(f"{url}/_faults", timeout=5).raise_for_status()

    def injected(self, part: str) -> int:
        """Requests to ``part``'s path a fault has been applied to so far."""
        log = httpx.get(f"{self.url(part)}/_faults", timeout=5).json()["injected"]
        return sum(entry["path"] == PATHS[part] for entry in log)


@dataclass
class Tally:
    """Per part and fault: requests the fault was applied to, and whether the conversation
    went on normally afterwards."""

    rows: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)

    def table(self) -> str:
        lines = ["part  backend   fault   requests faulted  survived"]
        for (part, fault), (requests, survived) in self.rows.items():
            verdict = "yes" if survived else "NO"
            lines.append(f"{part:5} {BACKENDS[part]:9} {fault:7} {requests:16}  {verdict}")
        for part in PATHS:
            mine = [v for (p, _), v in self.rows.items() if p == part]
            survived = sum(ok for _, ok in mine)
            lines.append(f"{part}: {len(mine)} faults injected, {survived} survived")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    kept = Tally()
    yield kept
    print(f"\nFaults injected and survived:\n{kept.table()}")


@pytest.fixture(scope="module")
def quick_ollama() -> Iterator[str]:
    with start_standin("tests.standins.ollama", "--installed", LLM_MODEL, "--reply", REPLY) as (
        _,
        url,
    ):
        yield url


@pytest.fixture(scope="module")
def faults(speaches_url: str, quick_ollama: str) -> Iterator[Faults]:
    with (
        start_standin("tests.standins.faults", "--upstream", speaches_url) as (_, speaches),
        start_standin("tests.standins.faults", "--upstream", quick_ollama) as (_, ollama),
    ):
        yield Faults(speaches, ollama)


@pytest.fixture(scope="module")
def agent(faults: Faults) -> Iterator[AgentProcess]:
    env = agent_env(
        faults.speaches,
        faults.ollama,
        BACKEND_FIRST_BYTE_TIMEOUT_SECS=str(FIRST_BYTE_SECS),
        BACKEND_STALL_TIMEOUT_SECS=str(STALL_SECS),
        TTS_SPEED="4.0",  # every reply and notice heard in a quarter of the time
    )
    with run_agent(env) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(agent: AgentProcess) -> AsyncIterator[VoiceClient]:
    loopback_only()
    voice = VoiceClient(agent.base_url)
    await voice.connect()
    await voice.wait_for_spoken_reply(since=0)  # the greeting
    yield voice
    await voice.close()


@pytest.fixture(scope="module")
def speech() -> dict[str, np.ndarray]:
    """What the person says, at the client's rate."""
    return {
        text: pad_with_silence(synthesize(text, SAMPLE_RATE), SAMPLE_RATE, 0.3, 0.0)
        for text in ("Hello there.", "Good morning.")
    }


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def messages_since(client: VoiceClient, since: int, kind: str) -> list[dict[str, Any]]:
    return [m for m in client.messages[since:] if m.get("type") == kind]


def spoken_texts(client: VoiceClient, since: int) -> list[str]:
    return [m["data"]["text"].strip() for m in messages_since(client, since, "bot-tts-text")]


def llm_text(client: VoiceClient, since: int) -> str:
    return "".join(m["data"]["text"] for m in messages_since(client, since, "bot-llm-text"))


def failures_logged(agent: AgentProcess) -> list[dict[str, Any]]:
    return agent.log_events("backend failed")


def errors_logged(agent: AgentProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in agent.log_lines if '"level": "error"' in line]


async def start_turn(
    client: VoiceClient, part: str, speech: dict[str, np.ndarray], n: int
) -> float:
    """A turn: spoken when speech-to-text is under test, else typed (the path from the
    conversation on is the same). Returns the wall time the person finished."""
    if part == "stt":
        text = ("Hello there.", "Good morning.")[n % 2]
        return await client.microphone.say(speech[text])
    client.send_text(("hello", "good morning")[n % 2], run_immediately=True)
    return time.time()


def is_fault_notice(message: dict[str, Any]) -> bool:
    return (
        message.get("type") == "server-message" and message["data"].get("type") == "backend-fault"
    )


async def wait_for_normal_reply(client: VoiceClient, since: int) -> None:
    """The whole reply, spoken, as the LLM wrote it, and nothing told about a fault."""
    await client.wait_for_spoken_reply(since, timeout=30)
    assert llm_text(client, since).strip() == REPLY
    assert " ".join(spoken_texts(client, since)) == REPLY
    assert not [m for m in client.messages[since:] if is_fault_notice(m)]


def assert_nothing_from_a_library(client: VoiceClient, since: int) -> None:
    new = client.messages[since:]
    assert not [m for m in new if m.get("type") == "error"], "an error reached the page as is"
    shown = [text for message in new for text in strings_in(message.get("data"))]
    leaked = [text for text in shown if any(bit in text for bit in LIBRARY_TEXT)]
    assert not leaked, f"library text reached the page: {leaked}"


FAULTS = [
    ("refuse", {}),
    ("status", {"status": 500}),
    ("hang", {}),
    ("stall", {}),
    ("cut", {}),
]
CASES = [
    (part, fault, options)
    for part in ("stt", "llm", "tts")
    for fault, options in FAULTS
    # A transcription is one short answer, which has the first-byte deadline as a whole:
    # a stalled one is a hang.
    if not (part == "stt" and fault == "stall")
]
CASES = [
    (part, fault, {"status": 503} if (part, fault) == ("tts", "status") else options)
    for part, fault, options in CASES
]


async def wait_for_new(client: VoiceClient, since: int, predicate, timeout: float) -> dict:
    """The first RTVI message after index ``since`` that ``predicate`` accepts."""
    old = {id(message) for message in client.messages[:since]}
    return await client.wait_for_message(
        lambda m: id(m) not in old and predicate(m), timeout=timeout
    )


@pytest.mark.parametrize(("part", "fault", "options"), CASES, ids=[f"{p}-{f}" for p, f, _ in CASES])
@pytest.mark.asyncio(loop_scope="module")
async def test_a_failing_backend_is_told_and_the_next_turn_works(
    client: VoiceClient,
    agent: AgentProcess,
    faults: Faults,
    tally: Tally,
    speech: dict[str, np.ndarray],
    quick_ollama: str,
    part: str,
    fault: str,
    options: dict[str, Any],
) -> None:
    words = WORDS[part]
    failures_before = len(failures_logged(agent))
    errors_before = len(errors_logged(agent))
    requests_before = faults.injected(part)
    survived = False
    try:
        await asyncio.to_thread(faults.inject, part, fault, **options)
        since = len(client.messages)
        started = time.time()
        finished = await start_turn(client, part, speech, 0)

        told = await wait_for_new(client, since, is_fault_notice, FIRST_BYTE_SECS + 15)
        assert told["data"] == {"type": "backend-fault", "part": part, "text": words.sentence}
        if words.spoken:  # and heard: its words are spoken, and sound arrives
            await wait_for_new(
                client,
                since,
                lambda m: (
                    m.get("type") == "bot-tts-text" and m["data"]["text"].strip() == words.sentence
                ),
                timeout=20,
            )
            assert await client.wait_for_sound(after=started, timeout=10)
            stops = client.counts["bot-stopped-speaking"]
            await client.wait_for_count("bot-stopped-speaking", stops + 1, timeout=20)
        else:
            assert words.sentence not in spoken_texts(client, since)
        if part == "stt":
            # The turn that was not heard ends once the failure is in and the person has
            # kept quiet for a hesitation's pause, long before Pipecat's last resort
            # (FIRST_BYTE_SECS + 5 s after the person's last sound) would end it.
            unheard_by = finished + FIRST_BYTE_SECS + HESITATION_SECS + 1.0
            await wait_for_new(
                client,
                since,
                lambda m: m.get("type") == "user-stopped-speaking",
                timeout=max(0.1, unheard_by - time.time()),
            )

        logged = await asyncio.to_thread(
            agent.wait_for_log, "backend failed", failures_before + 1, 10
        )
        failure = logged[failures_before]
        assert (failure["part"], failure["backend"], failure["kind"]) == (
            part,
            BACKENDS[part],
            KINDS[fault],
        )
        assert_nothing_from_a_library(client, since)
        assert client.pc.connectionState == "connected"

        await asyncio.to_thread(faults.clear)
        assert faults.injected(part) > requests_before, "the fault was not applied"
        since = len(client.messages)
        await start_turn(client, part, speech, 1)
        await wait_for_normal_reply(client, since)
        if part == "stt":
            heard = messages_since(client, since, "user-transcription")
            assert [m["data"]["text"] for m in heard] == ["Good morning."]
            assert messages_since(client, since, "user-started-speaking")
        if part == "llm" and fault in ("stall", "cut"):
            history = (await asyncio.to_thread(chat_requests, quick_ollama))[-1]["messages"]
            cut = [m["content"] for m in history if m["role"] == "assistant"][-1]
            assert cut.endswith(CUT_MARK), f"the broken-off reply is kept as if whole: {cut!r}"
            assert REPLY.startswith(cut.removesuffix(CUT_MARK)), cut

        assert len(failures_logged(agent)) == failures_before + 1, "logged more than once"
        assert len(errors_logged(agent)) == errors_before, errors_logged(agent)[errors_before:]
        survived = True
    finally:
        await asyncio.to_thread(faults.clear)
        tally.rows[(part, fault)] = (faults.injected(part) - requests_before, survived)


@pytest.mark.parametrize("part", ["stt", "llm", "tts"])
@pytest.mark.asyncio(loop_scope="module")
async def test_a_slow_backend_within_its_deadline_is_waited_for(
    client: VoiceClient,
    agent: AgentProcess,
    faults: Faults,
    tally: Tally,
    speech: dict[str, np.ndarray],
    part: str,
) -> None:
    failures_before = len(failures_logged(agent))
    requests_before = faults.injected(part)
    survived = False
    try:
        await asyncio.to_thread(faults.inject, part, "slow", delay_secs=SLOW_SECS)
        since = len(client.messages)
        await start_turn(client, part, speech, 1)
        await wait_for_normal_reply(client, since)
        assert faults.injected(part) > requests_before, "the slow fault was not applied"
        assert len(failures_logged(agent)) == failures_before, "a slow backend was cut off"
        survived = True
    finally:
        await asyncio.to_thread(faults.clear)
        tally.rows[(part, "slow")] = (faults.injected(part) - requests_before, survived)
