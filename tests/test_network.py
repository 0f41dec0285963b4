"""A conversation survives the network: the page on a phone whose connection drops or changes.

The agent is the home server (10.99.0.1, HTTPS with its self-signed certificate, every
interface offered for audio); Chromium is the phone, in a network namespace of its own
joined to the home server's by a veth pair (``tests/netns.py``). Its fake microphone says
one sentence, then, long after the reply, a second one. Between the two the phone's network
is broken: its link goes down for a few seconds, it gets a new address, or packets stop
getting through while it stays online. Each time the page restarts the connection and the
second sentence is answered in the same session, with the first one in its context, and
nothing is generated twice. A network that stays down, or an agent that restarted
meanwhile, is told in plain words, and Stop while reconnecting leaves nothing behind.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import (
    Page,
    Playwright,
    Request,
    expect,
)

from tests import netns
from tests.audio import pad_with_silence, synthesize, write_wav
from tests.browser import CHROMIUM, chromium
from tests.helpers import (
    AgentProcess,
    active_sessions,
    agent_env,
    chat_requests,
    free_port,
    run_agent,
    wait_for_active,
)
from tests.standins.ollama import GREETING

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed", allow_module_level=True)
if reason := netns.unavailable():
    pytest.skip(reason, allow_module_level=True)

FIRST = "What is the weather like in Paris today"
SECOND = "Please turn on the kitchen lights"
MIC_RATE = 48000
# The fake microphone's loop: a pause for the greeting, the first sentence, a pause long
# enough for its reply, the network trouble and the recovery, the second sentence, and a
# pause for its reply.
BEFORE_FIRST_SECS = 7.5
BETWEEN_SECS = 17.0
AFTER_SECOND_SECS = 8.0

OUTAGE_SECS = 6.0  # how long the phone's link is down
NEW_PHONE_ADDRESS = "10.99.0.3"
STALL_AFTER_OFFER_SECS = 3.0  # how long the network stays stalled once the page offered again
# The page's RECONNECT_TIMEOUT_MS (agent/static/reconnect.js), in seconds.
PAGE_GIVES_UP_SECS = 20.0
WAIT_MS = 60_000


# Whether the current peer connection has brought in the assistant's voice (getStats() is
# asynchronous, so the page polls it itself, up to a deadline).
HEARD_ON_CURRENT_CONNECTION = """async (timeoutMs) => {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    for (const report of (await window.voiceAgent.pc.getStats()).values()) {
      if (report.type === "inbound-rtp" && report.kind === "audio" && report.totalAudioEnergy > 0) {
        return true;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}"""

# Every text the status line shows, with page time, from the moment this is installed.
WATCH_STATUS = """() => {
  const status = document.getElementById("status");
  window.statusSeen = [];
  const note = () => window.statusSeen.push([Math.round(performance.now()), status.textContent]);
  const everything = { childList: true, characterData: true, subtree: true };
  new MutationObserver(note).observe(status, everything);
}"""


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    first = synthesize(FIRST, MIC_RATE)
    second = synthesize(SECOND, MIC_RATE)
    samples = np.concatenate(
        [
            pad_with_silence(first, MIC_RATE, BEFORE_FIRST_SECS, BETWEEN_SECS),
            pad_with_silence(second, MIC_RATE, 0, AFTER_SECOND_SECS),
        ]
    )
    path = tmp_path_factory.mktemp("microphone") / "two-sentences-48k.wav"
    return write_wav(path, samples, MIC_RATE)


@pytest.fixture
def phone() -> Iterator[netns.Phone]:
    with netns.home_and_phone() as phone:
        yield phone


@pytest.fixture
def home_env(phone: netns.Phone, speaches_url: str, ollama_url: str, tmp_path: Path) -> dict:
    """The agent on the home server's address, as on a LAN: HTTPS (a phone's browser gives
    the microphone to secure pages only) and audio offered on every interface."""
    return agent_env(
        speaches_url,
        ollama_url,
        AGENT_HOST=netns.HOME_ADDRESS,
        TLS="on",
        TLS_DIR=str(tmp_path / "tls"),
        AGENT_HTTP_PORT=str(free_port()),
        WEBRTC_HOST_ADDRESSES="",
    )


@contextmanager
def serving(env: dict) -> Iterator[AgentProcess]:
    with run_agent(env) as agent:
        agent.base_url = f"https://{netns.HOME_ADDRESS}:{env['AGENT_PORT']}"
        yield agent


@pytest.fixture
def home_server(home_env: dict) -> Iterator[AgentProcess]:
    with serving(home_env) as agent:
        yield agent


def chromium_on(phone: netns.Phone, playwright: Playwright, tmp_path: Path, microphone: Path):
    launcher = phone.wrapper(str(CHROMIUM), tmp_path / "chromium-on-the-phone")
    # self_signed_ok: what a person does by accepting the certificate once
    return chromium(
        playwright,
        tmp_path / "profile",
        microphone,
        self_signed_ok=True,
        server_address=netns.HOME_ADDRESS,
        executable=launcher,
    )


@contextmanager
def on_the_phone(
    agent: AgentProcess,
    phone: netns.Phone,
    playwright: Playwright,
    tmp_path: Path,
    mic: Path,
    console: list[str] | None = None,
) -> Iterator[Page]:
    """The page on the phone, connected and greeted; on a failure, a screenshot and what
    the page saw. ``console`` collects what the page writes to its console."""
    console = [] if console is None else console
    with chromium_on(phone, playwright, tmp_path, mic) as context:
        page = context.pages[0] if context.pages else context.new_page()
        page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))
        page.on("console", lambda message: console.append(message.text))
        try:
            page.goto(agent.base_url)
            assert page.evaluate("window.isSecureContext && !!navigator.mediaDevices")
            page.evaluate(WATCH_STATUS)
            page.click("#start")
            page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
            expect(bot_entries(page).first).to_contain_text("Hello", timeout=WAIT_MS)
            yield page
        except BaseException:
            page.screenshot(path=tmp_path / "failed.png")
            print(f"[status seen] {page.evaluate('window.statusSeen')}")
            print(f"[page state] {page.evaluate('JSON.stringify(window.voiceAgent)')}")
            raise


def wait_for_first_reply(page: Page) -> None:
    first_reply = page.locator("#transcript .entry.user ~ .entry.bot .text").first
    expect(first_reply).to_contain_text("Paris", timeout=WAIT_MS)


def is_restart_offer(request: Request) -> bool:
    return request.method == "POST" and '"restart_pc":true' in (request.post_data or "")


def bot_entries(page: Page):
    return page.locator("#transcript .entry.bot .text")


def status_seen(page: Page) -> list[str]:
    return [text for _, text in page.evaluate("window.statusSeen")]


def text_of(content: Any) -> str:
    if isinstance(content, list):
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def chats_since(ollama_url: str, before: int) -> list[list[dict[str, Any]]]:
    return [request["messages"] for request in chat_requests(ollama_url)[before:]]


def answered_with_context(page: Page, agent: AgentProcess, ollama_url: str, chats_before: int):
    """The second sentence, spoken after the trouble, is answered in the first one's session:
    its reply quotes both, the LLM was asked with the whole conversation, and neither the
    greeting nor an answer was generated twice."""
    page.wait_for_function("window.voiceAgent.botReady", timeout=WAIT_MS)  # RTVI again
    reply = bot_entries(page).filter(has_text=re.compile("kitchen", re.I))
    expect(reply).to_have_count(1, timeout=WAIT_MS)
    expect(reply).to_contain_text(re.compile(r"Before that, you said: .*Paris", re.I))
    print(f"reply after the trouble: {reply.inner_text()!r}")
    assert page.evaluate(HEARD_ON_CURRENT_CONNECTION, WAIT_MS), "no voice on the new connection"

    chats = chats_since(ollama_url, chats_before)
    asked = next(m for m in chats if "kitchen" in text_of(m[-1]["content"]).lower())
    users = [text_of(m["content"]) for m in asked if m["role"] == "user"]
    assert len(users) >= 2 and "paris" in users[0].lower(), users
    said = [text_of(m["content"]) for m in asked if m["role"] == "assistant"]
    assert said[0] == GREETING and "Paris" in said[1], said
    # One run without a new user message: the greeting, first. A reconnection that ran the
    # LLM again (a second greeting, or the last answer repeated) would add another.
    not_answering_the_user = [i for i, m in enumerate(chats) if m[-1]["role"] != "user"]
    assert not_answering_the_user == [0], [m[-1] for m in chats]

    entries = page.locator("#transcript .entry")
    kinds = entries.evaluate_all("(els) => els.map((el) => el.classList.contains('bot'))")
    assert kinds[:2] == [True, False], "one greeting, then the user"
    assert len(agent.log_events("session started")) == 1
    assert len(agent.log_events("greeting")) == 1
    assert agent.log_events("session ended") == []


def hang_up(page: Page, agent: AgentProcess) -> None:
    page.click("#start")
    expect(page.locator("#status")).to_have_text("Disconnected")
    ended = agent.wait_for_log("session ended")
    print(f"session ended: {ended[-1]['reason']}, {ended[-1]['turns']} turn(s)")
    wait_for_active(agent.local_url, 0)


def test_a_link_down_for_a_few_seconds_keeps_the_conversation(
    home_server: AgentProcess,
    phone: netns.Phone,
    ollama_url: str,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    agent = home_server
    chats_before = len(chat_requests(ollama_url))
    with on_the_phone(agent, phone, playwright, tmp_path, microphone_wav) as page:
        wait_for_first_reply(page)
        first_id = page.evaluate("window.voiceAgent.pcId")
        phone.link_down()
        time.sleep(OUTAGE_SECS)  # the outage itself, not a wait for something
        phone.link_up()
        up_at = time.monotonic()
        page.wait_for_function(
            "window.voiceAgent.state === 'connected'"
            " && window.statusSeen.at(-1)[1] === 'Connected'",
            timeout=WAIT_MS,
        )
        print(f"connected {time.monotonic() - up_at:.1f} s after the link came back")
        seen = status_seen(page)
        print(f"status line: {page.evaluate('window.statusSeen')}")
        # Either the page restarted the connection (and said so), or it never lost it.
        restarted = "Reconnecting…" in seen
        never_lost = set(seen[seen.index("Connected") :]) == {"Connected"}
        assert restarted or never_lost, seen
        if restarted:
            assert page.evaluate("window.voiceAgent.pcId") != first_id
            assert agent.log_events("session reconnecting")

        answered_with_context(page, agent, ollama_url, chats_before)
        hang_up(page, agent)


def test_a_new_address_on_the_same_link_keeps_the_conversation(
    home_server: AgentProcess,
    phone: netns.Phone,
    ollama_url: str,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    agent = home_server
    chats_before = len(chat_requests(ollama_url))
    with on_the_phone(agent, phone, playwright, tmp_path, microphone_wav) as page:
        wait_for_first_reply(page)
        first_id = page.evaluate("window.voiceAgent.pcId")
        phone.change_address(NEW_PHONE_ADDRESS)
        changed_at = time.monotonic()
        page.wait_for_function(
            "window.statusSeen.some(([, text]) => text === 'Reconnecting…')", timeout=WAIT_MS
        )
        print(f"reconnecting {time.monotonic() - changed_at:.1f} s after the address changed")
        page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
        print(f"connected {time.monotonic() - changed_at:.1f} s after the address changed")
        print(f"status line: {page.evaluate('window.statusSeen')}")
        new_id = page.evaluate("window.voiceAgent.pcId")
        assert new_id != first_id
        reconnecting = agent.wait_for_log("session reconnecting")
        assert reconnecting[-1]["session"] == new_id
        assert reconnecting[0]["former"] == first_id

        answered_with_context(page, agent, ollama_url, chats_before)
        hang_up(page, agent)


def test_a_stalled_network_is_noticed_by_ice_and_recovered(
    home_server: AgentProcess,
    phone: netns.Phone,
    ollama_url: str,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    agent = home_server
    chats_before = len(chat_requests(ollama_url))
    console: list[str] = []
    with on_the_phone(agent, phone, playwright, tmp_path, microphone_wav, console) as page:
        wait_for_first_reply(page)
        first_id = page.evaluate("window.voiceAgent.pcId")
        # The phone stays online: only ICE can tell that nothing gets through any more.
        with page.expect_request(is_restart_offer, timeout=WAIT_MS):
            phone.cut_path()
            cut_at = time.monotonic()
        print(f"restart offered {time.monotonic() - cut_at:.1f} s after the cut")
        time.sleep(STALL_AFTER_OFFER_SECS)  # the offer is stuck in the stall meanwhile
        phone.restore_path()
        restored_at = time.monotonic()
        page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
        print(f"connected {time.monotonic() - restored_at:.1f} s after the path came back")
        print(f"status line: {page.evaluate('window.statusSeen')}")
        reasons = [text for text in console if "reconnecting:" in text]
        assert reasons and "ICE" in reasons[0], reasons
        assert "Reconnecting…" in status_seen(page)
        assert page.evaluate("window.voiceAgent.pcId") != first_id

        answered_with_context(page, agent, ollama_url, chats_before)
        hang_up(page, agent)


def test_a_link_that_stays_down_is_given_up_in_plain_words(
    home_server: AgentProcess,
    phone: netns.Phone,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    with on_the_phone(home_server, phone, playwright, tmp_path, microphone_wav) as page:
        phone.link_down()
        expect(page.locator("#status")).to_have_text("Reconnecting…", timeout=WAIT_MS)
        expect(page.locator("#error")).to_have_text(
            "The connection was lost and could not be restored. Press Start to talk again.",
            timeout=(PAGE_GIVES_UP_SECS + 10) * 1000,
        )
        expect(page.locator("#start")).to_have_text("Start")
        assert page.evaluate("window.voiceAgent.state") == "failed"
        seen = page.evaluate("window.statusSeen")
        print(f"status line: {seen}")
        lost_at = next(t for t, text in seen if text == "Reconnecting…")
        assert seen[-1][1] == "Connection failed"
        assert seen[-1][0] - lost_at == pytest.approx(PAGE_GIVES_UP_SECS * 1000, abs=1000)


def test_stop_while_reconnecting_ends_the_conversation(
    home_server: AgentProcess,
    phone: netns.Phone,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    agent = home_server
    with on_the_phone(agent, phone, playwright, tmp_path, microphone_wav) as page:
        restart_offers: list[float] = []
        page.on(
            "request",
            lambda request: (
                restart_offers.append(time.monotonic()) if is_restart_offer(request) else None
            ),
        )
        phone.link_down()
        # Offline, the page waits for the network before it offers again: nothing is sent
        # that could reach the agent after Stop.
        expect(page.locator("#status")).to_have_text("Reconnecting…", timeout=WAIT_MS)
        page.click("#start")
        stopped_at = time.monotonic()
        expect(page.locator("#status")).to_have_text("Disconnected")
        expect(page.locator("#start")).to_have_text("Start")
        expect(page.locator("#error")).to_be_hidden()
        assert page.evaluate("window.voiceAgent.state") == "disconnected"

        # Back on the network: nothing of the call is left to come back. The agent cannot be
        # told (the page closed its connections while the network was down); it lets the
        # session go WEBRTC_RECONNECT_GRACE_SECS (30 s) after the last packet it had.
        phone.link_up()
        ended = agent.wait_for_log("session ended", timeout=90)
        after = time.monotonic() - stopped_at
        print(f"session ended: {ended[-1]['reason']}, {after:.1f} s after Stop")
        wait_for_active(agent.local_url, 0)
        sent = [round(t - stopped_at, 1) for t in restart_offers]
        assert sent == [], f"restart offers sent while offline or after Stop, at {sent} s"
        assert agent.log_events("session reconnecting") == []
        assert page.evaluate("window.statusSeen.at(-1)[1]") == "Disconnected"


def test_a_conversation_the_agent_forgot_is_told_in_plain_words(
    home_env: dict,
    phone: netns.Phone,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    """The home server restarts while the phone is off the network: the restart offer is
    refused (404 unknown_session), and the page says that the conversation is over."""
    with ExitStack() as first_run:
        agent = first_run.enter_context(serving(home_env))
        with on_the_phone(agent, phone, playwright, tmp_path, microphone_wav) as page:
            phone.link_down()
            expect(page.locator("#status")).to_have_text("Reconnecting…", timeout=WAIT_MS)
            first_run.close()  # the home server stops, and starts again
            with serving(home_env) as restarted:
                phone.link_up()
                expect(page.locator("#error")).to_have_text(
                    "The connection was lost, and the assistant has ended the conversation"
                    " meanwhile. Press Start to talk again.",
                    timeout=WAIT_MS,
                )
                expect(page.locator("#start")).to_have_text("Start")
                assert page.evaluate("window.voiceAgent.state") == "failed"
                print(f"status line: {page.evaluate('window.statusSeen')}")
                assert restarted.log_events("session started") == []
                assert restarted.log_events("session reconnecting") == []
                assert active_sessions(restarted.local_url) == 0
