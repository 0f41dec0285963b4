"""The optional access token (AGENT_TOKEN): who may talk to the assistant.

Without a token nothing is checked: anyone who can reach the port can use it. With one,
every request needs ``Authorization: Bearer <token>`` except the page and its files (they
hold no secret, and the page is what asks for the token) and ``/health``, which answers
everyone but tells only "ok" or "degraded" unless the token comes along.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.http_json import json_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

HEALTH = "/health"


def token_checks(token: str) -> list[Middleware]:
    """The middleware that enforces ``token``; none when it is empty."""
    if not token:
        return []
    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = _bearer(request)
        if given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            return await handler(request)
        if _public(request.path):
            return await handler(request)
        if request.path == HEALTH:
            return _status_only(await handler(request))
        return _refused(given)

    return [require_token]


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _public(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


def _status_only(response: web.StreamResponse) -> web.Response:
    """Whether the assistant is ready, and nothing about its backends, sessions or workers."""
    status = "ok" if response.status == 200 else "degraded"
    return web.json_response({"status": status}, status=response.status)


def _refused(given: str | None) -> web.Response:
    sentence = (
        "This assistant is protected by an access token, and none was given."
        if not given
        else "That access token is not the right one."
    )
    response = json_error(401, "unauthorized", sentence)
    response.headers["WWW-Authenticate"] = 'Bearer realm="voice-agent"'
    return response
