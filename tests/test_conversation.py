"""The conversation a session keeps: order preserved, and requests of the right shape.

Turns are typed (RTVI ``send-text`` on the data channel) so a hundred of them fit in a test;
the path from the user aggregator on (context → LLM → TTS → WebRTC) is the one speech takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    LLM_MODEL,
    TTS_MODEL,
    TTS_VOICE,
    AgentProcess,
    chat_requests,
    clear_standin_requests,
    standin_requests,
    wait_until,
)
from tests.standins.ollama import reply_for
from tests.standins.process import start_standin
from tests.webrtc_client import VoiceClient, loopback_only

pytestmark = pytest.mark.voice

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
utterances = st.lists(words, min_size=1, max_size=5).map(" ".join)


@dataclass
class TypedSession:
    client: VoiceClient
    typed: list[str] = field(default_factory=list)  # every text typed in it, in order

    def type_text(self, text: str, **options: object) -> None:
        self.client.send_text(text, **options)
        self.typed.append(text)


@pytest.fixture(scope="module")
def speaches_url() -> Iterator[str]:
    """Speaches speaking a tone as long as each reply: every turn is typed, and no test here
    listens to what is said (synthesising a hundred replies would only cost time)."""
    with start_standin("tests.standins.speaches", "--installed-all", "--tts-tone") as (_, url):
        yield url


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def session(agent: AgentProcess) -> AsyncIterator[TypedSession]:
    loopback_only()
    client = VoiceClient(agent.base_url)
    await client.connect()
    await client.wait_for_message(lambda m: m.get("type") == "bot-llm-stopped", timeout=30)
    yield TypedSession(client)
    await client.close()


async def wait_for_request_ending_with(ollama_url: str, text: str, after: int) -> dict:
    def request_ending_with_text() -> dict | None:
        for request in chat_requests(ollama_url)[after:]:
            last = request["messages"][-1]
            if last["role"] == "user" and last["content"] == text:
                return request
        return None

    # In a thread: the session's event loop must keep its connection alive meanwhile.
    return await asyncio.to_thread(
        wait_until, request_ending_with_text, 30, f"the LLM to receive {text!r}"
    )


def words_of(text: str) -> list[str]:
    return text.split()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(turns=st.lists(utterances, min_size=1, max_size=3))
@pytest.mark.asyncio(loop_scope="module")
async def test_the_context_keeps_every_turn_in_order(
    session: TypedSession, ollama_url: str, turns: list[str]
) -> None:
    for text in turns:
        before = len(await asyncio.to_thread(chat_requests, ollama_url))
        session.type_text(text, run_immediately=True)
        request = await wait_for_request_ending_with(ollama_url, text, before)

    messages = request["messages"]
    assert messages[0]["role"] == "system"
    assert [m["content"] for m in messages if m["role"] == "user"] == session.typed
    # Each reply in the context is what the LLM said to the messages before it, or the part
    # of it that was spoken before the next turn interrupted it, never anything else.
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            expected = words_of(reply_for(messages[:index]))
            spoken = words_of(message["content"])
            assert spoken == expected[: len(spoken)], (spoken, expected)


@pytest.mark.asyncio(loop_scope="module")
async def test_llm_and_tts_requests_have_the_backends_shapes(
    session: TypedSession, ollama_url: str, speaches_url: str
) -> None:
    await asyncio.to_thread(clear_standin_requests, speaches_url)
    session.type_text("tell me a joke")
    await session.client.wait_for_message(
        lambda m: m.get("type") == "bot-tts-text" and "joke" in m["data"]["text"], timeout=30
    )
    request = (await asyncio.to_thread(chat_requests, ollama_url))[-1]
    assert request["model"] == LLM_MODEL and request["stream"] is True

    speech = await asyncio.to_thread(standin_requests, speaches_url)
    speech = [r for r in speech if r["path"] == "/v1/audio/speech"]
    assert speech, "no text-to-speech request was made"
    for item in speech:
        assert item["content_type"] == "application/json"
        assert item["model"] == TTS_MODEL
        assert item["voice"] == TTS_VOICE  # passed through, not one of OpenAI's
        assert item["response_format"] == "pcm"
        assert item["sample_rate"] == 24000  # the pipeline's rate, never the voice's own
        assert item["input"].strip()
