"""The kind of a backend failure, from real failures of a real server on 127.0.0.1: as the
OpenAI client (Pipecat's services) and the agent's own backend client raise them, and as
Pipecat's and the agent's services report them in an ErrorFrame."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx2
import openai
import pytest
from aiohttp import web
from pipecat.frames.frames import ErrorFrame

from agent.backend_errors import error_frame_kind, error_kind
from agent.backends.client import Backend, BackendError


async def _answer_500(_request: web.Request) -> web.Response:
    return web.json_response({"detail": "the model crashed"}, status=500)


async def _answer_404(_request: web.Request) -> web.Response:
    return web.json_response({"detail": "Model 'x' is not installed locally"}, status=404)


async def _answer_late(_request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({})


async def _cut_midway(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.content_length = 100_000
    await response.prepare(request)
    chunk = b'{"choices":[{"index":0,"delta":{"content":"Hel"}}],"id":"1","model":"m"}'
    await response.write(b"data: " + chunk + b"\n\n")
    assert request.transport is not None
    request.transport.close()
    return response


@pytest.fixture
async def failing_server() -> AsyncIterator[str]:
    """A backend on 127.0.0.1 that fails in each way at its own path prefix."""
    app = web.Application()
    for prefix, handler in [
        ("e500", _answer_500),
        ("e404", _answer_404),
        ("late", _answer_late),
        ("cut", _cut_midway),
    ]:
        app.router.add_route("*", f"/{prefix}/{{tail:.*}}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _base_url(failing_server: str, prefix: str) -> str:
    """Where a request fails in the way ``prefix`` names: "closed" is a port nobody listens on."""
    if prefix != "closed":
        return f"{failing_server}/{prefix}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed with the probe


async def _openai_failure(base_url: str, call: str) -> openai.OpenAIError | httpx2.HTTPError:
    client = openai.AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0, timeout=0.5)
    try:
        if call == "chat":
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async for _chunk in stream:
                pass
        else:  # speech, streamed as the agent's text-to-speech does
            async with client.audio.speech.with_streaming_response.create(
                model="m", input="hi", voice="af_heart", response_format="pcm"
            ) as response:
                async for _chunk in response.iter_bytes(1024):
                    pass
    except (openai.OpenAIError, httpx2.HTTPError) as error:
        return error
    finally:
        await client.close()
    raise AssertionError(f"{call} at {base_url} did not fail")


@pytest.mark.parametrize(
    ("prefix", "call", "kind", "text_kind"),
    [
        ("e500", "chat", "http_5xx", "http_5xx"),
        ("e404", "speech", "http_4xx", "http_4xx"),
        ("late", "chat", "timeout", "timeout"),
        # openai wraps a broken stream in APIConnectionError, whose text says only
        # "Connection error."
        ("cut", "chat", "cut", "connection"),
        ("cut", "speech", "cut", "cut"),  # a streamed body raises the transport's own error
        ("closed", "chat", "connection", "connection"),
    ],
)
async def test_the_kind_of_a_real_openai_client_failure(
    failing_server: str, prefix: str, call: str, kind: str, text_kind: str
) -> None:
    error = await _openai_failure(f"{_base_url(failing_server, prefix)}/v1", call)
    assert error_kind(error) == kind
    assert error_frame_kind(ErrorFrame(error="failed", exception=error)) == kind
    # Pipecat's OpenAI speech-to-text reports the error's text only.
    assert error_frame_kind(ErrorFrame(error=f"Unknown error occurred: {error}")) == text_kind


@pytest.mark.parametrize(
    ("prefix", "kind"),
    [("e500", "http_5xx"), ("e404", "http_4xx"), ("late", "timeout"), ("closed", "connection")],
)
async def test_the_kind_of_a_failure_of_the_agents_own_backend_client(
    failing_server: str, prefix: str, kind: str
) -> None:
    backend = Backend(_base_url(failing_server, prefix))
    try:
        with pytest.raises(BackendError) as raised:
            await backend.request("GET", "/api/tags", timeout=0.5)
    finally:
        await backend.aclose()
    assert error_kind(raised.value) == kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [  # what agent.services' own Speaches services say
        ("Speaches did not transcribe within 30 s", "timeout"),
        ("Speaches could not speak (503): the model crashed", "http_5xx"),
        ("Speaches could not speak (404): Model 'x' is not installed locally", "http_4xx"),
        ("Speaches text-to-speech failed: Connection error.", "connection"),
        ("TTS context 3 completed with no audio", "other"),
    ],
)
def test_the_kind_of_an_error_that_is_only_text(text: str, kind: str) -> None:
    assert error_frame_kind(ErrorFrame(error=text)) == kind
