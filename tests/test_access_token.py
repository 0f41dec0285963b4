"""The access token (AGENT_TOKEN): the API and /metrics need it, /health tells others only
ok or not, and the page asks for it once, remembers it, and holds a conversation with it.

One agent process with a token, against the stand-ins; the page in headless Chromium.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Playwright, expect

from tests.browser import CHROMIUM, chromium, explained
from tests.helpers import REPO_ROOT, AgentProcess, agent_env, run_agent, without_agent_settings
from tests.test_browser import SENTENCE, microphone_wav  # noqa: F401 (a fixture)

TOKEN = "kitchen-7Rq2-lamp"
WRONG = "kitchen-0000-lamp"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NO_TOKEN = "This assistant is protected by an access token, and none was given."
WRONG_TOKEN = "That access token is not the right one."

WAIT_MS = 60_000

# Every request the page's API takes, as (method, path, JSON body or None).
GUARDED = [
    ("POST", "/api/offer", {"sdp": "v=0\r\n", "type": "offer"}),
    ("PATCH", "/api/offer", {"pc_id": "x", "candidates": []}),
    ("GET", "/api/config", None),
    ("GET", "/metrics", None),
]


@pytest.fixture(scope="module")
def guarded(speaches_url: str, ollama_url: str) -> Iterator[AgentProcess]:
    with run_agent(agent_env(speaches_url, ollama_url, AGENT_TOKEN=TOKEN)) as running:
        yield running


def call(agent: AgentProcess, method: str, path: str, body, headers=None) -> httpx.Response:
    return httpx.request(method, agent.base_url + path, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize(("method", "path", "body"), GUARDED)
def test_without_the_right_token_the_api_and_metrics_answer_401_in_words(
    guarded: AgentProcess, method: str, path: str, body
) -> None:
    for headers, sentence in [
        (None, NO_TOKEN),
        ({"Authorization": f"Bearer {WRONG}"}, WRONG_TOKEN),
        ({"Authorization": f"Bearer {TOKEN}x"}, WRONG_TOKEN),
        ({"Authorization": f"Basic {TOKEN}"}, NO_TOKEN),  # the right secret, not as a bearer
    ]:
        response = call(guarded, method, path, body, headers)
        assert response.status_code == 401, (method, path, headers)
        assert response.json() == {"error": sentence, "code": "unauthorized"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_with_the_token_the_api_and_metrics_answer(guarded: AgentProcess) -> None:
    config = call(guarded, "GET", "/api/config", None, BEARER)
    assert config.status_code == 200 and config.json() == {"iceServers": []}
    metrics = call(guarded, "GET", "/metrics", None, BEARER)
    assert metrics.status_code == 200 and "voice_agent_" in metrics.text
    # The token opens the API to a client, not to other web pages in a browser.
    cross = call(
        guarded, "POST", "/api/offer", GUARDED[0][2], {**BEARER, "Origin": "http://evil.lan"}
    )
    assert cross.status_code == 403 and cross.json()["code"] == "cross_origin"


def test_the_page_and_its_files_need_no_token(guarded: AgentProcess) -> None:
    for path in ("/", "/static/app.js", "/static/access.js", "/static/style.css"):
        assert call(guarded, "GET", path, None).status_code == 200, path


def test_health_tells_only_ok_without_the_token_and_everything_with_it(
    guarded: AgentProcess,
) -> None:
    for headers in (None, {"Authorization": f"Bearer {WRONG}"}):
        minimal = call(guarded, "GET", "/health", None, headers)
        assert minimal.status_code == 200
        assert minimal.json() == {"status": "ok"}
    full = call(guarded, "GET", "/health", None, BEARER)
    assert full.status_code == 200
    assert {"status", "sessions", "backends", "workers"} <= set(full.json())
    assert full.json()["status"] == "ok"


def test_the_containers_health_check_works_with_a_token_set(guarded: AgentProcess) -> None:
    port = guarded.base_url.rsplit(":", 1)[1]
    env = without_agent_settings(
        AGENT_HOST="127.0.0.1", AGENT_PORT=port, AGENT_TOKEN=TOKEN, LOG_FORMAT="json"
    )
    check = subprocess.run(
        [sys.executable, "-m", "agent", "healthcheck"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def enter_token(page: Page, token: str) -> None:
    page.fill("#access-token", token)
    page.click("#access button[type=submit]")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_page_asks_for_the_token_once_and_talks_with_it(
    guarded: AgentProcess,
    microphone_wav: Path,  # noqa: F811 (the fixture imported above)
    playwright: Playwright,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    started = time.monotonic()
    with ExitStack() as stack:
        context = stack.enter_context(chromium(playwright, tmp_path / "profile", microphone_wav))
        page = context.pages[0]
        page.on("console", lambda message: print(f"[page {message.type}] {message.text}"))
        stack.enter_context(explained(page, artifacts, "access-token"))
        page.goto(guarded.base_url)

        # A first visit: the form, and Start waits for it.
        form = page.locator("#access")
        expect(form).to_be_visible()
        expect(page.locator("#access-error")).to_be_hidden()
        expect(page.locator("#start")).to_be_disabled()
        page.screenshot(path=artifacts / "access-token-asked.png")

        # A wrong token is told in words, and asked for again.
        error = page.locator("#access-error")
        enter_token(page, "not a token")  # no header could carry it: not even sent
        expect(error).to_be_visible()
        expect(error).to_have_text(WRONG_TOKEN)
        page.fill("#access-token", WRONG)
        expect(error).to_be_hidden()  # typing clears it
        page.click("#access button[type=submit]")
        expect(error).to_be_visible()
        expect(error).to_have_text(WRONG_TOKEN)  # the agent's own words
        expect(form).to_be_visible()
        expect(page.locator("#start")).to_be_disabled()

        enter_token(page, TOKEN)
        expect(form).to_be_hidden()
        expect(page.locator("#start")).to_be_enabled()

        # Remembered on this device: after a reload, no form, and a conversation works.
        page.reload()
        expect(page.locator("#status")).to_have_text("Not connected")
        page.click("#start")
        page.wait_for_function("window.voiceAgent.state === 'connected'", timeout=WAIT_MS)
        reply = page.locator("#transcript .entry.user ~ .entry.bot .text").first
        expect(reply).to_contain_text("You said", timeout=WAIT_MS)
        expect(reply).to_contain_text(re.compile("paris", re.I))
        expect(form).to_be_hidden()
        page.click("#start")  # Stop
        expect(page.locator("#status")).to_have_text("Disconnected")

        # A remembered token the agent no longer takes is forgotten, in words.
        page.evaluate(f"localStorage.setItem('voice-agent.access-token', {WRONG!r})")
        page.reload()
        expect(form).to_be_visible()
        expect(page.locator("#access-error")).to_have_text(WRONG_TOKEN)
        stored = page.evaluate("localStorage.getItem('voice-agent.access-token')")
        assert stored is None
    print(f"page with an access token: {time.monotonic() - started:.1f} s")


def test_the_token_never_reaches_the_log(guarded: AgentProcess) -> None:
    log = "".join(guarded.log_lines)
    assert "listening" in log  # the log is there, and read
    assert TOKEN not in log
