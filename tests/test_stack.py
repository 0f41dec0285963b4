"""The appliance run for real: a Docker engine of the test's own, `make models`, `make up`, and
a spoken conversation from a phone on the LAN, through the containers.

The images are built beforehand, from the project's own ``Dockerfile`` on a locally made
Debian base, with stand-ins for the Ollama and Speaches images (``python -m
tests.stack.images``, which needs the package registries; ``tests/stack/``). Here, in the
tests' private network namespace, ``dockerd`` starts on the cached data root, and a copy of
the checkout runs the appliance as its README says: ``make models``, ``make up``. Chromium
is a phone on the LAN: a second namespace joined by a veth pair (``tests/netns.py``),
opening ``https://10.99.0.1:7860/`` with the agent's self-signed certificate and no loopback
shortcut (``WEBRTC_HOST_ADDRESSES`` empty). Then: `make models` again, `make down` and
`make up` (volumes and certificate kept), the agent killed (its restart policy brings it
back), and a backend stopped and started (the agent finds it again by itself).

The tests run in order on one stack: each starts from where the one before left it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Playwright, expect

from tests import netns
from tests.audio import pad_with_silence, synthesize, write_wav
from tests.browser import CHROMIUM, chromium, explained, inbound_audio_script
from tests.helpers import chat_requests, ollama_pulls, speaches_downloads
from tests.stack import images
from tests.stack.appliance import (
    ONE_SHOT,
    SERVICES,
    Appliance,
    can_connect_from,
    copy_checkout,
    dot_env,
    listening,
    process_status,
)
from tests.stack.engine import missing_tools, running_engine
from tests.standins.speaches import STT_MODEL, TTS_MODEL

pytestmark = pytest.mark.stack

T = TypeVar("T")

AGENT_PORT, AGENT_HTTP_PORT, OLLAMA_PORT, SPEACHES_PORT = 7860, 7861, 11434, 8000
LAN_URL = f"https://{netns.HOME_ADDRESS}:{AGENT_PORT}/"
LOCAL = f"http://127.0.0.1:{AGENT_HTTP_PORT}"
OLLAMA = f"http://127.0.0.1:{OLLAMA_PORT}"
SPEACHES = f"http://127.0.0.1:{SPEACHES_PORT}"
LLM_DEFAULT = "llama3.2:3b"  # OLLAMA_MODEL's default, which the copy's .env keeps
VOLUMES = ("voice-agent_agent-data", "voice-agent_ollama-models", "voice-agent_speaches-models")

SENTENCE = "What is the weather like in Paris today"
MIC_RATE = 48000
SILENCE_BEFORE_SECS = 7.5  # the greeting first (as tests/test_browser.py)
SILENCE_AFTER_SECS = 6.0
WAIT_MS = 60_000
RECOVERY_SECS = 90.0


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the stack test runs its own dockerd: it needs root"
    missing = missing_tools() + [t for t in ("make", "nsenter", "ip") if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)}: Debian docker.io, make, util-linux, iproute2"
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed"
    links = sorted(name for _, name in socket.if_nameindex())
    if links != ["lo"]:
        return f"not in a private network namespace (links: {links}); run via scripts/isolated.sh"
    return None


if reason := _unavailable():
    pytest.skip(reason, allow_module_level=True)


def poll(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Ask Docker or the agent (other processes) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def health() -> httpx.Response | None:
    try:
        return httpx.get(f"{LOCAL}/health", timeout=5)
    except httpx.TransportError:
        return None


def ready() -> bool:
    answer = health()
    return answer is not None and answer.status_code == 200


def served_certificate() -> str:
    return ssl.get_server_certificate(("127.0.0.1", AGENT_PORT))


@dataclass
class Stack:
    appliance: Appliance
    phone: netns.Phone
    first_models: str  # what the first `make models` printed
    first_up: str  # and the first `make up`


@pytest.fixture(scope="module")
def timings(artifacts: Path) -> Iterator[dict[str, float]]:
    measured: dict[str, float] = {}
    yield measured
    print(f"[stack timings, s] {json.dumps(measured)}")
    (artifacts / "stack-timings.json").write_text(json.dumps(measured, indent=2))


def _phase(timings: dict[str, float], name: str, start: float) -> None:
    timings[name] = round(time.monotonic() - start, 1)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, artifacts: Path, timings: dict[str, float]
) -> Iterator[Stack]:
    plan = images.Plan.for_checkout()
    with ExitStack() as cleanup:
        start = time.monotonic()
        # Before dockerd adds its bridges: the LAN link is the first address `make up` finds.
        phone = cleanup.enter_context(netns.home_and_phone())
        cleanup.enter_context(images.cache_lock())
        engine = cleanup.enter_context(
            running_engine(images.data_root(), artifacts / "stack-dockerd.log", bridged=True)
        )
        if stale := images.stale(engine, plan):
            pytest.fail(
                f"images missing or out of date: {stale}. Build them with network access first: "
                "`python -m tests.stack.images` (make test does)"
            )
        engine.remove_everything_but_images()
        copy = copy_checkout(tmp_path_factory.mktemp("stack") / "voice-agent")
        (copy / ".env").write_text(dot_env(copy, plan))
        transcript = artifacts / "stack-make.log"
        transcript.unlink(missing_ok=True)
        appliance = Appliance(engine, copy, transcript, timings)
        cleanup.callback(_take_down, appliance, artifacts)
        _phase(timings, "engine up, copy made", start)

        # The README's order: download the models, then start.
        first_models = appliance.make("models", phase="make models (first)")
        first_up = appliance.make("up", phase="make up (first)")
        yield Stack(appliance, phone, first_models, first_up)


def _take_down(appliance: Appliance, artifacts: Path) -> None:
    (artifacts / "stack-compose.log").write_text(appliance.logs())
    appliance.compose("down", "--volumes")


def test_make_models_then_make_up_bring_the_stack_up_healthy(stack: Stack) -> None:
    assert f"pulling {LLM_DEFAULT} from Ollama" in stack.first_models
    assert f"{STT_MODEL} done in" in stack.first_models
    assert f"{TTS_MODEL} done in" in stack.first_models
    assert "All models are present." in stack.first_models
    # Downloaded once, by `make models`: the agent found them all at its start.
    assert ollama_pulls(OLLAMA) == [LLM_DEFAULT]
    downloads = speaches_downloads(SPEACHES)
    assert sorted(downloads) == sorted(f"/v1/models/{m}" for m in (STT_MODEL, TTS_MODEL))

    assert "All services are healthy." in stack.first_up
    assert f"From a phone or laptop: {LAN_URL}" in stack.first_up
    assert f"http://localhost:{AGENT_HTTP_PORT}/" in stack.first_up
    states = stack.appliance.states()
    assert {service: states[service] for service in SERVICES} == dict.fromkeys(
        SERVICES, ("running", "healthy")
    )
    init = stack.appliance.container(ONE_SHOT)["State"]
    assert (init["Status"], init["ExitCode"]) == ("exited", 0)

    assert httpx.get(f"{LOCAL}/health", timeout=5).status_code == 200
    secure = httpx.get(f"https://127.0.0.1:{AGENT_PORT}/health", verify=False, timeout=5)
    assert secure.status_code == 200, secure.text


def test_only_the_page_is_reachable_from_the_lan_and_nothing_runs_privileged(stack: Stack) -> None:
    assert listening(AGENT_PORT) and listening(AGENT_PORT) <= {"0.0.0.0", "::"}
    for loopback_only in (AGENT_HTTP_PORT, OLLAMA_PORT, SPEACHES_PORT):
        assert listening(loopback_only) == {"127.0.0.1"}, loopback_only
    phone = stack.phone.pid
    assert can_connect_from(phone, netns.HOME_ADDRESS, AGENT_PORT)
    for closed in (AGENT_HTTP_PORT, OLLAMA_PORT, SPEACHES_PORT):
        assert not can_connect_from(phone, netns.HOME_ADDRESS, closed), closed

    for service, user in (("agent", 10001), ("ollama", 1000), ("speaches", 1000)):
        container = stack.appliance.container(service)
        assert container["Config"]["User"] == f"{user}:{user}"
        status = process_status(container["State"]["Pid"])
        ids = (status["Uid"].split(), status["Gid"].split())
        assert ids == ([str(user)] * 4, [str(user)] * 4), (service, ids)
        # As the README promises: no capabilities, no way to gain privileges, and a
        # read-only root file system.
        assert int(status["CapEff"], 16) == 0, (service, status["CapEff"])
        assert status["NoNewPrivs"] == "1", service
        assert container["HostConfig"]["ReadonlyRootfs"] is True, service


def test_the_agent_runs_on_a_root_with_nothing_to_run_but_python(stack: Stack) -> None:
    """The Dockerfile's image: no shell, no package manager, only Debian's interpreter,
    looked at through the running agent's own root."""
    root = Path(f"/proc/{stack.appliance.container('agent')['State']['Pid']}/root")
    assert (root / "opt/voice-agent/bin/voice-agent").is_file()  # the agent's root indeed
    assert not (root / "bin/sh").exists() and not (root / "bin/sh").is_symlink()
    programs = {
        path.name for folder in ("usr/bin", "usr/sbin") for path in (root / folder).iterdir()
    }
    assert programs == {"python3.11"}
    assert (root / "opt/voice-agent/bin/python3.11").readlink() == Path("/usr/bin/python3.11")


SELECTED_PAIR = """async () => {
  const stats = await window.voiceAgent.pc.getStats();
  for (const report of stats.values()) {
    if (report.type !== "transport" || !report.selectedCandidatePairId) continue;
    const pair = stats.get(report.selectedCandidatePairId);
    const [local, remote] = [stats.get(pair.localCandidateId), stats.get(pair.remoteCandidateId)];
    return [local.address || local.ip, remote.address || remote.ip];
  }
  return null;
}"""


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    speech = synthesize(SENTENCE, MIC_RATE)
    samples = pad_with_silence(speech, MIC_RATE, SILENCE_BEFORE_SECS, SILENCE_AFTER_SECS)
    return write_wav(tmp_path_factory.mktemp("mic") / "speech-48k-mono.wav", samples, MIC_RATE)


def test_a_spoken_conversation_from_a_phone_on_the_lan(
    stack: Stack,
    microphone_wav: Path,
    playwright: Playwright,
    tmp_path: Path,
    artifacts: Path,
    timings: dict[str, float],
) -> None:
    start = time.monotonic()
    chats_before = len(chat_requests(OLLAMA))
    launcher = stack.phone.wrapper(str(CHROMIUM), tmp_path / "chromium-on-the-phone")
    with chromium(
        playwright,
        tmp_path / "profile",
        microphone_wav,
        self_signed_ok=True,  # what a person does by accepting the certificate once
        server_address=netns.HOME_ADDRESS,
        executable=launcher,
    ) as context:
        page = context.pages[0] if context.pages else context.new_page()
        page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))
        with explained(page, artifacts, "stack-conversation"):
            page.goto(LAN_URL)
            expect(page.locator("#status")).to_have_text("Not connected")
            assert page.evaluate("window.isSecureContext && !!navigator.mediaDevices")
            page.click("#start")
            page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
            greeting = page.locator("#transcript .entry.bot .text").first
            expect(greeting).to_contain_text("Hello", timeout=WAIT_MS)
            heard = page.evaluate(inbound_audio_script("window.voiceAgent.pc"), WAIT_MS)
            assert heard, "no inbound audio energy in getStats()"

            said = page.locator("#transcript .entry.user .text").first
            expect(said).to_contain_text(re.compile("weather", re.I), timeout=WAIT_MS)
            expect(said).to_contain_text(re.compile("paris", re.I))
            reply = page.locator("#transcript .entry.user ~ .entry.bot .text").first
            expect(reply).to_contain_text("You said", timeout=WAIT_MS)
            expect(reply).to_contain_text("Paris")
            pair = page.evaluate(SELECTED_PAIR)
            print(f"audio between {pair}; reply: {reply.inner_text()!r}")
            assert pair == [stack.phone.address, netns.HOME_ADDRESS]
            page.screenshot(path=artifacts / "stack-conversation.png")

            page.click("#start")
            expect(page.locator("#status")).to_have_text("Disconnected")
    poll(lambda: health().json()["sessions"]["active"] == 0, 30, "the session to end")
    # The Ollama container heard what the phone said.
    users = [
        m["content"] for chat in chat_requests(OLLAMA)[chats_before:] for m in chat["messages"]
    ]
    assert any("paris" in str(content).lower() for content in users), users
    _phase(timings, "conversation from the phone", start)


def test_make_models_again_finds_everything_present(stack: Stack) -> None:
    pulls, downloads = len(ollama_pulls(OLLAMA)), len(speaches_downloads(SPEACHES))
    output = stack.appliance.make("models", phase="make models (again)")
    for model in (LLM_DEFAULT, STT_MODEL, TTS_MODEL):
        assert f"{model} already present" in output
    assert "All models are present." in output
    assert (len(ollama_pulls(OLLAMA)), len(speaches_downloads(SPEACHES))) == (pulls, downloads)


def test_make_down_then_up_keeps_the_volumes_and_the_certificate(stack: Stack) -> None:
    certificate = served_certificate()
    stack.appliance.make("down", phase="make down")
    assert stack.appliance.compose("ps", "--all", "--quiet").split() == []
    volumes = stack.appliance.engine.docker("volume", "ls", "--format", "{{.Name}}").stdout
    assert set(VOLUMES) <= set(volumes.split())

    output = stack.appliance.make("up", phase="make up (again)")
    assert "All services are healthy." in output
    assert served_certificate() == certificate
    # A new Speaches process, whose models are still in its volume: nothing downloaded.
    assert speaches_downloads(SPEACHES) == []
    assert ready()


def test_a_killed_agent_is_restarted_by_its_restart_policy(
    stack: Stack, timings: dict[str, float]
) -> None:
    before = stack.appliance.container("agent")
    os.kill(before["State"]["Pid"], signal.SIGKILL)  # a crash, not a `docker stop`
    start = time.monotonic()

    def restarted() -> dict[str, Any] | None:
        now = stack.appliance.container("agent")
        again = now["RestartCount"] == before["RestartCount"] + 1 and now["State"]["Running"]
        return now if again else None

    after = poll(restarted, RECOVERY_SECS, "Docker to restart the agent")
    assert after["State"]["Pid"] != before["State"]["Pid"]
    poll(ready, RECOVERY_SECS, "the restarted agent's /health to answer 200")
    _phase(timings, "agent killed → ready again", start)


def test_a_backend_stopped_and_started_is_found_again_without_an_agent_restart(
    stack: Stack, timings: dict[str, float]
) -> None:
    agent = stack.appliance.container("agent")
    speaches = stack.appliance.container("speaches")
    start = time.monotonic()
    stack.appliance.engine.docker("stop", speaches["Id"])

    def speaches_missed() -> bool:
        answer = health()
        return (
            answer is not None
            and answer.status_code == 503
            and answer.json()["backends"]["speaches"]["reachable"] is False
        )

    poll(speaches_missed, RECOVERY_SECS, "the agent to notice that Speaches is gone")
    stack.appliance.engine.docker("start", speaches["Id"])
    poll(ready, RECOVERY_SECS, "the agent to find Speaches again")
    _phase(timings, "speaches stopped and started → ready again", start)

    now = stack.appliance.container("agent")
    assert now["State"]["Pid"] == agent["State"]["Pid"]
    assert now["State"]["StartedAt"] == agent["State"]["StartedAt"]
    assert now["RestartCount"] == agent["RestartCount"]
