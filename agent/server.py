"""HTTP routes: the page, WebRTC signalling and health. Thin: the work is elsewhere.

Every error is a JSON object ``{"error": <a sentence for a person>, "code": <word>}``;
nothing answers with a stack trace.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from agent.backends import Backends
from agent.config import Settings
from agent.peer import IceCandidate
from agent.sessions import (
    InvalidOffer,
    SessionManager,
    SessionsFull,
    UnknownSession,
)

log = structlog.get_logger("server")

STATIC_DIR = Path(str(files("agent") / "static"))
MAX_BODY_BYTES = 256 * 1024  # an SDP offer is a few kB

SETTINGS = web.AppKey("settings", Settings)
SESSIONS = web.AppKey("sessions", SessionManager)
BACKENDS = web.AppKey("backends", Backends)


class BadRequest(Exception):
    """The request body is not what the route takes; the message says what is wrong."""


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as error:
        return json_error(400, "bad_request", str(error))
    except web.HTTPException as error:
        if error.status < 400 or not request.path.startswith("/api/"):
            raise
        return json_error(error.status, "http_error", error.reason)
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return json_error(500, "internal", "Something went wrong in the agent; see its log.")


@web.middleware
async def same_origin_api(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse API calls made by pages from other sites (a browser always sends Origin)."""
    origin = request.headers.get("Origin")
    if request.path.startswith("/api/") and origin and urlsplit(origin).netloc != request.host:
        log.warning("cross-origin request refused", origin=origin, path=request.path)
        return json_error(403, "cross_origin", "Requests from other web pages are not allowed.")
    return await handler(request)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest("The body must be JSON (Content-Type: application/json).")
    try:
        body = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    return body


def _field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    # JSON true/false are Python ints too: only a bool field accepts them.
    wrong_kind = not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
    if wrong_kind:
        article = {str: "a string", bool: "true or false", int: "a number", list: "a list"}
        raise BadRequest(f"'{name}' must be {article[kind]}.")
    return value


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def post_offer(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    sdp = _field(body, "sdp", str)
    sdp_type = _field(body, "type", str)
    pc_id = _field(body, "pc_id", str, required=False)
    restart_pc = _field(body, "restart_pc", bool, required=False) or False
    if sdp_type != "offer":
        raise BadRequest("'type' must be \"offer\".")
    if not sdp.strip():
        raise BadRequest("'sdp' is empty.")
    sessions = request.app[SESSIONS]
    backends = request.app[BACKENDS]
    if pc_id is None and not backends.ready:
        return json_error(
            503,
            "unavailable",
            f"The assistant is not ready yet: {backends.reason()}. Try again in a moment.",
        )
    try:
        answer = await sessions.offer(sdp, sdp_type, pc_id=pc_id, restart_pc=restart_pc)
    except SessionsFull:
        others = (
            "another conversation"
            if sessions.limit == 1
            else f"{sessions.limit} other conversations"
        )
        return json_error(
            503, "full", f"The assistant is busy with {others}; try again in a moment."
        )
    except UnknownSession:
        return json_error(404, "unknown_session", "That conversation has ended; start a new one.")
    except InvalidOffer as error:
        raise BadRequest(str(error)) from error
    return web.json_response(answer)


async def patch_offer(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    pc_id = _field(body, "pc_id", str)
    candidates = []
    for item in _field(body, "candidates", list):
        if not isinstance(item, dict):
            raise BadRequest("Each of 'candidates' must be an object.")
        index = item.get("sdp_mline_index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise BadRequest("'sdp_mline_index' must be a number.")
        mid = item.get("sdp_mid")
        candidates.append(
            IceCandidate(
                candidate=_field(item, "candidate", str),
                sdp_mid=str(mid) if mid is not None else None,
                sdp_mline_index=index,
            )
        )
    try:
        await request.app[SESSIONS].add_candidates(pc_id, candidates)
    except UnknownSession:
        return json_error(404, "unknown_session", "That conversation has ended; start a new one.")
    except ValueError as error:  # aiortc could not parse a candidate line
        raise BadRequest(f"A candidate could not be read: {error}") from error
    return web.json_response({})


async def health(request: web.Request) -> web.Response:
    backends = request.app[BACKENDS]
    sessions = request.app[SESSIONS]
    body: dict[str, Any] = {
        "status": "ok" if backends.ready else "degraded",
        "sessions": {"active": sessions.active, "max": sessions.limit},
        "backends": backends.report(),
    }
    if not backends.ready:
        body["reason"] = backends.reason()
    return web.json_response(body, status=200 if backends.ready else 503)


async def client_config(request: web.Request) -> web.Response:
    """What the page needs to set up its peer connection: the ICE (STUN/TURN) servers."""
    return web.json_response({"iceServers": request.app[SETTINGS].ice_servers_for_browser})


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[errors_as_json, same_origin_api], client_max_size=MAX_BODY_BYTES
    )
    app[SETTINGS] = settings
    app[SESSIONS] = SessionManager(settings)
    app[BACKENDS] = Backends(settings)
    app.router.add_get("/", index)
    app.router.add_post("/api/offer", post_offer)
    app.router.add_patch("/api/offer", patch_offer)
    app.router.add_get("/api/config", client_config)
    app.router.add_get("/health", health)
    app.router.add_static("/static/", STATIC_DIR)

    async def lifecycle(app: web.Application):
        app[BACKENDS].start()
        yield
        await app[SESSIONS].close_all()
        await app[BACKENDS].stop()

    app.cleanup_ctx.append(lifecycle)
    return app
