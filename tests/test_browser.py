"""The page in a real browser: headless Chromium with a fake microphone talks to the agent.

Debian's Chromium (no browser download) is driven by Playwright against the agent process
and the stand-ins. Its fake microphone loops a WAV file: a pause long enough for the
greeting, one spoken sentence, then a pause long enough for the reply. Everything is
checked through what the page shows, plus the agent's /health and log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright

from tests.audio import pad_with_silence, synthesize, write_wav
from tests.conftest import (
    AgentProcess,
    active_sessions,
    agent_env,
    free_port,
    run_agent,
    wait_for_active,
)

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)

SENTENCE = "What is the weather like in Paris today"
MIC_RATE = 48000
# The fake microphone starts playing when the page asks for it and loops. The pause before
# the sentence lets the greeting (≈ 3.6 s of speech, after connecting) finish, so the user
# does not talk over it (that would cut it short); the pause after it outlasts the reply.
SILENCE_BEFORE_SECS = 7.5
SILENCE_AFTER_SECS = 6.0

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 60_000

# Chromium as TESTING.md describes it, kept on 127.0.0.1: no background traffic, no name
# resolution, loopback ICE candidates as plain addresses (not mDNS names).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]

# Inbound audio the page played, from the peer connection's own statistics. getStats() is
# asynchronous and wait_for_function does not await promises, so the page polls it itself,
# up to a deadline; the result is null if no sound came in time.
INBOUND_AUDIO = """async (timeoutMs) => {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const pc = window.voiceAgent.pc;
    for (const report of pc ? (await pc.getStats()).values() : []) {
      if (report.type !== "inbound-rtp" || report.kind !== "audio") continue;
      if (report.audioLevel > 0 || report.totalAudioEnergy > 0) {
        return { audioLevel: report.audioLevel, totalAudioEnergy: report.totalAudioEnergy };
      }
    }
    if (performance.now() > deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}"""


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    speech = synthesize(SENTENCE, MIC_RATE)
    samples = pad_with_silence(speech, MIC_RATE, SILENCE_BEFORE_SECS, SILENCE_AFTER_SECS)
    return write_wav(
        tmp_path_factory.mktemp("microphone") / "speech-48k-mono.wav", samples, MIC_RATE
    )


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@contextmanager
def chromium(
    playwright: Playwright, profile: Path, microphone: Path | None, self_signed_ok: bool = False
) -> Iterator[BrowserContext]:
    """A fresh Chromium; ``microphone`` is the WAV it hears, or None to refuse the microphone."""
    args = list(CHROMIUM_ARGS)
    if microphone is None:
        args.append("--deny-permission-prompts")
    else:
        args += [
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
        ]
    profile.mkdir()
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=str(CHROMIUM),
        headless=True,
        args=args,
        viewport=DESKTOP,
        ignore_https_errors=self_signed_ok,  # what a person does by clicking through once
    )
    try:
        yield context
    finally:
        context.close()


def open_page(context: BrowserContext, base_url: str, new: bool = False) -> Page:
    page = context.pages[0] if context.pages and not new else context.new_page()
    # Shown by pytest only when a test fails.
    page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))
    page.goto(base_url)
    expect(page.locator("#status")).to_have_text("Not connected")
    return page


@contextmanager
def explained(page: Page, artifacts: Path, name: str) -> Iterator[None]:
    """On a failure, keep a screenshot and print what the page had received."""
    try:
        yield
    except Exception:
        page.screenshot(path=artifacts / f"{name}-failed.png")
        print(f"[page state] {page.evaluate('JSON.stringify(window.voiceAgent)')}")
        raise


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
