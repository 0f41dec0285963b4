"""Conversations in several worker processes behind one port: each request reaches the
worker that holds its conversation, a worker that dies takes only its own conversations
with it (their slots are freed, it is started again), and the supervisor refuses new
conversations in words when the workers cannot keep up. Real processes, real WebRTC."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from agent.http_json import RETRY_LATER_SECS
from tests.bench.latency import process_tree, read_stat
from tests.helpers import (
    TRUSTED,
    AgentProcess,
    agent_env,
    run_agent,
    wait_until,
)
from tests.helpers import active_sessions as sync_active_sessions
from tests.helpers import wait_for_active as sync_wait_for_active
from tests.webrtc_client import VoiceClient, browser_like_offer, loopback_only

pytestmark = pytest.mark.voice

END_OF_CANDIDATES = {"candidate": "", "sdp_mid": "0"}


@pytest.fixture(autouse=True)
def _loopback() -> None:
    loopback_only()


def health(agent: AgentProcess) -> dict:
    return httpx.get(f"{agent.base_url}/health", timeout=5, verify=TRUSTED).json()


def worker_of(agent: AgentProcess, pc_id: str) -> int:
    """The worker that logged starting the session."""
    started = agent.wait_for_log("session started")
    owners = [e["worker"] for e in started if e["session"] == pc_id]
    assert len(owners) == 1, (pc_id, started)
    return owners[0]


def run_spreading_agent(speaches_url: str, ollama_url: str, **settings: str):
    """An agent whose new conversations go to the least-loaded worker, every worker ready.

    /health is 200 once one worker is ready, and a worker whose loop runs late (one still
    loading, on a busy machine) is passed over: either would put two conversations on one
    worker, so the tests that need them apart wait for both and turn the lag check off."""
    env = agent_env(speaches_url, ollama_url, WORKERS="2", BUSY_LOOP_LAG_MS="0", **settings)
    return run_agent(env)


def wait_for_every_worker(agent: AgentProcess) -> None:
    wait_until(
        lambda: all(w["ready"] for w in health(agent)["workers"]), 30, "every worker to be ready"
    )


def pid_of(agent: AgentProcess, worker: int) -> int:
    return next(w["pid"] for w in health(agent)["workers"] if w["worker"] == worker)


def wait_for_census(agent: AgentProcess, **counts: int) -> None:
    """Wait until every worker's census (in /health) has these counts."""

    def agreed() -> bool:
        return all(
            all(w["census"].get(key) == value for key, value in counts.items())
            for w in health(agent)["workers"]
        )

    wait_until(agreed, 10, f"every worker's census to count {counts}")


async def wait_for_active(agent: AgentProcess, count: int, timeout: float = 20.0) -> None:
    await asyncio.to_thread(sync_wait_for_active, agent.base_url, count, timeout)


async def answered(client: VoiceClient, words: str) -> None:
    """The conversation is alive: typed words come back as the bot's reply, spoken."""
    since = time.time()
    client.send_text(words, run_immediately=True)
    await client.wait_for_message(
        lambda m: m.get("type") == "bot-transcription" and words in m["data"]["text"], timeout=30
    )
    await client.wait_for_sound(after=since, timeout=30)


async def test_new_conversations_are_spread_and_each_request_reaches_its_worker(
    speaches_url: str, ollama_url: str
) -> None:
    with run_spreading_agent(speaches_url, ollama_url, MAX_SESSIONS="4") as agent:
        await asyncio.to_thread(wait_for_every_worker, agent)
        clients = [VoiceClient(agent.base_url) for _ in range(2)]
        try:
            for client in clients:
                await client.connect()
                await client.wait_connected()
            owners = [worker_of(agent, client.pc_id) for client in clients]
            assert sorted(owners) == [1, 2], "the second conversation goes to the idle worker"
            assert [w["sessions"] for w in health(agent)["workers"]] == [1, 1]
            # Each worker's own census (reported each second) agrees.
            await asyncio.to_thread(wait_for_census, agent, sessions=1, peer_connections=1)
            async with httpx.AsyncClient(base_url=agent.base_url, timeout=30) as http:
                for client in clients:
                    # A trickled candidate: only the owner knows the pc_id.
                    patch = {"pc_id": client.pc_id, "candidates": [END_OF_CANDIDATES]}
                    response = await http.patch("/api/offer", json=patch)
                    assert response.status_code == 200, response.text
                    # A renegotiation: answered by the owner, for the same conversation.
                    await client.pc.setLocalDescription(await client.pc.createOffer())
                    offer = {
                        "sdp": client.pc.localDescription.sdp,
                        "type": "offer",
                        "pc_id": client.pc_id,
                    }
                    response = await http.post("/api/offer", json=offer)
                    assert response.status_code == 200, response.text
                    assert response.json()["pc_id"] == client.pc_id
                    await client.pc.setRemoteDescription(
                        RTCSessionDescription(response.json()["sdp"], "answer")
                    )
                unknown = {"pc_id": "nobody", "candidates": [END_OF_CANDIDATES]}
                response = await http.patch("/api/offer", json=unknown)
                assert response.status_code == 404 and response.json()["code"] == "unknown_session"
            assert health(agent)["sessions"]["active"] == 2, "no session for a renegotiation"
            for number, client in enumerate(clients):
                await answered(client, f"are you there number {number}")
        finally:
            for client in clients:
                await client.close()
        await wait_for_active(agent, 0)
        await asyncio.to_thread(wait_for_census, agent, sessions=0, peer_connections=0)


async def test_an_ice_restart_is_routed_by_old_and_new_id_to_the_same_worker(
    speaches_url: str, ollama_url: str
) -> None:
    env = agent_env(speaches_url, ollama_url, WORKERS="2")
    with run_agent(env) as agent:
        bystander, client = VoiceClient(agent.base_url), VoiceClient(agent.base_url)
        phone = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            for each in (bystander, client):
                await each.connect()
                await each.wait_connected()
            owner = worker_of(agent, client.pc_id)
            phone.addTransceiver("audio", direction="sendrecv")
            phone.createDataChannel("chat")
            await phone.setLocalDescription(await phone.createOffer())
            restart = {
                "sdp": phone.localDescription.sdp,
                "type": "offer",
                "pc_id": client.pc_id,
                "restart_pc": True,
            }
            async with httpx.AsyncClient(base_url=agent.base_url, timeout=30) as http:
                response = await http.post("/api/offer", json=restart)
                assert response.status_code == 200, response.text
                new_id = response.json()["pc_id"]
                for pc_id in (client.pc_id, new_id):
                    patch = {"pc_id": pc_id, "candidates": [END_OF_CANDIDATES]}
                    answer = await http.patch("/api/offer", json=patch)
                    assert answer.status_code == 200, answer.text
            answer_sdp = response.json()["sdp"]
            await phone.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
            reconnected = await asyncio.to_thread(agent.wait_for_log, "session reconnected")
            assert [e["worker"] for e in reconnected] == [owner]
            assert health(agent)["sessions"]["active"] == 2
        finally:
            await phone.close()
            for each in (bystander, client):
                await each.close()
        await wait_for_active(agent, 0)


async def test_a_worker_that_dies_frees_its_slots_and_the_others_talk_on(
    speaches_url: str, ollama_url: str
) -> None:
    with run_spreading_agent(speaches_url, ollama_url, MAX_SESSIONS="2") as agent:
        await asyncio.to_thread(wait_for_every_worker, agent)
        doomed, survivor = VoiceClient(agent.base_url), VoiceClient(agent.base_url)
        newcomer = VoiceClient(agent.base_url)
        try:
            for client in (doomed, survivor):
                await client.connect()
                await client.wait_connected()
            worker = worker_of(agent, doomed.pc_id)
            assert worker_of(agent, survivor.pc_id) != worker
            killed = pid_of(agent, worker)
            os.kill(killed, signal.SIGKILL)
            await wait_for_active(agent, 1)
            await answered(survivor, "still here after the crash")
            # The freed slot takes a new conversation, on whichever worker is ready.
            started = time.time()
            await newcomer.connect()
            await newcomer.wait_for_sound(after=started, timeout=30)  # its greeting
            restarted = await asyncio.to_thread(
                wait_until,
                lambda: next(
                    (w for w in health(agent)["workers"] if w["worker"] == worker and w["ready"]),
                    None,
                ),
                30,
                "the worker to be started again",
            )
            assert restarted["pid"] != killed and restarted["restarts"] == 1
            died = agent.log_events("worker stopped unexpectedly")
            assert [(e["worker"], e["ended_sessions"]) for e in died] == [(worker, 1)]
            await answered(survivor, "and still here")
        finally:
            for client in (doomed, survivor, newcomer):
                await client.close()
        await wait_for_active(agent, 0)


async def test_when_every_worker_runs_late_new_conversations_are_told_busy(
    speaches_url: str, ollama_url: str
) -> None:
    # Any event loop wakes a little late: with a threshold of a microsecond, every worker
    # counts as running late, which is what a saturated machine looks like to the agent.
    env = agent_env(speaches_url, ollama_url, BUSY_LOOP_LAG_MS="0.001")
    with run_agent(env) as agent:
        await asyncio.to_thread(
            wait_until,
            lambda: all(w["loop_lag_ms"] > 0.001 for w in health(agent)["workers"]),
            20,
            "every worker's loop lag to be reported",
        )
        offer = {"sdp": await browser_like_offer(), "type": "offer"}
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(f"{agent.base_url}/api/offer", json=offer)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "busy"
        assert response.headers["Retry-After"] == str(RETRY_LATER_SECS)  # "in a minute"
        assert "too busy" in response.json()["error"]
        assert sync_active_sessions(agent.base_url) == 0


def test_no_process_of_the_agent_outlives_a_supervisor_that_is_killed(
    speaches_url: str, ollama_url: str
) -> None:
    env = agent_env(speaches_url, ollama_url, WORKERS="2")
    with run_agent(env) as agent:
        workers = [w["pid"] for w in health(agent)["workers"]]
        # The workers, the fork server they come from, multiprocessing's resource tracker.
        pids = [stat.pid for stat in process_tree(agent.process.pid)][1:]
        assert set(workers) < set(pids), (workers, pids)
        agent.process.kill()  # no goodbye: each worker only sees its pipe to it close
        agent.process.wait()

        def gone() -> bool:
            return all(not os.path.exists(f"/proc/{pid}") or _zombie(pid) for pid in pids)

        wait_until(gone, 15, "every process of the agent to stop")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_share_what_they_loaded_from_one_fork_server(
    speaches_url: str, ollama_url: str
) -> None:
    """Each worker is forked from one process that imported what workers run (Pipecat,
    aiortc, ONNX Runtime...), so most of a worker's memory is pages it shares, not its own
    copy: started as processes of their own, each held over 100 MB of its own."""
    with run_spreading_agent(speaches_url, ollama_url) as agent:
        wait_for_every_worker(agent)
        workers = [w["pid"] for w in health(agent)["workers"]]
        parents = {read_stat(pid).ppid for pid in workers}
        assert len(parents) == 1 and agent.process.pid not in parents, parents
        assert read_stat(parents.pop()).ppid == agent.process.pid
        for pid in workers:
            memory = memory_kb(pid)
            own = memory["Private_Clean"] + memory["Private_Dirty"]
            assert own < memory["Rss"] / 2, memory


def memory_kb(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup's figures, in kB."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        lines = rollup.read().splitlines()[1:]  # the first names the address range
    return {name.rstrip(":"): int(value) for name, value, *_unit in map(str.split, lines)}
