"""HTTP routes: the page, WebRTC signalling, health and metrics. Thin: the work is elsewhere.

This is the supervisor's side: it checks each request, keeps the session limit, and
hands offers and candidates to the worker processes (``agent.workers``) that run the
conversations. Every error is a JSON object ``{"error": <a sentence for a person>,
"code": <word>}``; nothing answers with a stack trace.
"""

from __future__ import annotations

import math
import mimetypes
import re
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from aiohttp import web

from agent import access, metrics
from agent.backends import Backends
from agent.config import Settings
from agent.http_json import (
    RETRY_LATER_SECS,
    RETRY_SOON_SECS,
    BadRequest,
    errors_as_json,
    field,
    json_error,
    read_body,
    read_json_object,
    too_large,
    unknown_session,
)
from agent.rate_limit import NewSessionLimit, client_address
from agent.sdp_check import MAX_MEDIA_SECTIONS, candidate_problem, offer_problem
from agent.workers import (
    AllBusy,
    NoWorker,
    SessionsFull,
    UnknownSession,
    WorkerLost,
    WorkerPool,
)

log = structlog.get_logger("server")

STATIC_DIR = Path(str(files("agent") / "static"))
MAX_BODY_BYTES = 256 * 1024  # an SDP offer is a few kB
MAX_CANDIDATES = 100  # in one PATCH; a browser finds a handful and sends them as found
SDP_MID = re.compile(r"[!-~]{0,64}")  # a browser's mids are "0", "1", …
PAGE_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")  # no dot files, no ..

SETTINGS = web.AppKey("settings", Settings)
WORKERS = web.AppKey("workers", WorkerPool)
BACKENDS = web.AppKey("backends", Backends)
NEW_SESSIONS = web.AppKey("new_sessions", NewSessionLimit)


@web.middleware
async def body_size_limit(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every route takes at most MAX_BODY_BYTES, including those that ignore their body."""
    declared = request.content_length
    if declared is not None and declared > request.client_max_size:
        return too_large(request.client_max_size)  # without reading a byte of it
    if request.body_exists:
        await read_body(request)  # kept for the handler; over the limit: 413
    return await handler(request)


@web.middleware
async def same_origin_api(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse API calls made by pages from other sites (a browser always sends Origin)."""
    origin = request.headers.get("Origin")
    if request.path.startswith("/api/") and origin and _origin_host(origin) != request.host:
        log.warning("cross-origin request refused", origin=origin, path=request.path)
        return json_error(403, "cross_origin", "Requests from other web pages are not allowed.")
    return await handler(request)


def _origin_host(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc
    except ValueError:  # not even a URL ("http://[")
        return None


async def index(_request: web.Request) -> web.Response:
    return page_file("index.html", headers={"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.Response:
    return page_file(request.match_info["name"])


def page_file(name: str, headers: dict[str, str] | None = None) -> web.Response:
    """One of the page's files, whole: they are small, so there are no ranges or
    conditional requests to get wrong, and anything else is a 404 in words."""
    path = STATIC_DIR / name
    if not PAGE_FILE_NAME.fullmatch(name) or not path.is_file():
        raise web.HTTPNotFound()
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    charset = "utf-8" if content_type.startswith("text/") else None
    return web.Response(
        body=path.read_bytes(), content_type=content_type, charset=charset, headers=headers
    )


async def post_offer(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    offer = {
        "sdp": field(body, "sdp", str),
        "type": field(body, "type", str),
        "pc_id": field(body, "pc_id", str, required=False),
        "restart_pc": field(body, "restart_pc", bool, required=False) or False,
    }
    if offer["type"] != "offer":
        raise BadRequest("'type' must be \"offer\".")
    if not offer["sdp"].strip():
        raise BadRequest("'sdp' is empty.")
    problem = offer_problem(offer["sdp"])
    if problem:
        raise BadRequest(problem)
    workers = request.app[WORKERS]
    if offer["pc_id"] is not None:
        return await _to_owner(workers, offer["pc_id"], "/offer", offer)
    backends = request.app[BACKENDS]
    if not backends.ready:
        metrics.session_refused("unavailable")
        return json_error(
            503,
            "unavailable",
            f"The assistant is not ready yet: {backends.reason()}. Try again in a moment.",
            RETRY_SOON_SECS,
        )
    limit = request.app[NEW_SESSIONS]
    client = client_address(request.remote)
    wait_secs = limit.take(client, time.monotonic())
    if wait_secs is not None:
        return _too_many(limit.per_minute, wait_secs)
    try:
        return _relayed(await workers.new_session(offer))
    except (SessionsFull, AllBusy, NoWorker) as refusal:
        limit.give_back(client)  # no worker looked at it
        return _refused(workers, refusal)
    except WorkerLost:
        return _worker_lost("The assistant had a problem starting this conversation")


def _refused(workers: WorkerPool, refusal: Exception) -> web.Response:
    """A new conversation turned away before any worker saw it, in words."""
    if isinstance(refusal, SessionsFull):
        metrics.session_refused("full")
        n = workers.limit
        others = "another conversation" if n == 1 else f"{n} other conversations"
        return json_error(
            503,
            "full",
            f"The assistant is busy with {others}; try again in a moment.",
            RETRY_SOON_SECS,
        )
    if isinstance(refusal, AllBusy):
        metrics.session_refused("busy")
        return json_error(
            503,
            "busy",
            "The assistant is too busy to take another conversation without slowing down the "
            "ones it has; try again in a minute.",
            RETRY_LATER_SECS,
        )
    metrics.session_refused("unavailable")
    return json_error(
        503,
        "unavailable",
        "The assistant is still starting up; try again in a moment.",
        RETRY_SOON_SECS,
    )


def _too_many(per_minute: int, wait_secs: float) -> web.Response:
    metrics.session_refused("rate")
    seconds = max(1, math.ceil(wait_secs))
    return json_error(
        429,
        "rate",
        f"This device has started {per_minute} conversations in the last minute, the most "
        f"it may; try again in {seconds} seconds.",
        seconds,
    )


async def _to_owner(
    workers: WorkerPool, pc_id: str, path: str, body: dict[str, Any]
) -> web.Response:
    try:
        return _relayed(await workers.for_session(pc_id, path, body))
    except UnknownSession:
        return unknown_session()
    except WorkerLost:
        return _worker_lost("The part of the assistant holding this conversation stopped")


def _relayed(response: httpx.Response) -> web.Response:
    """A worker's answer as it is: it already speaks in the API's JSON."""
    return web.Response(
        status=response.status_code, body=response.content, content_type="application/json"
    )


def _worker_lost(what_happened: str) -> web.Response:
    return json_error(503, "unavailable", f"{what_happened}; start a new one.")


async def patch_offer(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    pc_id = field(body, "pc_id", str)
    candidates = []
    items = field(body, "candidates", list)
    if len(items) > MAX_CANDIDATES:
        raise BadRequest(f"At most {MAX_CANDIDATES} candidates may be sent at once.")
    for item in items:
        candidates.append(_candidate(item))
    body = {"pc_id": pc_id, "candidates": candidates}
    return await _to_owner(request.app[WORKERS], pc_id, "/candidates", body)


def _candidate(item: Any) -> dict[str, Any]:
    """One trickled ICE candidate, checked so that the worker's WebRTC stack can read it."""
    if not isinstance(item, dict):
        raise BadRequest("Each of 'candidates' must be an object.")
    index = item.get("sdp_mline_index")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise BadRequest("'sdp_mline_index' must be a number.")
    if index is not None and not 0 <= index < MAX_MEDIA_SECTIONS:
        raise BadRequest(f"'sdp_mline_index' must be from 0 to {MAX_MEDIA_SECTIONS - 1}.")
    mid = item.get("sdp_mid")
    if mid is not None:
        mid = str(mid)
        if not SDP_MID.fullmatch(mid):
            raise BadRequest("'sdp_mid' must be at most 64 letters, digits or signs.")
    line = field(item, "candidate", str)
    problem = candidate_problem(line)
    if problem:
        raise BadRequest(problem)
    if line and mid is None and index is None:
        raise BadRequest("Each candidate needs 'sdp_mid' or 'sdp_mline_index'.")
    return {"candidate": line, "sdp_mid": mid, "sdp_mline_index": index}


async def health(request: web.Request) -> web.Response:
    backends = request.app[BACKENDS]
    workers = request.app[WORKERS]
    ready = backends.ready and workers.ready
    body: dict[str, Any] = {
        "status": "ok" if ready else "degraded",
        "sessions": {"active": workers.active, "max": workers.limit},
        "backends": backends.report(),
        "workers": workers.report(),
    }
    if not backends.ready:
        body["reason"] = backends.reason()
    elif not workers.ready:
        body["reason"] = "no worker process is ready yet"
    return web.json_response(body, status=200 if ready else 503)


async def prometheus_metrics(_request: web.Request) -> web.Response:
    """Every process's metrics, in the Prometheus text format (see agent/metrics.py)."""
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def client_config(request: web.Request) -> web.Response:
    """What the page needs to set up its peer connection: the ICE (STUN/TURN) servers."""
    return web.json_response({"iceServers": request.app[SETTINGS].ice_servers_for_browser})


def create_app(settings: Settings, workers: WorkerPool) -> web.Application:
    app = web.Application(
        middlewares=[
            errors_as_json,
            body_size_limit,
            same_origin_api,
            *access.token_checks(settings.agent_token),
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[WORKERS] = workers
    app[BACKENDS] = Backends(settings)
    app[NEW_SESSIONS] = NewSessionLimit(settings.new_sessions_per_minute)
    app.router.add_get("/", index)
    app.router.add_post("/api/offer", post_offer)
    app.router.add_patch("/api/offer", patch_offer)
    app.router.add_get("/api/config", client_config)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/static/{name}", static_file)

    async def lifecycle(app: web.Application):
        app[BACKENDS].start()
        app[WORKERS].start()
        yield
        await app[WORKERS].stop()
        await app[BACKENDS].stop()

    app.cleanup_ctx.append(lifecycle)
    return app
