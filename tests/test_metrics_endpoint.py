"""`/metrics` tells what happened: a real agent with two workers, a spoken conversation
over WebRTC, a visitor turned away, a worker that dies; then the Prometheus text, parsed."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.audio import pad_with_silence, synthesize
from tests.helpers import AgentProcess, agent_env, run_agent, wait_until
from tests.webrtc_client import SAMPLE_RATE, VoiceClient, loopback_only

pytestmark = pytest.mark.voice


def scrape(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    response = httpx.get(f"{agent.base_url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_for_metric(agent: AgentProcess, name: str, want: float, **labels: str) -> dict:
    def reached():
        samples = scrape(agent)
        return samples if value(samples, name, **labels) == want else None

    return await asyncio.to_thread(wait_until, reached, 20, f"{name}{labels} == {want}")


async def test_metrics_count_a_conversation_its_turn_a_refusal_and_a_lost_worker(
    speaches_url: str, ollama_url: str
) -> None:
    loopback_only()
    speech = await asyncio.to_thread(synthesize, "Please turn on the kitchen lights", SAMPLE_RATE)
    env = agent_env(speaches_url, ollama_url, WORKERS="2", MAX_SESSIONS="1")
    with run_agent(env) as agent:
        before = await asyncio.to_thread(scrape, agent)
        assert value(before, "voice_agent_sessions_active") == 0
        assert value(before, "voice_agent_turns_total") == 0
        client = VoiceClient(agent.base_url)
        try:
            await client.connect()
            await client.wait_for_spoken_reply(since=0)  # the greeting: not a turn
            since = len(client.messages)
            await client.microphone.say(pad_with_silence(speech, SAMPLE_RATE, 0.3, 0.0))
            await client.wait_for_spoken_reply(since)
            during = await wait_for_metric(agent, "voice_agent_turns_total", 1)
            assert value(during, "voice_agent_sessions_active") == 1
            assert value(during, "voice_agent_sessions_started_total") == 1
            assert value(during, "voice_agent_turn_latency_seconds_count") == 1
            assert value(during, "voice_agent_turn_latency_seconds_sum") > 0
            transcribed = value(
                during, "voice_agent_turn_stage_seconds_count", stage="transcription"
            )
            assert transcribed == 1
            # A second visitor while the one slot is taken.
            async with httpx.AsyncClient(timeout=30) as http:
                offer = {"sdp": client.pc.localDescription.sdp, "type": "offer"}
                refused = await http.post(f"{agent.base_url}/api/offer", json=offer)
            assert refused.json()["code"] == "full"
            samples = await asyncio.to_thread(scrape, agent)
            full = value(samples, "voice_agent_sessions_refused_total", reason="full")
            assert full == 1
        finally:
            await client.close()
        after = await wait_for_metric(agent, "voice_agent_sessions_ended_total", 1, reason="hangup")
        assert value(after, "voice_agent_sessions_active") == 0
        for worker in ("1", "2"):
            assert ("voice_agent_event_loop_lag_seconds", (("worker", worker),)) in after
            assert value(after, "voice_agent_worker_cpu_seconds_total", worker=worker) > 0
        errors = [v for (name, _), v in after.items() if name == "voice_agent_backend_errors_total"]
        assert errors and sum(errors) == 0, "a healthy conversation has no backend errors"

        # A worker that dies with a conversation: counted as lost, no longer active.
        survivor = VoiceClient(agent.base_url)
        try:
            await survivor.connect()
            await survivor.wait_connected()
            owner = agent.wait_for_log("session started", count=2)[-1]["worker"]
            async with httpx.AsyncClient(timeout=5) as http:
                health = (await http.get(f"{agent.base_url}/health")).json()
            pid = next(w["pid"] for w in health["workers"] if w["worker"] == owner)
            os.kill(pid, signal.SIGKILL)
            lost = await wait_for_metric(
                agent, "voice_agent_sessions_ended_total", 1, reason="worker_lost"
            )
            assert value(lost, "voice_agent_sessions_active") == 0
            assert value(lost, "voice_agent_sessions_started_total") == 2, "counters outlive it"
            assert value(lost, "voice_agent_turns_total") == 1
        finally:
            await survivor.close()
