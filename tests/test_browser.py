"""The page in a real browser: headless Chromium with a fake microphone talks to the agent.

Debian's Chromium (no browser download) is driven by Playwright against the agent process
and the stand-ins. Its fake microphone loops a WAV file: a pause long enough for the
greeting, one spoken sentence, then a pause long enough for the reply. Everything is
checked through what the page shows, plus the agent's /health and log, and the page's one
read-only test hook, ``window.voiceAgent`` (the latest call's state; see app.js).
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, Route, expect

from tests.audio import pad_with_silence, synthesize, write_wav
from tests.browser import CHROMIUM, DESKTOP, chromium, explained, inbound_audio_script
from tests.helpers import (
    LLM_MODEL,
    STT_MODEL,
    AgentProcess,
    active_sessions,
    agent_env,
    free_port,
    run_agent,
    wait_for_active,
    wait_until,
)
from tests.standins.process import start_standin

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

SENTENCE = "What is the weather like in Paris today"
MIC_RATE = 48000
# The fake microphone starts playing when the page asks for it and loops. The pause before
# the sentence lets the greeting (≈ 3.6 s of speech, after connecting) finish, so the user
# does not talk over it (that would cut it short); the pause after it outlasts the reply.
SILENCE_BEFORE_SECS = 7.5
SILENCE_AFTER_SECS = 6.0

PHONE = {"width": 390, "height": 844}
WAIT_MS = 60_000


INBOUND_AUDIO = inbound_audio_script("window.voiceAgent.pc")


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    speech = synthesize(SENTENCE, MIC_RATE)
    samples = pad_with_silence(speech, MIC_RATE, SILENCE_BEFORE_SECS, SILENCE_AFTER_SECS)
    return write_wav(
        tmp_path_factory.mktemp("microphone") / "speech-48k-mono.wav", samples, MIC_RATE
    )


def open_page(context: BrowserContext, base_url: str, new: bool = False) -> Page:
    page = context.pages[0] if context.pages and not new else context.new_page()
    # Shown by pytest only when a test fails.
    page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))
    page.goto(base_url)
    expect(page.locator("#status")).to_have_text("Not connected")
    return page


def test_a_conversation_through_the_page(
    agent: AgentProcess, microphone_wav: Path, playwright: Playwright, tmp_path: Path, artifacts
) -> None:
    turns_before = len(agent.log_events("turn"))
    ended_before = len(agent.log_events("session ended"))
    with ExitStack() as stack:
        context = stack.enter_context(chromium(playwright, tmp_path / "profile", microphone_wav))
        page = open_page(context, agent.base_url)
        stack.enter_context(explained(page, artifacts, "browser-conversation"))

        page.click("#start")
        page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
        expect(page.locator("#status")).to_have_text("Connected")
        expect(page.locator("#start")).to_have_text("Stop")
        expect(page.locator("#access")).to_be_hidden()  # no AGENT_TOKEN: no token asked

        # The greeting, in words and in sound (played by #remote-audio, the page's sink).
        entries = page.locator("#transcript .entry")
        expect(entries.first).to_have_class(re.compile(r"\bbot\b"), timeout=WAIT_MS)
        expect(entries.first.locator(".text")).to_contain_text("Hello", timeout=WAIT_MS)
        heard = page.evaluate(INBOUND_AUDIO, WAIT_MS)
        assert heard, "no inbound audio energy in getStats()"
        assert page.eval_on_selector("#remote-audio", "audio => !!audio.srcObject && !audio.paused")
        print(f"greeting audio: {heard}")

        # What the fake microphone said, and the reply to it with its latency.
        said = page.locator("#transcript .entry.user .text").first
        expect(said).to_contain_text(re.compile("weather", re.I), timeout=WAIT_MS)
        expect(said).to_contain_text(re.compile("paris", re.I))
        reply = page.locator("#transcript .entry.user ~ .entry.bot").first
        expect(reply.locator(".text")).to_contain_text("You said", timeout=WAIT_MS)
        expect(reply.locator(".text")).to_contain_text("Paris")
        expect(reply.locator(".latency")).to_be_visible(timeout=WAIT_MS)
        expect(reply).to_have_attribute("data-latency-source", "server", timeout=WAIT_MS)
        shown_ms = int(reply.get_attribute("data-latency-ms") or "")
        turn = agent.wait_for_log("turn", count=turns_before + 1)[turns_before]
        print(
            f"end of speech → first reply audio, shown: {shown_ms} ms "
            f"({reply.locator('.latency').inner_text()!r}); agent log: {turn['latency_ms']} ms "
            f"{turn['parts_ms']}"
        )
        assert shown_ms == turn["latency_ms"]
        figures = {"shown_ms": shown_ms, "parts_ms": turn["parts_ms"]}
        (artifacts / "browser-latency.json").write_text(json.dumps(figures, indent=2))

        # Mid-conversation, once the reply has been spoken.
        expect(reply.locator(".pending")).to_have_count(0, timeout=WAIT_MS)
        page.screenshot(path=artifacts / "browser-conversation.png")
        page.set_viewport_size(PHONE)
        page.screenshot(path=artifacts / "browser-conversation-phone.png")
        page.set_viewport_size(DESKTOP)

        # Stop: the page says so, and the agent lets the session go.
        page.click("#start")
        expect(page.locator("#status")).to_have_text("Disconnected")
        expect(page.locator("#start")).to_have_text("Start")
        assert page.evaluate("window.voiceAgent.state") == "disconnected"
        ended = agent.wait_for_log("session ended", count=ended_before + 1)
        print(f"session ended: {ended[-1]['reason']}, {ended[-1]['turns']} turn(s)")
        wait_for_active(agent.base_url, 0)


def test_a_refused_microphone_is_explained(
    agent: AgentProcess, playwright: Playwright, tmp_path: Path, artifacts
) -> None:
    started_before = len(agent.log_events("session started"))
    with chromium(playwright, tmp_path / "profile", microphone=None) as context:
        page = open_page(context, agent.base_url)
        api_calls: list[str] = []
        page.on(
            "request",
            lambda request: api_calls.append(request.url) if "/api/" in request.url else None,
        )

        page.click("#start")
        error = page.locator("#error")
        expect(error).to_be_visible(timeout=WAIT_MS)
        expect(error).to_contain_text(re.compile("microphone", re.I))
        expect(page.locator("#status")).to_have_text(re.compile("microphone", re.I))
        expect(page.locator("#start")).to_have_text("Start")
        assert page.evaluate("window.voiceAgent.state") == "failed"
        page.screenshot(path=artifacts / "browser-microphone-refused.png")
        print(f"shown: {error.inner_text()!r}")

    assert api_calls == [], "the page must not ask for a session without a microphone"
    assert active_sessions(agent.base_url) == 0
    assert len(agent.log_events("session started")) == started_before


def test_a_full_house_is_told_it_is_busy(
    speaches_url: str,
    ollama_url: str,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
    artifacts,
) -> None:
    env = agent_env(speaches_url, ollama_url, MAX_SESSIONS="1")
    with (
        run_agent(env) as agent,
        chromium(playwright, tmp_path / "profile", microphone_wav) as context,
    ):
        first = open_page(context, agent.base_url)
        first.click("#start")
        first.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)

        # A second tab while the only seat is taken: told so in words, and nothing held.
        second = open_page(context, agent.base_url, new=True)
        second.click("#start")
        error = second.locator("#error")
        expect(error).to_contain_text("busy with another conversation", timeout=WAIT_MS)
        expect(second.locator("#start")).to_have_text("Start")
        assert second.evaluate("window.voiceAgent.state") == "failed"
        second.screenshot(path=artifacts / "browser-busy.png")
        print(f"shown: {error.inner_text()!r}")
        assert active_sessions(agent.base_url) == 1
        assert len(agent.log_events("session started")) == 1

        # The first tab is unaffected, and Stop frees the seat.
        assert first.evaluate("window.voiceAgent.state") == "connected"
        first.click("#start")
        expect(first.locator("#status")).to_have_text("Disconnected")
        agent.wait_for_log("session ended")
        wait_for_active(agent.base_url, 0)


def test_the_page_over_https_with_the_self_signed_certificate(
    speaches_url: str,
    ollama_url: str,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
    artifacts,
) -> None:
    env = agent_env(
        speaches_url,
        ollama_url,
        TLS="on",
        TLS_DIR=str(tmp_path / "tls"),
        AGENT_HTTP_PORT=str(free_port()),
    )
    with (
        run_agent(env) as agent,
        chromium(playwright, tmp_path / "profile", microphone_wav, self_signed_ok=True) as context,
    ):
        assert agent.base_url.startswith("https://")
        page = open_page(context, agent.base_url)
        with explained(page, artifacts, "browser-https"):
            assert page.evaluate("location.protocol") == "https:"
            assert page.evaluate("window.isSecureContext && !!navigator.mediaDevices")
            page.click("#start")
            page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
            greeting = page.locator("#transcript .entry.bot .text").first
            expect(greeting).to_contain_text("Hello", timeout=WAIT_MS)
            assert page.evaluate(INBOUND_AUDIO, WAIT_MS), "no sound over the HTTPS page"
            page.click("#start")
            expect(page.locator("#status")).to_have_text("Disconnected")
        wait_for_active(agent.local_url, 0)


def test_the_page_uses_the_configured_ice_servers(
    speaches_url: str,
    ollama_url: str,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
    artifacts,
) -> None:
    # Nothing listens on these ports: only the browser's configuration is checked here.
    stun = f"stun:127.0.0.1:{free_port()}"
    turn = f"turn:127.0.0.1:{free_port()}"
    env = agent_env(
        speaches_url,
        ollama_url,
        ICE_SERVERS=f"{stun},{turn}",
        TURN_USERNAME="page-test",
        TURN_PASSWORD="page-test-password",
    )
    with (
        run_agent(env) as agent,
        chromium(playwright, tmp_path / "profile", microphone_wav) as context,
    ):
        page = open_page(context, agent.base_url)
        with explained(page, artifacts, "browser-ice-servers"):
            page.click("#start")
            page.wait_for_function("window.voiceAgent.pc !== null", timeout=WAIT_MS)
            servers = page.evaluate(
                """() => window.voiceAgent.pc.getConfiguration().iceServers.map((server) => ({
                  urls: [].concat(server.urls),
                  username: server.username || null,
                  credential: server.credential || null,
                }))"""
            )
            print(f"the page's ICE servers: {servers}")
            assert servers == [
                {"urls": [stun], "username": None, "credential": None},
                {"urls": [turn], "username": "page-test", "credential": "page-test-password"},
            ]
            page.click("#start")
            expect(page.locator("#status")).to_have_text("Disconnected")


def backends(agent: AgentProcess) -> dict:
    return httpx.get(f"{agent.local_url}/health", timeout=5).json()["backends"]


def test_the_page_names_the_backend_that_cannot_be_reached(
    ollama_url: str, playwright: Playwright, tmp_path: Path, artifacts
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # no Speaches listens here
    with run_agent(agent_env(nowhere, ollama_url), ready=False) as agent:
        wait_until(
            lambda: (
                backends(agent)["speaches"]["reachable"] is False
                and backends(agent)["ollama"]["ready"]
            ),
            what="the agent to find Speaches down and Ollama ready",
        )
        with chromium(playwright, tmp_path / "profile", microphone=None) as context:
            page = open_page(context, agent.base_url)
            notice = page.locator("#health")
            expect(notice).to_be_visible(timeout=WAIT_MS)
            expect(notice).to_contain_text("The speech engine (Speaches) cannot be reached")
            expect(notice).to_contain_text(nowhere)
            expect(notice).not_to_contain_text("language model")
            page.screenshot(path=artifacts / "browser-speech-engine-down.png")
            print(f"shown: {notice.inner_text()!r}")


def test_the_page_tells_a_failing_download_apart_from_a_backend_that_is_down(
    ollama_url: str, playwright: Playwright, tmp_path: Path, artifacts
) -> None:
    with (
        start_standin("tests.standins.speaches", "--offline") as (_, offline),
        run_agent(agent_env(offline, ollama_url), ready=False) as agent,
    ):
        wait_until(
            lambda: backends(agent)["speaches"]["models"][STT_MODEL].get("error"),
            what="the agent to find that Speaches cannot download",
        )
        with chromium(playwright, tmp_path / "profile", microphone=None) as context:
            page = open_page(context, agent.base_url)
            notice = page.locator("#health")
            expect(notice).to_be_visible(timeout=WAIT_MS)
            expect(notice).to_contain_text(
                f"Speaches is up but could not download {STT_MODEL} (HTTP 500): the first "
                "download of a model needs internet access to the model hub"
            )
            expect(notice).not_to_contain_text("cannot be reached")
            page.screenshot(path=artifacts / "browser-speech-download-failing.png")


def test_the_page_says_which_model_is_being_downloaded(
    speaches_url: str, playwright: Playwright, tmp_path: Path, artifacts
) -> None:
    # An Ollama without the model: the agent pulls it, slowly enough to be seen doing so.
    slow_pull = ("--model-size-bytes", "400000000", "--pull-bytes-per-sec", "2000000")
    with (
        start_standin("tests.standins.ollama", *slow_pull) as (_, ollama_url),
        run_agent(agent_env(speaches_url, ollama_url), ready=False) as agent,
    ):
        wait_until(
            lambda: (
                backends(agent)["ollama"]["models"][LLM_MODEL].get("progress", 0) > 0
                and backends(agent)["speaches"]["ready"]
            ),
            what="the agent to be pulling the language model, with Speaches ready",
        )
        with chromium(playwright, tmp_path / "profile", microphone=None) as context:
            page = open_page(context, agent.base_url)
            notice = page.locator("#health")
            expect(notice).to_be_visible(timeout=WAIT_MS)
            expect(notice).to_contain_text(
                re.compile(
                    rf"The language model {re.escape(LLM_MODEL)} is being downloaded \(\d+ %\)"
                )
            )
            expect(notice).not_to_contain_text("speech")
            print(f"shown: {notice.inner_text()!r}")


def test_stop_while_the_offer_is_answered_frees_the_seat_at_once(
    speaches_url: str,
    ollama_url: str,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
    artifacts,
) -> None:
    """Stop pressed after the agent took the offer but before the page read the answer: the
    page finishes the handshake quietly and closes, so the seat is free at once, not after
    the agent's connect timeout (made long here so the two cannot be confused)."""
    env = agent_env(speaches_url, ollama_url, WEBRTC_CONNECT_TIMEOUT_SECS="120")
    with (
        run_agent(env) as agent,
        chromium(playwright, tmp_path / "profile", microphone_wav) as context,
    ):
        page = open_page(context, agent.base_url)

        def stop_before_the_answer_arrives(route: Route) -> None:
            if route.request.method != "POST":
                route.continue_()
                return
            answer = route.fetch()  # the agent now holds a seat for this page
            page.click("#start")
            route.fulfill(response=answer)

        page.route("**/api/offer", stop_before_the_answer_arrives)
        with explained(page, artifacts, "browser-stop-while-connecting"):
            page.click("#start")
            expect(page.locator("#status")).to_have_text("Disconnected", timeout=WAIT_MS)
            assert page.evaluate("window.voiceAgent.state") == "disconnected"
            assert len(agent.wait_for_log("session started")) == 1
            ended = agent.wait_for_log("session ended", timeout=15)
            print(f"session ended: {ended[-1]['reason']}")
            wait_for_active(agent.base_url, 0, timeout=15)
