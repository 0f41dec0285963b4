"""Pipecat's official web client against the agent: anyone can build a client with Pipecat's SDKs.

``@pipecat-ai/client-js`` 1.13.1 with ``@pipecat-ai/small-webrtc-transport`` 1.10.8, pinned
with a lock in tests/pipecat_client/ (``make test-deps`` installs them), is bundled by esbuild
once per run and driven in Debian's Chromium, with a fake microphone, against the agent and the
stand-ins. tests/pipecat_client/client.js is the whole client: what a person would write, plus
``window.pipecatTest``, which starts and stops it and keeps everything the client reported.

Where the page comes from: the agent refuses API calls made from another origin, and a test
cannot add files to agent/static. Playwright answers the page's own two requests (its HTML and
the bundle) at a path on the agent's origin that the agent does not serve, so every other
request (/api/config, POST and PATCH /api/offer) goes to the agent itself, unchanged and
same-origin, as from a page served beside it. A proxy in the test would also pass the Origin
check, but it would put code of ours between the client and the agent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from pipecat.processors.frameworks.rtvi.models import PROTOCOL_VERSION
from playwright.sync_api import BrowserContext, Page, Playwright, Request, Response

from tests.audio import pad_with_silence, synthesize, write_wav
from tests.browser import chromium, inbound_audio_script
from tests.helpers import AgentProcess, active_sessions, chat_requests, wait_for_active, wait_until
from tests.standins.ollama import GREETING
from tests.standins.process import REPO_ROOT

pytestmark = pytest.mark.browser

CLIENT_DIR = REPO_ROOT / "tests" / "pipecat_client"
ESBUILD = CLIENT_DIR / "node_modules" / ".bin" / "esbuild"

SENTENCE = "What is the weather like in Paris today"
TYPED = "Are you still there"  # sent as text after the ICE restart (the microphone is gone)
FIRST_TYPED = "Please remember the blue bicycle"  # a longer reply, to restart while it plays
MIC_RATE = 48000
# The fake microphone starts when the client asks for it and loops: a pause that outlasts the
# greeting, the sentence, then a pause that outlasts the reply.
SILENCE_BEFORE_SECS = 7.5
SILENCE_AFTER_SECS = 6.0
WAIT_MS = 60_000
# The reply's text has come when this wait starts; its sound follows within a second or two.
RESTART_AUDIO_WAIT_MS = 20_000

PAGE_PATH = "/pipecat-client/"
PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Pipecat client</title></head>
<body><audio id="bot-audio" autoplay></audio><script src="client.js"></script></body></html>
"""

# Whether the client reported a text (one event type, from index `since`) holding every word.
HAS_TEXT = """([kind, words, since]) => pipecatTest.events.slice(since).some((event) =>
  event.type === kind
  && (kind !== "user-transcript" || event.data.final)
  && words.every((word) => (event.data?.text ?? "").toLowerCase().includes(word)))"""

# Whether the bot has finished speaking a reply that holds a word.
REPLY_SPOKEN = """(word) => {
  const events = pipecatTest.events;
  const reply = events.findIndex(
    (e) => e.type === "bot-output" && e.data.text.toLowerCase().includes(word));
  return reply >= 0 && events.slice(reply).some((e) => e.type === "bot-stopped-speaking");
}"""


INBOUND_AUDIO = inbound_audio_script("pipecatTest.pc")

# For a failure's explanation: the current connection's inbound audio, and the page's sink.
INBOUND_STATS = """async () => {
  const pc = pipecatTest.pc;
  const reports = pc ? [...(await pc.getStats()).values()] : [];
  const sink = document.getElementById("bot-audio");
  return {
    pcId: pipecatTest.pcId,
    connection: pc?.connectionState ?? null,
    receivers: pc ? pc.getReceivers().map((r) => [r.track.kind, r.track.id, r.track.muted]) : [],
    rtp: reports.filter((r) => r.type === "inbound-rtp").map((r) =>
      [r.kind, r.packetsReceived, r.bytesReceived, r.audioLevel, r.totalAudioEnergy]),
    sink: [sink.srcObject?.getTracks().map((t) => [t.id, t.readyState, t.muted]), sink.paused],
  };
}"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """client.js and the two packages as one browser script (an IIFE)."""
    if not ESBUILD.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed (scripts/system-packages.sh installs it as root)")
        pytest.fail(f"Pipecat's client is not installed in {CLIENT_DIR}: run `make test-deps`")
    out = tmp_path_factory.mktemp("bundle") / "client.js"
    subprocess.run(
        [
            ESBUILD,
            "client.js",
            "--bundle",
            "--format=iife",
            f"--outfile={out}",
            "--log-level=warning",
        ],
        cwd=CLIENT_DIR,
        check=True,
        timeout=60,
    )
    return out.read_bytes()


def microphone(path: Path, text: str | None) -> Path:
    speech = synthesize(text, MIC_RATE) if text else np.zeros(0, dtype=np.int16)
    samples = pad_with_silence(speech, MIC_RATE, SILENCE_BEFORE_SECS, SILENCE_AFTER_SECS)
    return write_wav(path, samples, MIC_RATE)


@pytest.fixture(scope="module")
def speaking_microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return microphone(tmp_path_factory.mktemp("microphone") / "speech-48k.wav", SENTENCE)


@pytest.fixture(scope="module")
def silent_microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return microphone(tmp_path_factory.mktemp("microphone") / "silence-48k.wav", None)


@dataclass
class ClientPage:
    """The page running Pipecat's client, and what it asked of the network."""

    page: Page
    api: list[dict[str, Any]] = field(default_factory=list)  # /api/ calls answered, in order
    failed: list[str] = field(default_factory=list)  # requests that got no answer at all
    hosts: set[str] = field(default_factory=set)  # every host the page sent a request to

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def events(self, kind: str) -> list[Any]:
        return self.evaluate(
            "kind => pipecatTest.events.filter((e) => e.type === kind).map((e) => e.data)", kind
        )

    def event_count(self) -> int:
        return self.evaluate("pipecatTest.events.length")

    def wait_for_text(self, kind: str, *words: str, since: int = 0) -> None:
        lowered = [word.lower() for word in words]
        self.page.wait_for_function(HAS_TEXT, arg=[kind, lowered, since], timeout=WAIT_MS)

    def heard_audio(self, timeout_ms: int = WAIT_MS) -> dict[str, float]:
        heard = self.evaluate(INBOUND_AUDIO, timeout_ms)
        assert heard, "no inbound audio energy in the client's getStats()"
        return heard


def open_client(context: BrowserContext, agent: AgentProcess, bundle: bytes) -> ClientPage:
    page = context.pages[0] if context.pages else context.new_page()
    client = ClientPage(page)
    page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))

    def sent(request: Request) -> None:
        if request.url.startswith(("http:", "https:", "ws:", "wss:")):
            client.hosts.add(urlsplit(request.url).netloc)

    def answered(response: Response) -> None:
        path = urlsplit(response.url).path
        if path.startswith("/api/"):
            request = response.request
            body = json.loads(request.post_data) if request.post_data else None
            client.api.append(
                {"method": request.method, "path": path, "status": response.status, "body": body}
            )

    page.on("request", sent)
    page.on("response", answered)
    page.on("requestfailed", lambda request: client.failed.append(request.url))
    page.route(
        f"{agent.base_url}{PAGE_PATH}",
        lambda route: route.fulfill(body=PAGE_HTML, content_type="text/html"),
    )
    page.route(
        f"{agent.base_url}{PAGE_PATH}client.js",
        lambda route: route.fulfill(body=bundle, content_type="text/javascript"),
    )
    page.goto(f"{agent.base_url}{PAGE_PATH}")
    page.wait_for_function("window.pipecatTest !== undefined")
    return client


# Hangs up if the client is still connected (bounded: a test's end must not wait on it).
HANG_UP = """() => pipecatTest.state === "disconnected" ? null : Promise.race([
  pipecatTest.disconnect(), new Promise((resolve) => setTimeout(resolve, 5000))])"""


@contextmanager
def pipecat_client(
    playwright: Playwright, profile: Path, microphone: Path, agent: AgentProcess, bundle: bytes
) -> Iterator[ClientPage]:
    """Chromium with the client's page open on the agent's origin. On a failure it prints
    what the client had reported; at the end it hangs up, so no session outlives the test."""
    with chromium(playwright, profile, microphone) as context:
        client = open_client(context, agent, bundle)
        try:
            yield client
        except Exception:
            print(f"[client events] {json.dumps(client.evaluate('pipecatTest.events'))[:20000]}")
            print(f"[api calls] {[(c['method'], c['status']) for c in client.api]}")
            print(f"[inbound audio] {client.evaluate(INBOUND_STATS)}")
            raise
        finally:
            client.evaluate(HANG_UP)


def connect(client: ClientPage) -> dict[str, Any]:
    """Connect as an app does; returns the bot-ready data the connection waited for."""
    ready = client.evaluate("pipecatTest.connect()")
    assert client.evaluate("pipecatTest.state") == "ready"
    return ready


def wait_for_greeting(client: ClientPage, since: int = 0) -> None:
    first_words = GREETING.split("!")[0]  # "Hello"
    client.wait_for_text("bot-output", first_words, since=since)
    client.wait_for_text("bot-transcript", first_words, since=since)


def test_the_lock_pins_every_package_by_hash_and_names_no_download_address() -> None:
    lock = json.loads((CLIENT_DIR / "package-lock.json").read_text())
    manifest = json.loads((CLIENT_DIR / "package.json").read_text())
    packages = {path: entry for path, entry in lock["packages"].items() if path}
    assert packages
    assert not [path for path, entry in packages.items() if "resolved" in entry]
    assert not [path for path, entry in packages.items() if "integrity" not in entry]
    pinned = {**manifest["dependencies"], **manifest["devDependencies"]}
    for name, version in pinned.items():
        assert packages[f"node_modules/{name}"]["version"] == version, name
    assert "omit-lockfile-registry-resolved=true" in (CLIENT_DIR / ".npmrc").read_text()


def test_a_spoken_conversation_through_pipecats_web_client(
    agent: AgentProcess,
    bundle: bytes,
    speaking_microphone: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    started_before = len(agent.log_events("session started"))
    ended_before = len(agent.log_events("session ended"))
    with pipecat_client(
        playwright, tmp_path / "profile", speaking_microphone, agent, bundle
    ) as client:
        # Connect: the agent answers the offer and says bot-ready in its own RTVI version,
        # having accepted the client's older one.
        ready = connect(client)
        client_version = client.evaluate("pipecatTest.clientProtocolVersion")
        print(f"RTVI: agent {ready['version']}, client {client_version}")
        assert ready["version"] == PROTOCOL_VERSION
        assert client_version.split(".")[0] == PROTOCOL_VERSION.split(".")[0]
        assert len(agent.wait_for_log("session started", count=started_before + 1)) == (
            started_before + 1
        )
        assert active_sessions(agent.base_url) == 1

        # The greeting, as text events and as sound on the peer connection.
        wait_for_greeting(client)
        print(f"greeting audio: {client.heard_audio()}")
        assert client.evaluate("!document.getElementById('bot-audio').paused")

        # A spoken turn: what the microphone said, and the reply quoting it.
        client.wait_for_text("user-transcript", "weather", "paris")
        said = [event["text"] for event in client.events("user-transcript") if event["final"]]
        print(f"user transcript: {said}")
        client.wait_for_text("bot-output", "you said", "paris")
        client.wait_for_text("bot-transcript", "you said", "paris")
        print(f"reply: {[e['text'] for e in client.events('bot-output')][-3:]}")

        # Hang up: the client says so, and the agent frees the seat.
        client.evaluate("pipecatTest.disconnect()")
        assert client.evaluate("pipecatTest.state") == "disconnected"
        ended = agent.wait_for_log("session ended", count=ended_before + 1)
        print(f"session ended: {ended[-1]['reason']}, {ended[-1]['turns']} turn(s)")
        wait_for_active(agent.base_url, 0)

        assert client.events("error") == []
        assert client.failed == []
        assert client.hosts == {urlsplit(agent.base_url).netloc}, "the page left the agent"
        offers = [call for call in client.api if call["path"] == "/api/offer"]
        assert [c["status"] for c in offers if c["method"] == "POST"] == [200]
        patches = [c for c in offers if c["method"] == "PATCH"]
        assert patches, "the client trickled no ICE candidates"
        assert {c["status"] for c in patches} == {200}


def test_the_client_connects_again_after_hanging_up(
    agent: AgentProcess,
    bundle: bytes,
    silent_microphone: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    started_before = len(agent.log_events("session started"))
    ended_before = len(agent.log_events("session ended"))
    with pipecat_client(
        playwright, tmp_path / "profile", silent_microphone, agent, bundle
    ) as client:
        pc_ids = []
        for call in (1, 2):
            since = client.event_count()
            connect(client)
            pc_ids.append(client.evaluate("pipecatTest.pcId"))
            agent.wait_for_log("session started", count=started_before + call)
            assert active_sessions(agent.base_url) == 1
            wait_for_greeting(client, since=since)

            client.evaluate("pipecatTest.disconnect()")
            assert client.evaluate("pipecatTest.state") == "disconnected"
            agent.wait_for_log("session ended", count=ended_before + call)
            wait_for_active(agent.base_url, 0)

        assert len(set(pc_ids)) == 2, f"the second call reused a connection: {pc_ids}"
        assert len(client.events("bot-ready")) == 2
        assert client.events("error") == []
        assert [c["status"] for c in client.api if c["method"] == "POST"] == [200, 200]


@dataclass
class Restart:
    """One ICE restart by the client, and where the record stood when it began."""

    old_id: str
    new_id: str
    api_from: int  # index into ClientPage.api
    events_from: int  # index into pipecatTest.events
    chats_from: int  # index into the Ollama stand-in's chat requests


def restart_ice(client: ClientPage, agent: AgentProcess, ollama_url: str) -> Restart:
    """The transport's own recovery, ``attemptReconnection(true)`` (what it does when ICE
    fails): a new peer connection, offered with the old pc_id and ``restart_pc``. The agent
    must keep the session, moved to the new id, and start nothing."""
    started = len(agent.log_events("session started"))
    reconnecting = len(agent.log_events("session reconnecting"))
    reconnected = len(agent.log_events("session reconnected"))
    old_id = client.evaluate("pipecatTest.pcId")
    api_from, events_from = len(client.api), client.event_count()
    chats_from = len(chat_requests(ollama_url))

    client.evaluate("pipecatTest.restartIce()")
    new_id = client.evaluate("pipecatTest.pcId")
    assert new_id and new_id != old_id
    client.page.wait_for_function(
        "pipecatTest.pc?.connectionState === 'connected'", timeout=WAIT_MS
    )
    restart = Restart(old_id, new_id, api_from, events_from, chats_from)
    check_signalling_after(client, restart)

    moved = agent.wait_for_log("session reconnecting", count=reconnecting + 1)[-1]
    print(f"session reconnecting: {moved}")
    assert (moved["former"], moved["session"]) == (old_id, new_id)
    agent.wait_for_log("session reconnected", count=reconnected + 1)
    assert len(agent.log_events("session started")) == started
    assert active_sessions(agent.base_url) == 1
    return restart


def continue_in_text(client: ClientPage, restart: Restart, said_before: list[str]) -> None:
    """The client stops its microphone track when it closes the old connection, so the
    conversation goes on in text (RTVI send-text). The reply quotes the typed line and what
    was said before the restart (the context was kept), and is heard on the new connection."""
    client.evaluate("text => pipecatTest.sendText(text)", TYPED)
    client.wait_for_text("bot-output", "you said", TYPED, since=restart.events_from)
    client.wait_for_text("bot-output", "before that", *said_before, since=restart.events_from)
    print(f"audio after the restart: {client.heard_audio(RESTART_AUDIO_WAIT_MS)}")


def check_signalling_after(client: ClientPage, restart: Restart) -> None:
    """The client's restart offer and every candidate it trickled since were accepted, the
    candidates under the new connection's id."""
    after = client.api[restart.api_from :]
    print(f"after the restart: {[(c['method'], c['status']) for c in after]}")
    offers = [c for c in after if c["method"] == "POST"]
    assert [(c["status"], c["body"]["pc_id"], c["body"]["restart_pc"]) for c in offers] == [
        (200, restart.old_id, True)
    ]
    wait_until(
        lambda: any(c["method"] == "PATCH" for c in client.api[restart.api_from :]),
        timeout=10,
        what="the client to trickle the new connection's ICE candidates",
    )
    patches = [c for c in client.api[restart.api_from :] if c["method"] == "PATCH"]
    assert {c["status"] for c in patches} == {200}
    assert {c["body"]["pc_id"] for c in patches} == {restart.new_id}
    assert client.failed == []


def check_answered_once(ollama_url: str, chats_before: int, restart: Restart) -> None:
    """One greeting in all, and after the restart only the typed line reached the model."""
    chats = chat_requests(ollama_url)
    greetings = [chat for chat in chats[chats_before:] if last_user_words(chat) is None]
    assert len(greetings) == 1, "the agent greeted again after the ICE restart"
    assert [last_user_words(chat) for chat in chats[restart.chats_from :]] == [TYPED.lower()], (
        "the agent answered something again after the ICE restart"
    )


def last_user_words(chat: dict[str, Any]) -> str | None:
    """The last user message of a chat request, lower-case and without end punctuation."""
    users = [m["content"] for m in chat["messages"] if m.get("role") == "user"]
    return re.sub(r"[.!?]+$", "", users[-1].strip()).lower() if users else None


def test_an_ice_restart_by_the_client_keeps_the_conversation(
    agent: AgentProcess,
    ollama_url: str,
    bundle: bytes,
    speaking_microphone: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    """Restart after a spoken turn, once the reply has been spoken."""
    chats_before = len(chat_requests(ollama_url))
    with pipecat_client(
        playwright, tmp_path / "profile", speaking_microphone, agent, bundle
    ) as client:
        connect(client)
        wait_for_greeting(client)
        client.page.wait_for_function(REPLY_SPOKEN, arg="paris", timeout=WAIT_MS)

        restart = restart_ice(client, agent, ollama_url)
        continue_in_text(client, restart, said_before=["weather", "paris"])
        check_signalling_after(client, restart)
        check_answered_once(ollama_url, chats_before, restart)

        client.evaluate("pipecatTest.disconnect()")
        wait_for_active(agent.base_url, 0)


def test_an_ice_restart_while_the_bot_speaks_keeps_its_voice(
    agent: AgentProcess,
    ollama_url: str,
    bundle: bytes,
    silent_microphone: Path,
    playwright: Playwright,
    tmp_path: Path,
) -> None:
    """ICE fails whenever the network does, often in the middle of a reply: restart while
    the reply to a typed line is being spoken."""
    chats_before = len(chat_requests(ollama_url))
    with pipecat_client(
        playwright, tmp_path / "profile", silent_microphone, agent, bundle
    ) as client:
        connect(client)
        wait_for_greeting(client)
        client.page.wait_for_function(
            "pipecatTest.events.some((e) => e.type === 'bot-stopped-speaking')",
            timeout=WAIT_MS,
        )
        since = client.event_count()
        client.evaluate("text => pipecatTest.sendText(text)", FIRST_TYPED)
        client.page.wait_for_function(
            "since => pipecatTest.events.slice(since).some("
            "(e) => e.type === 'bot-started-speaking')",
            arg=since,
            timeout=WAIT_MS,
        )

        restart = restart_ice(client, agent, ollama_url)
        continue_in_text(client, restart, said_before=FIRST_TYPED.lower().split()[-2:])
        check_signalling_after(client, restart)
        check_answered_once(ollama_url, chats_before, restart)

        client.evaluate("pipecatTest.disconnect()")
        wait_for_active(agent.base_url, 0)
