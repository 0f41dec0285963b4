"""Ollama stand-in: Ollama's HTTP protocol, a deterministic reply rule and injectable faults.

Shapes follow Ollama's ``docs/api.md`` and its OpenAI-compatibility layer (``/v1``)::

    python -m tests.standins.ollama --installed llama3.2:1b --port 0

prints exactly one line, ``LISTENING http://127.0.0.1:PORT``, once it accepts connections.
``GET /_standin/requests`` returns ``{"chat": [...], "pull": [...], "generate": [...]}``: the
JSON bodies received, in order (``DELETE`` clears them).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.standins.process import serve

VERSION = "0.12.6-standin"
GREETING = "Hello! I am your home voice assistant. How can I help you today?"
DEFAULT_PULLABLE = ("llama3.2:3b", "llama3.2:1b", "gemma3:1b", "qwen2.5:0.5b")
UNKNOWN_MODEL = "pull model manifest: file does not exist"
PULL_BROKEN = "max retries exceeded: unexpected EOF"
DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "1.2B",
    "quantization_level": "Q4_K_M",
}
PULL_TICK_S = 0.02  # one progress line per tick while bytes "arrive" (Ollama: 60 ms)
_TRAILING = " .!?,;:…"


def _text(content: Any) -> str:
    """A message's text (a string or OpenAI content parts), one-spaced, end punctuation cut."""
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        content = " ".join(str(p.get("text", "")) for p in parts)
    if not isinstance(content, str):
        return ""
    return " ".join(content.split()).rstrip(_TRAILING)


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The stand-in's answer: quotes the last two user messages, or greets when there are none.

    User messages with no words (empty, blank, only punctuation) are ignored.
    """
    users = [
        text
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user" and (text := _text(m.get("content")))
    ]
    if not users:
        return GREETING
    reply = f"You said: {users[-1]}."
    if len(users) > 1:
        reply += f" Before that, you said: {users[-2]}."
    return reply


def canonical(name: str) -> str:
    """Ollama's model names default to the ``latest`` tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _expiry(keep_alive: Any) -> datetime | None:
    """When a loaded model unloads; None means unload now (``keep_alive: 0``)."""
    seconds = 300.0
    if isinstance(keep_alive, int | float):
        seconds = float(keep_alive)
    elif isinstance(keep_alive, str):
        match = re.fullmatch(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?", keep_alive.strip())
        if match:
            unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match[2]]
            seconds = float(match[1]) * unit
    if seconds == 0:
        return None
    return datetime.now(UTC) + timedelta(days=100_000 if seconds < 0 else 0, seconds=abs(seconds))


@dataclass
class Options:
    installed: tuple[str, ...] = ()
    pullable: tuple[str, ...] = DEFAULT_PULLABLE
    model_size_bytes: int = 3_000_000
    pull_bytes_per_sec: int = 30_000_000  # 0 = as fast as possible
    fail_pull_after_bytes: int | None = None  # per pull request
    ttfb_ms: float = 0
    tokens_per_sec: float = 0  # 0 = as fast as possible
    fail_chat_after_tokens: int | None = None
    stall_chat_after_tokens: int | None = None
    reply: str | None = None  # answer every chat with this instead of the rule (benchmarks)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "invalid request body"}), content_type="application/json"
        )
    return body


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _openai_error(status: int, message: str) -> web.Response:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    error = {"message": message, "type": kind, "param": None, "code": None}
    return web.json_response({"error": error}, status=status)


class OllamaStandin:
    def __init__(self, options: Options) -> None:
        self.opts = options
        self.installed = {canonical(m): _now() for m in options.installed}
        self.pullable = {canonical(m) for m in options.pullable}
        self.loaded: dict[str, datetime] = {}
        self.partial: dict[str, dict[str, int]] = {}  # model -> layer digest -> bytes received
        self.pull_locks: dict[str, asyncio.Lock] = {}
        self.log: dict[str, list[dict[str, Any]]] = {"chat": [], "pull": [], "generate": []}
        self.stopping = asyncio.Event()  # releases stalled chat streams at shutdown

    def _entry(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": self.installed[name],
            "size": self.opts.model_size_bytes,
            "digest": _sha256(name),
            "details": DETAILS,
        }

    def _layers(self, name: str) -> list[tuple[str, int]]:
        size = self.opts.model_size_bytes
        sizes = [size - 300, 200, 100] if size >= 1000 else [size]
        return [(f"sha256:{_sha256(f'{name}/{i}')}", n) for i, n in enumerate(sizes)]

    def _load(self, name: str, keep_alive: Any) -> None:
        expires = _expiry(keep_alive)
        if expires is None:
            self.loaded.pop(name, None)
        else:
            self.loaded[name] = expires

    # --- model management -------------------------------------------------------------

    async def tags(self, _: web.Request) -> web.Response:
        return web.json_response({"models": [self._entry(n) for n in self.installed]})

    async def show(self, request: web.Request) -> web.Response:
        body = await _body(request)
        model = str(body.get("model") or body.get("name") or "")
        name = canonical(model)
        if name not in self.installed:
            return _error(404, f"model '{model}' not found")
        return web.json_response(
            {
                "license": "",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {name}\n',
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": DETAILS,
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
                "capabilities": ["completion"],
                "modified_at": self.installed[name],
            }
        )

    async def ps(self, _: web.Request) -> web.Response:
        now = datetime.now(UTC)
        models = [
            {
                **self._entry(name),
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
                "size_vram": 0,
                "context_length": 4096,
            }
            for name, expires in self.loaded.items()
            if expires > now and name in self.installed
        ]
        return web.json_response({"models": models})

    async def _pull_events(self, name: str) -> AsyncIterator[dict[str, Any]]:
        yield {"status": "pulling manifest"}
        if name not in self.installed and name not in self.pullable:
            yield {"error": UNKNOWN_MODEL}
            return
        received = self.partial.setdefault(name, {})
        budget = self.opts.fail_pull_after_bytes
        bps = self.opts.pull_bytes_per_sec
        for digest, total in self._layers(name):
            if name in self.installed:
                received[digest] = total
            got = received.setdefault(digest, 0)
            progress = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
            yield {**progress, "completed": got} if got else progress
            while got < total:
                if budget is not None and budget <= 0:
                    yield {"error": PULL_BROKEN}
                    return
                step = max(1, int(bps * PULL_TICK_S)) if bps > 0 else -(-total // 4)
                step = min(step, total - got, budget if budget is not None else step)
                if budget is not None:
                    budget -= step
                if bps > 0:
                    await asyncio.sleep(step / bps)
                got = received[digest] = got + step
                yield {**progress, "completed": got}
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        self.installed[name] = _now()
        self.partial.pop(name, None)
        yield {"status": "success"}

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        self.log["pull"].append(body)
        name = canonical(str(body.get("model") or body.get("name") or ""))
        async with self.pull_locks.setdefault(name, asyncio.Lock()):
            events = self._pull_events(name)
            if body.get("stream") is False:
                last: dict[str, Any] = {}
                async for event in events:
                    if "error" in event:
                        return _error(500, event["error"])
                    last = event
                return web.json_response(last)
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            try:
                async for event in events:
                    await response.write(json.dumps(event).encode() + b"\n")
                await response.write_eof()
            except ConnectionError:
                pass  # the client went away: what arrived so far is kept for the next pull
            return response

    # --- inference ----------------------------------------------------------------------

    async def _model_request(
        self, request: web.Request, kind: str, error: Callable[[int, str], web.Response]
    ) -> tuple[dict[str, Any], str, str]:
        """The request's JSON body (logged under ``kind``), its model as named, and the
        model's canonical name. A model that is not installed ends the request with
        ``error``'s 404."""
        body = await _body(request)
        self.log[kind].append(body)
        model = str(body.get("model", ""))
        name = canonical(model)
        if name not in self.installed:
            refusal = error(404, f"model '{model}' not found")
            raise web.HTTPNotFound(body=refusal.body, content_type=refusal.content_type)
        return body, model, name

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body, model, name = await self._model_request(request, "generate", _error)
        self._load(name, body.get("keep_alive"))
        base = {"model": model, "created_at": _now(), "response": "", "done": True}
        if not body.get("prompt"):
            reason = "load" if name in self.loaded else "unload"
            return web.json_response({**base, "done_reason": reason})
        text = reply_for([{"role": "user", "content": body["prompt"]}])
        if body.get("stream") is False:
            return web.json_response({**base, "response": text, "done_reason": "stop"})
        lines = [{**base, "response": text, "done": False}, {**base, "done_reason": "stop"}]
        return web.Response(
            body="".join(json.dumps(line) + "\n" for line in lines),
            content_type="application/x-ndjson",
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, model, name = await self._model_request(request, "chat", _openai_error)
        self._load(name, None)
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        words = (self.opts.reply or reply_for(messages)).split(" ")
        tokens = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        base = {
            "id": f"chatcmpl-{random.randint(0, 998)}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
        }
        fail, stall = self.opts.fail_chat_after_tokens, self.opts.stall_chat_after_tokens
        gap = 1 / self.opts.tokens_per_sec if self.opts.tokens_per_sec > 0 else 0.0
        await asyncio.sleep(self.opts.ttfb_ms / 1000)
        if not body.get("stream"):
            await asyncio.sleep(gap * (len(tokens) - 1))
            if fail is not None and fail < len(tokens) and request.transport is not None:
                request.transport.close()
            elif stall is not None and stall < len(tokens):
                await self.stopping.wait()
            message = {"role": "assistant", "content": "".join(tokens)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        try:
            for i, token in enumerate(tokens):
                if i == fail and request.transport is not None:
                    request.transport.close()  # a crash: the stream ends without [DONE]
                    return response
                if i == stall:
                    await self.stopping.wait()  # silent, connection kept open
                    return response
                if i:
                    await asyncio.sleep(gap)
                delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
                await send([{"index": 0, "delta": delta, "finish_reason": None}])
            await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if (body.get("stream_options") or {}).get("include_usage"):
                await send([], usage=usage)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    # --- test hooks ---------------------------------------------------------------------

    async def release_stalls(self, _: web.Application) -> None:
        self.stopping.set()

    async def requests(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            for entries in self.log.values():
                entries.clear()
        return web.json_response(self.log)


def build_app(**options: Any) -> web.Application:
    """The stand-in as an aiohttp app; keyword arguments are the fields of `Options`."""
    standin = OllamaStandin(Options(**options))
    app = web.Application()
    app.on_shutdown.append(standin.release_stalls)
    app.add_routes(
        [
            web.get("/", lambda _: web.Response(text="Ollama is running")),
            web.get("/api/version", lambda _: web.json_response({"version": VERSION})),
            web.get("/api/tags", standin.tags),
            web.post("/api/show", standin.show),
            web.get("/api/ps", standin.ps),
            web.post("/api/pull", standin.pull),
            web.post("/api/generate", standin.generate),
            web.post("/v1/chat/completions", standin.chat_completions),
            web.get("/_standin/requests", standin.requests),
            web.delete("/_standin/requests", standin.requests),
        ]
    )
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.standins.ollama",
        description="An Ollama stand-in for tests; prints 'LISTENING <url>' once it is ready.",
    )
    add = p.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0 (default) picks a free port")
    add("--installed", action="append", default=[], metavar="MODEL", help="repeatable")
    add("--pullable", action="append", metavar="MODEL", help="what the registry has; repeatable")
    add("--model-size-bytes", type=int, default=Options.model_size_bytes)
    add("--pull-bytes-per-sec", type=int, default=Options.pull_bytes_per_sec, help="0 = no wait")
    add("--fail-pull-after-bytes", type=int, help="every pull breaks after N more bytes")
    add("--ttfb-ms", type=float, default=0.0, help="delay before the first token")
    add("--tokens-per-sec", type=float, default=0.0, help="0 = as fast as possible")
    add("--fail-chat-after-tokens", type=int, help="drop the connection after N tokens")
    add("--stall-chat-after-tokens", type=int, help="go silent after N tokens, stay connected")
    add("--reply", metavar="TEXT", help="answer every chat with TEXT instead of quoting the user")
    return p


def main(argv: list[str] | None = None) -> None:
    options = vars(_parser().parse_args(argv))
    host, port = options.pop("host"), options.pop("port")
    options["installed"] = tuple(options["installed"])
    options["pullable"] = tuple(options["pullable"] or DEFAULT_PULLABLE)
    asyncio.run(serve(build_app(**options), host, port))


if __name__ == "__main__":
    main()
