"""The backend clients against a real HTTP server on 127.0.0.1 that answers from a script:
failing is told apart from unreachable, 4xx is final with the backend's own words, 5xx and
lost connections are retried by one rule, and a connection the server closed after an
error never poisons the next request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agent.backends import Ollama, Speaches
from agent.backends.client import (
    FIRST_RETRY_SECS,
    REQUEST_TIMEOUT_SECS,
    Refused,
    ServerError,
    Unreachable,
    is_transient,
    retry_wait,
)
from agent.backends.watch import BackendWatcher
from agent.config import load_settings
from tests.helpers import free_port


@dataclass
class Reply:
    status: int = 200
    body: object = None  # a dict/list is sent as JSON, a str as plain text
    # Close the connection after answering, without saying so, and late: as the next
    # request arrives on it (the race a pooled client cannot see coming).
    close: bool = False


@dataclass
class ScriptedServer:
    """HTTP/1.1 with keep-alive; ``answer(method, path)`` decides each reply."""

    answer: Callable[[str, str], Reply]
    requests: list[tuple[str, str, float]] = field(default_factory=list)
    connections: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        closing = False
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                if closing:
                    break
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = next(
                    (
                        int(v)
                        for k, _, v in (ln.partition(": ") for ln in lines[1:])
                        if k.lower() == "content-length"
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests.append((method, path, time.monotonic()))
                reply = self.answer(method, path)
                writer.write(_encode(reply))
                await writer.drain()
                closing = reply.close
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def paths(self, method: str) -> list[str]:
        return [path for m, path, _ in self.requests if m == method]


def _encode(reply: Reply) -> bytes:
    if isinstance(reply.body, str):
        body, kind = reply.body.encode(), "text/plain; charset=utf-8"
    else:
        body, kind = (
            json.dumps(reply.body if reply.body is not None else {}).encode(),
            "application/json",
        )
    head = (
        f"HTTP/1.1 {reply.status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[str, str], Reply]], ScriptedServer]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Callable[[str, str], Reply]) -> ScriptedServer:
        scripted = ScriptedServer(answer)
        server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
        servers.append(server)
        scripted.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return scripted

    yield start
    for server in servers:
        server.close()


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_download_speaches_cannot_make_is_failing_not_unreachable(serve) -> None:
    # Speaches 0.8.3 offline: 500 as plain text, then it closes the connection unannounced.
    def answer(method: str, path: str) -> Reply:
        if method == "POST":
            return Reply(500, "Internal Server Error", close=True)
        return Reply(200, {"id": path.rsplit("/", 1)[-1]})

    server = await serve(answer)
    speaches = Speaches(server.url, ["org/first", "org/second"])
    try:
        with pytest.raises(ServerError) as raised:
            await speaches.pull("org/first")
        assert is_transient(raised.value)
        reason = speaches.state.reason() or ""
        assert speaches.state.reachable is True
        assert "unreachable" not in reason
        assert "Speaches is up but could not download org/first (HTTP 500)" in reason
        assert "internet access to the model hub" in reason
        assert speaches.state.as_dict()["models"]["org/first"]["error"] == str(raised.value)

        # The pooled connection the server closed is not the next request's problem.
        assert await speaches.is_installed("org/second") is True
        assert server.connections == 2
    finally:
        await speaches.aclose()


async def test_a_4xx_is_final_and_carries_the_backends_own_words(serve) -> None:
    server = await serve(lambda _m, _p: Reply(400, {"error": "model name is malformed"}))
    ollama = Ollama(server.url, "Bad Name")
    try:
        with pytest.raises(Refused) as raised:
            await ollama.is_installed()
        assert not is_transient(raised.value)
        assert "HTTP 400 from /api/tags: model name is malformed" in str(raised.value)
        assert ollama.state.reachable is True
        assert "model name is malformed" in (ollama.state.reason() or "")
    finally:
        await ollama.aclose()


async def test_an_answer_that_is_not_json_names_the_wrong_server(serve) -> None:
    server = await serve(lambda _m, _p: Reply(200, "<html>a router's page</html>"))
    ollama = Ollama(server.url, "llama3.2:1b")
    try:
        with pytest.raises(Refused, match="is not ollama"):
            await ollama.is_installed()
    finally:
        await ollama.aclose()


async def test_nothing_listening_is_unreachable_and_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    speaches = Speaches(url, ["org/model"])
    try:
        with pytest.raises(Unreachable) as raised:
            await speaches.is_installed("org/model")
        assert is_transient(raised.value)
        assert speaches.state.reachable is False
        assert speaches.state.reason() == f"speaches: unreachable at {url} (connection refused)"
    finally:
        await speaches.aclose()


errors = st.one_of(
    st.builds(Unreachable, st.sampled_from(["connection refused", "timed out"])),
    st.builds(ServerError, st.just("HTTP 5xx"), st.integers(500, 599)),
    st.builds(Refused, st.just("HTTP 4xx"), st.integers(400, 499)),
)


@settings(max_examples=300, deadline=None)
@given(error=errors, attempt=st.integers(1, 10_000), max_secs=st.floats(0.1, 600))
def test_one_retry_rule_backs_off_with_jitter_under_a_cap(error, attempt, max_secs) -> None:
    wait = retry_wait(error, attempt, max_secs)
    if isinstance(error, Refused):
        assert wait is None, "a 4xx is final"
        return
    assert wait is not None and 0 < wait <= max_secs
    assert wait <= FIRST_RETRY_SECS * 2.0 ** min(attempt - 1, 64) + FIRST_RETRY_SECS


async def test_the_watcher_retries_a_failing_backend_and_says_so_once(serve) -> None:
    failures = 5

    def answer(_method: str, _path: str) -> Reply:
        return Reply(503, "busy") if len(server.requests) <= failures else Reply(200, {"id": "m"})

    server = await serve(answer)
    speaches = Speaches(server.url, ["m"])
    watcher = BackendWatcher(speaches, retry_max_secs=0.05)
    try:
        with capture_logs() as logs:
            watcher.start()
            await wait_for(lambda: speaches.state.ready)
        assert len(server.requests) == failures + 1
        told = [entry for entry in logs if entry["event"] == "backend not ready, retrying"]
        assert len(told) == 1, "the same problem is logged once, not at every try"
        assert "HTTP 503" in told[0]["reason"]
        assert [entry["event"] for entry in logs].count("backend ready") == 1
    finally:
        await watcher.stop()
        await speaches.aclose()


async def test_the_watcher_does_not_hammer_a_final_refusal(serve) -> None:
    server = await serve(lambda _method, _path: Reply(404, {"detail": "Model 'nope' not found"}))
    speaches = Speaches(server.url, ["nope"])
    watcher = BackendWatcher(speaches, retry_max_secs=0.01, final_retry_secs=0.5)
    try:
        with capture_logs() as logs:
            watcher.start()
            await wait_for(lambda: len(server.paths("POST")) >= 2)
        told = [
            entry["reason"] for entry in logs if entry["event"] == "backend not ready, retrying"
        ]
        assert told[0] == "speaches: Speaches has no model named nope"
        first, second = [t for m, _p, t in server.requests if m == "POST"][:2]
        assert second - first >= 0.5, "a 4xx waits the long interval, not the backoff"
    finally:
        await watcher.stop()
        await speaches.aclose()


def test_the_defaults_bring_a_returning_backend_back_well_within_30_s() -> None:
    # A backend that comes back is tried again at the latest after the longest wait between
    # tries; a try already under way when it returns can take up to one request's timeout.
    # What is left of the 30 s goes to making it ready (a warm-up of a loaded-once model).
    longest_wait = load_settings({}).backend_retry_max_secs
    assert longest_wait + REQUEST_TIMEOUT_SECS <= 20


async def test_health_says_when_a_backend_that_is_down_is_tried_next() -> None:
    speaches = Speaches(f"http://127.0.0.1:{free_port()}", ["m"])
    watcher = BackendWatcher(speaches, retry_max_secs=0.3)
    try:
        watcher.start()
        await wait_for(lambda: speaches.state.retry_wait_secs == 0.3)  # the cap, reached
        report = speaches.state.as_dict()
        assert report["reachable"] is False and report["retry_wait_secs"] == 0.3
        assert 0 <= report.get("next_try_in_secs", 0) <= 0.3
    finally:
        await watcher.stop()
        await speaches.aclose()


@dataclass
class OllamaScript:
    """Ollama's model API with the model installed; ``loaded`` is what a restart clears."""

    model: str
    loaded: bool = False

    def answer(self, method: str, path: str) -> Reply:
        if path == "/api/tags":
            return Reply(200, {"models": [{"name": self.model}]})
        if path == "/api/ps":
            return Reply(200, {"models": [{"name": self.model}] if self.loaded else []})
        if (method, path) == ("POST", "/api/generate"):
            self.loaded = True
            return Reply(200, {"model": self.model, "done": True, "done_reason": "load"})
        return Reply(404, {"error": "no such route"})


async def test_an_ollama_that_forgot_the_model_has_it_warmed_again(serve) -> None:
    script = OllamaScript("llama3.2:1b")
    server = await serve(script.answer)
    ollama = Ollama(server.url, script.model)
    watcher = BackendWatcher(ollama, retry_max_secs=0.05, probe_secs=0.05)
    try:
        with capture_logs() as logs:
            watcher.start()
            await wait_for(lambda: ollama.state.ready)
            assert server.paths("POST") == ["/api/generate"]
            script.loaded = False  # restarted between two probes, or its keep-alive ran out
            await wait_for(lambda: len(server.paths("POST")) == 2)
            await wait_for(lambda: ollama.state.ready)
        lost = [entry for entry in logs if entry["event"] == "backend no longer ready"]
        assert [entry["reason"] for entry in lost] == ["ollama: loading llama3.2:1b"]
        assert [entry["event"] for entry in logs].count("backend ready") == 2
    finally:
        await watcher.stop()
        await ollama.aclose()


async def test_the_watcher_outlives_an_answer_no_rule_foresaw(serve) -> None:
    script = OllamaScript("llama3.2:1b")
    odd_answers = 3

    def answer(method: str, path: str) -> Reply:
        if path == "/api/tags" and len(server.paths("GET")) <= odd_answers:
            return Reply(200, {"models": ["llama3.2:1b"]})  # entries that are not objects
        return script.answer(method, path)

    server = await serve(answer)
    ollama = Ollama(server.url, script.model)
    watcher = BackendWatcher(ollama, retry_max_secs=0.05)
    try:
        with capture_logs() as logs:
            watcher.start()
            await wait_for(lambda: "unexpected answer" in (ollama.state.reason() or ""))
            await wait_for(lambda: ollama.state.ready)
        failed = [entry for entry in logs if entry["event"] == "backend check failed"]
        assert len(failed) == 1, "the same failure is logged once, not at every try"
        assert len(server.paths("GET")) > odd_answers
    finally:
        await watcher.stop()
        await ollama.aclose()
