"""A worker process: its own conversations' pipelines and WebRTC stack, behind a Unix socket.

The supervisor (``agent.workers``) forks it (``agent.worker_processes``), hands it
requests it has already checked, and reads its events: a snapshot of its sessions when it
connects, then every session started, renamed (ICE restart) or ended, and its load every
second, with a census of what it holds (``agent.census``). A worker stops on SIGTERM, or
when the supervisor is gone (it died), so no worker outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from aiohttp import web

from agent import census, metrics
from agent.config import Settings
from agent.http_json import (
    RETRY_SOON_SECS,
    BadRequest,
    errors_as_json,
    json_error,
    read_json_object,
    unknown_session,
)
from agent.ice import offer_only
from agent.loop_lag import LoopLag
from agent.peer import IceCandidate
from agent.sessions import InvalidOffer, SessionManager, SessionsFull, UnknownSession

log = structlog.get_logger("worker")

LOAD_EVERY_SECS = 1.0
# A conversation's pipeline is full of reference cycles, so what it holds (voice models'
# inference sessions and their threads, HTTP clients and their sockets, the peer
# connection) is freed only by the garbage collector's full pass, which may come much
# later. The worker freezes what it loaded at start, so that a full pass looks only at
# what came after (a few ms, not a tenth of a second), and runs one this long after its
# last conversation ended, once the session's own clean-up is done; then it hands the
# freed memory back to the system, which the C allocator would otherwise keep.
COLLECT_WHEN_IDLE_AFTER_SECS = 1.0


class EventFeed:
    """Session changes and load reports, to whoever listens (the supervisor)."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, event: dict[str, Any]) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)


SESSIONS = web.AppKey("sessions", SessionManager)
FEED = web.AppKey("feed", EventFeed)


async def offer(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    try:
        answer = await request.app[SESSIONS].offer(
            body["sdp"], body["type"], pc_id=body.get("pc_id"), restart_pc=body["restart_pc"]
        )
    except SessionsFull:  # the supervisor counts first; this is only a safety net
        return json_error(
            503, "full", "The assistant is busy; try again in a moment.", RETRY_SOON_SECS
        )
    except UnknownSession:
        return unknown_session()
    except InvalidOffer as error:
        raise BadRequest(str(error)) from error
    return web.json_response(answer)


async def candidates(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    try:
        await request.app[SESSIONS].add_candidates(
            body["pc_id"], [IceCandidate(**item) for item in body["candidates"]]
        )
    except UnknownSession:
        return unknown_session()
    # The supervisor checked the candidates (agent.sdp_check); should one still slip by,
    # aiortc's parser may raise any of these on it.
    except (ValueError, TypeError, IndexError) as error:
        raise BadRequest(f"A candidate could not be read: {error}") from error
    return web.json_response({})


async def events(request: web.Request) -> web.StreamResponse:
    """One JSON object a line, for as long as the supervisor listens."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    snapshot = {"event": "snapshot", "sessions": request.app[SESSIONS].ids()}
    with request.app[FEED].listen() as queue, contextlib.suppress(ConnectionResetError):
        await response.write(_line(snapshot))
        while True:
            await response.write(_line(await queue.get()))
    return response  # the supervisor stopped listening


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"


async def report_load(index: int, feed: EventFeed, sessions: SessionManager) -> None:
    lag = LoopLag()
    async with asyncio.TaskGroup() as group:
        group.create_task(lag.run())
        while True:
            await asyncio.sleep(LOAD_EVERY_SECS)
            metrics.set_event_loop_lag(index, lag.mean_ms / 1000)
            metrics.set_worker_cpu_seconds(index, time_used())
            feed.publish(
                {
                    "event": "load",
                    "sessions": sessions.active,
                    "lag_ms": round(lag.mean_ms, 1),
                    "lag_max_ms": round(lag.max_ms, 1),
                    "cpu_secs": round(time_used(), 3),
                    "census": census.take(sessions.active),
                }
            )


def time_used() -> float:
    """CPU seconds this process has used, in all its threads."""
    times = os.times()
    return times.user + times.system


def create_worker_app(settings: Settings, index: int) -> web.Application:
    app = web.Application(middlewares=[errors_as_json])
    feed = EventFeed()
    app[FEED] = feed

    def on_change(change: dict[str, Any]) -> None:
        feed.publish(change)
        if change["event"] == "ended":
            loop = asyncio.get_running_loop()
            loop.call_later(COLLECT_WHEN_IDLE_AFTER_SECS, _collect_if_idle, app[SESSIONS])

    app[SESSIONS] = SessionManager(settings, on_change=on_change)
    app.router.add_post("/offer", offer)
    app.router.add_post("/candidates", candidates)
    app.router.add_get("/events", events)

    async def lifecycle(app: web.Application):
        load = asyncio.create_task(report_load(index, feed, app[SESSIONS]))
        yield
        load.cancel()
        await app[SESSIONS].close_all()

    app.cleanup_ctx.append(lifecycle)
    return app


def _collect_if_idle(sessions: SessionManager) -> None:
    if sessions.active == 0:
        gc.collect()
        # What the collection freed closes its HTTP clients and threads in the moments
        # after; the memory they held is handed back once they are done.
        loop = asyncio.get_running_loop()
        loop.call_later(COLLECT_WHEN_IDLE_AFTER_SECS, _trim_if_idle, sessions)


def _trim_if_idle(sessions: SessionManager) -> None:
    if sessions.active == 0 and _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None with another C library (musl has none)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


_malloc_trim = _find_malloc_trim()


def run_worker(settings: Settings, index: int, socket_path: str) -> int:
    structlog.contextvars.bind_contextvars(worker=index)
    offer_only(settings.webrtc_host_addresses)
    # Ctrl-C in a terminal reaches the whole process group; the supervisor decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(settings, index, socket_path))
    return 0


async def _serve(settings: Settings, index: int, socket_path: str) -> None:
    app = create_worker_app(settings, index)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.UnixSite(runner, socket_path).start()
        gc.collect()
        gc.freeze()  # what start-up loaded stays: see COLLECT_WHEN_IDLE_AFTER_SECS
        log.info("worker ready", pid=os.getpid())
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        orphaned = asyncio.create_task(_supervisor_gone())
        await asyncio.wait(
            [orphaned, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        log.info("worker stopping", supervisor_gone=orphaned.done())
    finally:
        await runner.cleanup()


async def _supervisor_gone() -> None:
    """Return when the supervisor is gone: the pipe from it that multiprocessing keeps
    open for as long as the supervisor lives reaches its end."""
    sentinel = multiprocessing.parent_process().sentinel
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(sentinel, lambda: gone.done() or gone.set_result(None))
    try:
        await gone
    finally:
        loop.remove_reader(sentinel)
