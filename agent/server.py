"""HTTP routes: the page, WebRTC signalling, health and metrics. Thin: the work is elsewhere.

This is the supervisor's side: it checks each request, keeps the session limit, and
hands offers and candidates to the worker processes (``agent.workers``) that run the
conversations. Every error is a JSON object ``{"error": <a sentence for a person>,
"code": <word>}``; nothing answers with a stack trace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from aiohttp import web

from agent import metrics
from agent.backends import Backends
from agent.config import Settings
from agent.http_json import (
    BadRequest,
    errors_as_json,
    field,
    json_error,
    read_json_object,
    unknown_session,
)
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

SETTINGS = web.AppKey("settings", Settings)
WORKERS = web.AppKey("workers", WorkerPool)
BACKENDS = web.AppKey("backends", Backends)


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


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


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
        )
    try:
        return _relayed(await workers.new_session(offer))
    except SessionsFull:
        metrics.session_refused("full")
        n = workers.limit
        others = "another conversation" if n == 1 else f"{n} other conversations"
        return json_error(
            503, "full", f"The assistant is busy with {others}; try again in a moment."
        )
    except AllBusy:
        metrics.session_refused("busy")
        return json_error(
            503,
            "busy",
            "The assistant is too busy to take another conversation without slowing down the "
            "ones it has; try again in a minute.",
        )
    except NoWorker:
        metrics.session_refused("unavailable")
        return json_error(
            503, "unavailable", "The assistant is still starting up; try again in a moment."
        )
    except WorkerLost:
        return _worker_lost("The assistant had a problem starting this conversation")


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
    for item in field(body, "candidates", list):
        if not isinstance(item, dict):
            raise BadRequest("Each of 'candidates' must be an object.")
        index = item.get("sdp_mline_index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise BadRequest("'sdp_mline_index' must be a number.")
        mid = item.get("sdp_mid")
        candidates.append(
            {
                "candidate": field(item, "candidate", str),
                "sdp_mid": str(mid) if mid is not None else None,
                "sdp_mline_index": index,
            }
        )
    body = {"pc_id": pc_id, "candidates": candidates}
    return await _to_owner(request.app[WORKERS], pc_id, "/candidates", body)


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
        middlewares=[errors_as_json, same_origin_api], client_max_size=MAX_BODY_BYTES
    )
    app[SETTINGS] = settings
    app[WORKERS] = workers
    app[BACKENDS] = Backends(settings)
    app.router.add_get("/", index)
    app.router.add_post("/api/offer", post_offer)
    app.router.add_patch("/api/offer", patch_offer)
    app.router.add_get("/api/config", client_config)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_static("/static/", STATIC_DIR)

    async def lifecycle(app: web.Application):
        app[BACKENDS].start()
        app[WORKERS].start()
        yield
        await app[WORKERS].stop()
        await app[BACKENDS].stop()

    app.cleanup_ctx.append(lifecycle)
    return app
