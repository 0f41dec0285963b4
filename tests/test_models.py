"""Models at start-up: pulled when missing (with progress), and a backend that is not
there yet never stops the agent from serving; it recovers when the backend appears."""

from __future__ import annotations

import asyncio

import httpx

from tests.helpers import (
    LLM_MODEL,
    STT_MODEL,
    TTS_MODEL,
    agent_env,
    free_port,
    ollama_pulls,
    run_agent,
    speaches_downloads,
    standin_requests,
    wait_until,
)
from tests.standins.process import start_standin
from tests.webrtc_client import browser_like_offer


def health(agent) -> httpx.Response:
    return httpx.get(f"{agent.base_url}/health", timeout=5)


def test_a_missing_ollama_model_is_pulled_with_progress_then_warmed() -> None:
    slow_pull = ["--model-size-bytes", "4000000", "--pull-bytes-per-sec", "2000000"]
    with (
        start_standin("tests.standins.speaches", "--installed-all") as (_, speaches),
        start_standin("tests.standins.ollama", "--pullable", LLM_MODEL, *slow_pull) as (
            _,
            ollama,
        ),
        run_agent(agent_env(speaches, ollama), ready=False) as agent,
    ):
        pulling = wait_until(
            lambda: (
                (r := health(agent)).status_code == 503
                and r.json()["backends"]["ollama"]["models"][LLM_MODEL].get("progress", 0) > 0
                and r.json()
            ),
            what="/health to show the pull's progress",
        )
        model = pulling["backends"]["ollama"]["models"][LLM_MODEL]
        assert model["pulling"] is True and 0 < model["progress"] < 1
        assert f"downloading {LLM_MODEL}" in pulling["reason"]

        wait_until(lambda: health(agent).status_code == 200, what="the agent to become ready")
        progress_lines = agent.log_events("downloading model")
        assert progress_lines, "the pull's progress was not logged"
        assert len(progress_lines) < 40, "progress is logged at intervals, not per line"
        tags = httpx.get(f"{ollama}/api/tags").json()["models"]
        assert [entry["name"] for entry in tags] == [LLM_MODEL]
        assert ollama_pulls(ollama) == [LLM_MODEL]
        warm_up = standin_requests(ollama)["generate"][-1]
        assert warm_up["keep_alive"] == -1, "the model was not warmed up"


def test_missing_speaches_models_are_downloaded() -> None:
    with (
        start_standin("tests.standins.speaches", "--installed", STT_MODEL) as (_, speaches),
        start_standin("tests.standins.ollama", "--installed", LLM_MODEL) as (_, ollama),
        run_agent(agent_env(speaches, ollama), ready=True) as agent,
    ):
        models = health(agent).json()["backends"]["speaches"]["models"]
        assert models[TTS_MODEL]["installed"] is True
        installed = {m["id"] for m in httpx.get(f"{speaches}/v1/models").json()["data"]}
        assert installed == {STT_MODEL, TTS_MODEL}
        downloads = speaches_downloads(speaches)
        assert downloads == [f"/v1/models/{TTS_MODEL}"], "only the missing model is downloaded"


def test_speaches_that_cannot_download_is_failing_not_unreachable_and_said_once() -> None:
    with (
        start_standin("tests.standins.speaches", "--offline") as (_, speaches),
        start_standin("tests.standins.ollama", "--installed", LLM_MODEL) as (_, ollama),
        run_agent(agent_env(speaches, ollama), ready=False) as agent,
    ):
        wait_until(lambda: len(speaches_downloads(speaches)) >= 4, what="several download tries")
        body = health(agent).json()
        told = [
            line
            for line in agent.log_events("backend not ready, retrying")
            if line["backend"] == "speaches"
        ]
    state = body["backends"]["speaches"]
    assert state["reachable"] is True, "Speaches answered: it is not unreachable"
    wanted = f"Speaches is up but could not download {STT_MODEL} (HTTP 500)"
    assert wanted in state["models"][STT_MODEL]["error"]
    assert wanted in body["reason"] and "unreachable" not in body["reason"]
    assert len(told) == 1, f"the same problem was logged {len(told)} times"


def test_unreachable_backends_at_start_then_recovery() -> None:
    speaches_port, ollama_port = free_port(), free_port()
    speaches = f"http://127.0.0.1:{speaches_port}"
    ollama = f"http://127.0.0.1:{ollama_port}"
    with run_agent(agent_env(speaches, ollama), ready=False) as agent:
        response = health(agent)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded"
        assert f"ollama: unreachable at {ollama}" in body["reason"]
        assert f"speaches: unreachable at {speaches}" in body["reason"]
        page = httpx.get(f"{agent.base_url}/")
        assert page.status_code == 200 and "<html" in page.text.lower()

        offer = httpx.post(
            f"{agent.base_url}/api/offer",
            json={"sdp": asyncio.run(browser_like_offer()), "type": "offer"},
        )
        assert offer.status_code == 503
        assert offer.json()["code"] == "unavailable"
        assert "not ready yet" in offer.json()["error"]

        with (
            start_standin(
                "tests.standins.speaches", "--installed-all", "--port", str(speaches_port)
            ),
            start_standin(
                "tests.standins.ollama", "--installed", LLM_MODEL, "--port", str(ollama_port)
            ),
        ):
            wait_until(lambda: health(agent).status_code == 200, what="recovery")
            assert health(agent).json()["status"] == "ok"
        # The backends went away again: the agent notices and says so.
        wait_until(
            lambda: health(agent).status_code == 503, timeout=30, what="the loss to be noticed"
        )
        assert agent.process.poll() is None, "the agent must keep running"
