"""Plain helpers shared by the tests and the benchmark (pytest fixtures live in conftest.py).

The agent runs as a real process (``python -m agent``) against stand-in backends, each on
127.0.0.1; these functions start it with a clean environment, wait on it, and read what
the stand-ins were asked.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from agent.config import env_names
from tests.standins.process import REPO_ROOT, start_standin, stop
from tests.standins.speaches import STT_MODEL, TTS_MODEL

# httpx loads the trusted certificates anew for every client it makes (25 ms of CPU), even
# for plain HTTP: the tests' many polls share one set, loaded once (``verify=TRUSTED``).
TRUSTED = ssl.create_default_context()

ARTIFACTS = REPO_ROOT / "test-artifacts"

# What the stand-ins serve (STT_MODEL and TTS_MODEL are the Speaches stand-in's catalogue).
TTS_VOICE = "joe"
LLM_MODEL = "llama3.2:1b"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll ``predicate`` (which reads another process's state) until it returns truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


# --- the agent under test -------------------------------------------------------------------


def without_agent_settings(**env: str) -> dict[str, str]:
    """This process's environment minus every variable the agent's configuration reads,
    plus ``env``: a setting in the developer's shell must not leak into the agent under test."""
    ours = set(env_names())
    return {**{k: v for k, v in os.environ.items() if k not in ours}, **env}


def agent_env(speaches: str, ollama: str, **overrides: str) -> dict[str, str]:
    """The agent's settings for a test: the stand-ins' URLs and models, loopback only."""
    env = {
        "AGENT_HOST": "127.0.0.1",
        "AGENT_PORT": str(free_port()),
        "SPEACHES_BASE_URL": speaches,
        "OLLAMA_BASE_URL": ollama,
        "OLLAMA_MODEL": LLM_MODEL,
        "STT_MODEL": STT_MODEL,
        "TTS_MODEL": TTS_MODEL,
        "TTS_VOICE": TTS_VOICE,
        "WEBRTC_HOST_ADDRESSES": "127.0.0.1",
        "LOG_FORMAT": "json",
        "BACKEND_RETRY_MAX_SECS": "0.5",
        # Every test client is 127.0.0.1, one "device": tests/test_hostile_input.py sets
        # and proves the per-device limit itself.
        "NEW_SESSIONS_PER_MINUTE": "0",
    }
    env.update(overrides)
    return env


@dataclass
class AgentProcess:
    process: subprocess.Popen[str]
    base_url: str
    local_url: str  # plain HTTP on 127.0.0.1: the same as base_url unless HTTPS is on
    log_lines: list[str] = field(default_factory=list)
    new_line: threading.Condition = field(default_factory=threading.Condition)

    def log_events(self, event: str) -> list[dict]:
        marker = f'"event": "{event}"'
        return [json.loads(line) for line in self.log_lines if marker in line]

    def wait_for_log(self, event: str, count: int = 1, timeout: float = 30.0) -> list[dict]:
        """Block until the agent has logged ``event`` at least ``count`` times."""
        with self.new_line:
            if not self.new_line.wait_for(lambda: len(self.log_events(event)) >= count, timeout):
                raise TimeoutError(f"the agent did not log {event!r} {count} times")
        return self.log_events(event)


@contextmanager
def run_agent(env: dict[str, str], ready: bool = True, timeout: float = 60.0):
    """Start ``python -m agent`` with ``env`` as its only settings; wait until /health
    answers (200 if ``ready``). Its log goes to test-artifacts/agent-PORT.log."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agent"],
        cwd=REPO_ROOT,
        env=without_agent_settings(**env, PYTHONUNBUFFERED="1"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    https = env.get("TLS") == "on"
    base_url = f"{'https' if https else 'http'}://127.0.0.1:{env['AGENT_PORT']}"
    local_url = f"http://127.0.0.1:{env['AGENT_HTTP_PORT']}" if https else base_url
    agent = AgentProcess(process, base_url, local_url)

    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"agent-{env['AGENT_PORT']}.log"

    def collect() -> None:
        with log_path.open("w") as log_file:
            for line in process.stderr:
                log_file.write(line)
                with agent.new_line:
                    agent.log_lines.append(line)
                    agent.new_line.notify_all()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        wait_for_health(agent, want_ready=ready, timeout=timeout)
        yield agent
    finally:
        stop(process)
        reader.join(timeout=5)


def wait_for_health(agent: AgentProcess, want_ready: bool, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            raise RuntimeError(f"the agent exited: {''.join(agent.log_lines[-20:])}")
        try:
            response = httpx.get(f"{agent.local_url}/health", timeout=2, verify=TRUSTED)
            last = response.status_code
            if response.status_code == 200 or not want_ready:
                return response
        except httpx.TransportError as error:
            last = error
        time.sleep(0.1)  # polling a separate process's HTTP endpoint until it answers
    raise TimeoutError(f"/health did not become {'ready' if want_ready else 'up'}: {last}")


def active_sessions(base_url: str) -> int:
    response = httpx.get(f"{base_url}/health", timeout=5, verify=TRUSTED)
    return response.json()["sessions"]["active"]


def wait_for_active(base_url: str, count: int, timeout: float = 20.0) -> None:
    """Wait until the agent at ``base_url`` reports ``count`` running sessions."""
    wait_until(
        lambda: active_sessions(base_url) == count,
        timeout,
        f"{count} active sessions (now {active_sessions(base_url)})",
    )


# --- the stand-ins --------------------------------------------------------------------------


@contextmanager
def standin_client(module: str, *args: str, timeout: float = 60.0) -> Iterator[httpx.Client]:
    """A stand-in process of its own (``python -m module *args``), and an HTTP client for it."""
    with (
        start_standin(module, *args) as (_, url),
        httpx.Client(base_url=url, timeout=timeout) as client,
    ):
        yield client


def standin_requests(url: str) -> Any:
    """What the stand-in at ``url`` was asked, in order (its ``/_standin/requests`` log)."""
    response = httpx.get(f"{url}/_standin/requests", timeout=10, verify=TRUSTED)
    response.raise_for_status()
    return response.json()


def clear_standin_requests(*urls: str) -> None:
    for url in urls:
        httpx.delete(f"{url}/_standin/requests", timeout=10, verify=TRUSTED).raise_for_status()


def chat_requests(ollama_url: str) -> list[dict[str, Any]]:
    """The chat-completion bodies the Ollama stand-in received, in order."""
    return standin_requests(ollama_url)["chat"]


def ollama_pulls(ollama_url: str) -> list[str]:
    """The models the Ollama stand-in was asked to pull, in order."""
    return [call["model"] for call in standin_requests(ollama_url)["pull"]]


def speaches_downloads(speaches_url: str) -> list[str]:
    """The model paths the Speaches stand-in was asked to download, in order."""
    return [
        entry["path"]
        for entry in standin_requests(speaches_url)
        if entry["method"] == "POST" and "/v1/models/" in entry["path"]
    ]
