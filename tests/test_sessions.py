"""Sessions over real WebRTC: each offer gets its own conversation, a greeting, and is
released however it ends. The agent is a real process; the client is aiortc on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.http_json import RETRY_SOON_SECS
from tests.helpers import LLM_MODEL, AgentProcess, agent_env, chat_requests, run_agent
from tests.helpers import active_sessions as sync_active_sessions
from tests.helpers import wait_for_active as sync_wait_for_active
from tests.standins.process import start_standin
from tests.webrtc_client import VoiceClient, loopback_only

pytestmark = pytest.mark.voice

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def is_type(kind: str):
    return lambda message: message.get("type") == kind


# In a thread: the clients' event loop must keep their connections alive meanwhile.
async def active_sessions(base_url: str) -> int:
    return await asyncio.to_thread(sync_active_sessions, base_url)


async def wait_for_active(base_url: str, count: int, timeout: float = 20.0) -> None:
    await asyncio.to_thread(sync_wait_for_active, base_url, count, timeout)


async def chat_log(ollama_url: str) -> list[dict]:
    return await asyncio.to_thread(chat_requests, ollama_url)


@pytest.fixture(autouse=True)
def _loopback() -> None:
    loopback_only()


@pytest.fixture(scope="module")
def seen_pc_ids() -> set[str]:
    """Every session id the module's agent has handed out so far."""
    return set()


@pytest.fixture(scope="module")
def brief_ollama() -> Iterator[str]:
    """An Ollama whose greeting is two words: a hundred greetings, many heard to the end."""
    with start_standin(
        "tests.standins.ollama", "--installed", LLM_MODEL, "--reply", "Hello there."
    ) as (_, url):
        yield url


@pytest.fixture(scope="module")
def brief_agent(speaches_url: str, brief_ollama: str) -> Iterator[AgentProcess]:
    with run_agent(agent_env(speaches_url, brief_ollama)) as running:
        yield running


@PROPERTY
@given(
    data_channel=st.booleans(),
    video=st.sampled_from([None, "recvonly", "sendrecv", "inactive"]),
    hang_up=st.sampled_from(["at-once", "mid-greeting", "after-greeting", "channel-first"]),
    linger=st.floats(0, 0.3),
)
async def test_any_valid_offer_gets_a_session_a_greeting_and_is_released(
    brief_agent: AgentProcess,
    brief_ollama: str,
    seen_pc_ids: set[str],
    data_channel: bool,
    video: str | None,
    hang_up: str,
    linger: float,
) -> None:
    # From a clean slate even after an example that failed (its session ends a moment
    # after its client closed), so Hypothesis shrinks the failure it found, not its wake.
    await wait_for_active(brief_agent.base_url, 0)
    requests_before = len(await chat_log(brief_ollama))
    client = VoiceClient(brief_agent.base_url, data_channel=data_channel, video=video)
    connected_at = time.time()
    try:
        answer = await client.connect()
        assert answer["type"] == "answer"
        assert "m=audio" in answer["sdp"]
        assert answer["pc_id"] not in seen_pc_ids
        seen_pc_ids.add(answer["pc_id"])
        assert await active_sessions(brief_agent.base_url) == 1
        await client.wait_connected()
        if hang_up != "at-once":
            await client.wait_for_sound(after=connected_at, timeout=30)  # the greeting
        if hang_up == "after-greeting" and data_channel:
            await client.wait_for_message(is_type("bot-stopped-speaking"))
        await asyncio.sleep(linger)  # hang up at a varying moment, not a wait for anything
        if hang_up == "channel-first" and client.channel:
            client.channel.close()
    finally:
        await client.close()
    await wait_for_active(brief_agent.base_url, 0)
    if hang_up != "at-once":
        greeting_requests = (await chat_log(brief_ollama))[requests_before:]
        assert len(greeting_requests) == 1
        roles = [message["role"] for message in greeting_requests[0]["messages"]]
        assert roles == ["system"], "a new session must start from an empty conversation"


async def test_sessions_at_the_same_time_do_not_share_a_conversation(
    agent: AgentProcess, ollama_url: str
) -> None:
    clients = [VoiceClient(agent.base_url) for _ in range(2)]
    try:
        for client in clients:
            await client.connect()
        for client in clients:
            await client.wait_for_message(is_type("bot-stopped-speaking"), timeout=30)
        for index, client in enumerate(clients):
            client.send_text(f"my favourite number is {index + 7}", run_immediately=True)
        replies = [
            await client.wait_for_message(
                lambda m: m.get("type") == "bot-transcription" and "said" in m["data"]["text"],
                timeout=30,
            )
            for client in clients
        ]
    finally:
        for client in clients:
            await client.close()
    for index, reply in enumerate(replies):
        text = reply["data"]["text"]
        assert f"number is {index + 7}" in text
        assert "Before that" not in text, "the other session's words leaked in"
    await wait_for_active(agent.base_url, 0)


async def test_a_browser_that_never_connects_is_let_go(speaches_url: str, ollama_url: str):
    env = agent_env(speaches_url, ollama_url, WEBRTC_CONNECT_TIMEOUT_SECS="2")
    with run_agent(env) as agent:
        client = VoiceClient(agent.base_url)
        await client.connect()
        await client.pc.close()  # before ICE is up: the agent hears nothing more from it
        await wait_for_active(agent.base_url, 0, timeout=15)
        ended = await asyncio.to_thread(agent.wait_for_log, "session ended")
        assert ended[-1]["reason"] == "browser did not connect within 2s"


async def test_a_full_house_is_told_in_words_and_frees_up(speaches_url: str, ollama_url: str):
    with run_agent(agent_env(speaches_url, ollama_url, MAX_SESSIONS="2")) as agent:
        clients = [VoiceClient(agent.base_url) for _ in range(2)]
        for client in clients:
            await client.connect()
            await client.wait_connected()
        # A third visitor's offer (any well-formed one: the limit is checked first).
        offer = {"sdp": clients[0].pc.localDescription.sdp, "type": "offer"}
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{agent.base_url}/api/offer", json=offer)
        assert response.status_code == 503
        assert response.json()["code"] == "full"
        assert "busy with 2 other conversations" in response.json()["error"]
        assert response.headers["Retry-After"] == str(RETRY_SOON_SECS)  # "in a moment"
        for client in clients:
            await client.close()
        await wait_for_active(agent.base_url, 0)
        late = VoiceClient(agent.base_url)
        try:
            assert (await late.connect())["type"] == "answer"
            await late.wait_for_sound(after=time.time() - 1)  # its greeting
        finally:
            await late.close()
        await wait_for_active(agent.base_url, 0)


async def test_a_session_can_be_renegotiated_by_its_pc_id(agent: AgentProcess) -> None:
    client = VoiceClient(agent.base_url)
    try:
        first = await client.connect()
        await client.wait_connected()
        await client.wait_for_sound(after=time.time() - 1)  # the greeting
        await client.pc.setLocalDescription(await client.pc.createOffer())
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{agent.base_url}/api/offer",
                json={
                    "sdp": client.pc.localDescription.sdp,
                    "type": "offer",
                    "pc_id": first["pc_id"],
                },
            )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["pc_id"] == first["pc_id"] and answer["type"] == "answer"
        await client.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert await active_sessions(agent.base_url) == 1, "no second session for a renegotiation"
        client.send_text("are you still there", run_immediately=True)
        await client.wait_for_message(
            lambda m: m.get("type") == "bot-transcription" and "still there" in m["data"]["text"],
            timeout=30,
        )
    finally:
        await client.close()
    await wait_for_active(agent.base_url, 0)


async def test_an_ice_restart_keeps_the_session_under_its_new_id_once(agent: AgentProcess) -> None:
    """A restart offer (a new peer connection, `restart_pc`) moves the session to the
    answer's pc_id; either id is accepted for candidates; the same offer sent twice (a
    retry, or a copy a stalled network delivered late) restarts only once."""
    loopback_only()
    client = VoiceClient(agent.base_url)
    phone = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # the client after a restart
    started_before = len(agent.log_events("session started"))
    try:
        first = await client.connect()
        await client.wait_connected()
        phone.addTransceiver("audio", direction="sendrecv")
        phone.createDataChannel("chat")
        await phone.setLocalDescription(await phone.createOffer())
        restart = {
            "sdp": phone.localDescription.sdp,
            "type": "offer",
            "pc_id": first["pc_id"],
            "restart_pc": True,
        }
        async with httpx.AsyncClient(base_url=agent.base_url, timeout=30) as http:
            answers = [(await http.post("/api/offer", json=restart)) for _ in range(2)]
            assert [a.status_code for a in answers] == [200, 200], answers[-1].text
            new_id = answers[0].json()["pc_id"]
            assert new_id != first["pc_id"], "a restart is a new peer connection"
            assert answers[1].json()["pc_id"] == new_id, "the same offer again: the same answer"
            for pc_id in (first["pc_id"], new_id):
                patch = {"pc_id": pc_id, "candidates": [{"candidate": "", "sdp_mid": "0"}]}
                response = await http.patch("/api/offer", json=patch)
                assert response.status_code == 200, response.text
        await phone.setRemoteDescription(RTCSessionDescription(answers[0].json()["sdp"], "answer"))
        await asyncio.to_thread(agent.wait_for_log, "session reconnected")
        assert await active_sessions(agent.base_url) == 1
        moved = agent.wait_for_log("session reconnecting")
        assert [(e["former"], e["session"]) for e in moved] == [(first["pc_id"], new_id)]
        assert len(agent.log_events("session started")) == started_before + 1
    finally:
        await phone.close()
        await client.close()
    await wait_for_active(agent.base_url, 0)
