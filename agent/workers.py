"""The supervisor's worker processes: start them, route requests to them, restart them.

Each worker runs its own conversations; the pool knows which worker owns which
``pc_id`` (from the workers' own event feeds, see ``agent.worker``), how busy each is,
and how many conversations run in all, which is what the session limit counts. A new
conversation goes to the least-loaded worker whose event loop keeps up; a request for
an existing one goes to its owner. A worker that dies is started again, and its
conversations are counted as ended at once; the others' go on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import structlog

from agent import metrics, worker_processes
from agent.config import Settings

log = structlog.get_logger("workers")

REQUEST_TIMEOUT_SECS = 30.0  # answering an offer gathers ICE candidates: a second or two
EVENTS_SILENT_SECS = 5.0  # a worker reports its load every second; this long silent is stuck
RECONNECT_SECS = 0.2  # between tries to reach a worker that is still starting
STOP_TIMEOUT_SECS = 10.0  # after SIGTERM, before SIGKILL
RESTART_DELAYS_SECS = (0.0, 1.0, 2.0, 5.0, 10.0)  # for a worker that keeps dying at start
STABLE_SECS = 30.0  # a worker that ran this long starts again at once when it dies
IDLE_CONNECTIONS = 1  # to each worker, kept open for the next request
# A worker reports a conversation it started on its event feed, at the moment it answers.
REPORTED_WITHIN_SECS = 2.0


class SessionsFull(Exception):
    """MAX_SESSIONS conversations are already running."""


class AllBusy(Exception):
    """Every worker's event loop is running late: another conversation would hurt them all."""


class NoWorker(Exception):
    """No worker is ready (still starting, or restarting after a crash)."""


class UnknownSession(Exception):
    """No worker owns that pc_id (it ended, or never existed)."""


class WorkerLost(Exception):
    """The worker died while answering."""


@dataclass
class Worker:
    index: int
    socket: Path
    client: httpx.AsyncClient
    process: BaseProcess | None = None
    ready: bool = False  # its event feed is connected and current
    sessions: set[str] = field(default_factory=set)  # current pc_ids
    starting: int = 0  # offers it is answering
    lag_ms: float = 0.0  # its event loop's mean lateness (agent.loop_lag)
    cpu_secs: float = 0.0
    census: dict[str, int] = field(default_factory=dict)  # what it holds (agent.census)
    started: float = 0.0
    restarts: int = 0

    @property
    def load(self) -> int:
        return len(self.sessions) + self.starting

    def report(self, routes: int) -> dict[str, Any]:
        return {
            "worker": self.index,
            "pid": self.process.pid if self.process else None,
            "ready": self.ready,
            "sessions": len(self.sessions),
            "loop_lag_ms": self.lag_ms,
            "restarts": self.restarts,
            "routes": routes,  # pc_ids (current and former) the supervisor sends to it
            "census": self.census,
        }


class WorkerPool:
    def __init__(self, settings: Settings, runtime_dir: Path) -> None:
        self._settings = settings
        self._workers = [
            self._new_worker(index, runtime_dir / f"worker-{index}.sock")
            for index in range(1, settings.workers + 1)
        ]
        self._owner: dict[str, Worker] = {}  # every pc_id a worker answers to, former ones too
        # Conversations answered whose worker has not reported them yet.
        self._unreported: dict[str, tuple[Worker, asyncio.Event]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @staticmethod
    def _new_worker(index: int, socket: Path) -> Worker:
        # A burst of offers opens a connection each; only a few stay open once it is over.
        limits = httpx.Limits(max_keepalive_connections=IDLE_CONNECTIONS)
        transport = httpx.AsyncHTTPTransport(uds=str(socket), limits=limits)
        client = httpx.AsyncClient(transport=transport, base_url="http://worker")
        return Worker(index, socket, client)

    @property
    def active(self) -> int:
        """Conversations running or being set up, in all workers."""
        return sum(worker.load for worker in self._workers)

    @property
    def limit(self) -> int:
        return self._settings.max_sessions

    @property
    def ready(self) -> bool:
        return any(worker.ready for worker in self._workers)

    def report(self) -> list[dict[str, Any]]:
        routes = Counter(worker.index for worker in self._owner.values())
        return [worker.report(routes[worker.index]) for worker in self._workers]

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep_running(w)) for w in self._workers]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._stop_process(w) for w in self._workers))
        for worker in self._workers:
            await worker.client.aclose()

    # --- requests ------------------------------------------------------------------------

    async def new_session(self, body: dict[str, Any]) -> httpx.Response:
        if self.active >= self.limit:
            raise SessionsFull()
        ready = [worker for worker in self._workers if worker.ready]
        if not ready:
            raise NoWorker()
        busy_ms = self._settings.busy_loop_lag_ms
        calm = [w for w in ready if not busy_ms or w.lag_ms <= busy_ms]
        if not calm:
            raise AllBusy()
        worker = min(calm, key=lambda w: (w.load, w.index))
        worker.starting += 1
        try:
            response = await self._forward(worker, "/offer", body)
            if response.status_code == 200:
                await self._until_reported(worker, response.json()["pc_id"])
            return response
        finally:
            worker.starting -= 1

    async def _until_reported(self, worker: Worker, pc_id: str) -> None:
        """Keep a new conversation counted as being set up until its worker reports it.

        The report comes on the worker's event feed, which may lag the answer by a moment:
        counted by neither, the conversation would be missing from the count, and a full
        house would let one more in."""
        if pc_id in worker.sessions:
            return
        reported = asyncio.Event()
        self._unreported[pc_id] = (worker, reported)
        try:
            await asyncio.wait_for(reported.wait(), REPORTED_WITHIN_SECS)
        except TimeoutError:
            log.warning("worker did not report a conversation", worker=worker.index, session=pc_id)
        finally:
            del self._unreported[pc_id]

    def _reported(self, worker: Worker, pc_ids: Any) -> None:
        for pc_id in pc_ids:
            waiting = self._unreported.get(pc_id)
            if waiting and waiting[0] is worker:
                waiting[1].set()

    async def for_session(self, pc_id: str, path: str, body: dict[str, Any]) -> httpx.Response:
        """Forward a request about an existing conversation to the worker that has it."""
        worker = self._owner.get(pc_id)
        if worker is None:
            raise UnknownSession(pc_id)
        return await self._forward(worker, path, body)

    async def _forward(self, worker: Worker, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            response = await worker.client.post(path, json=body, timeout=REQUEST_TIMEOUT_SECS)
        except httpx.HTTPError as error:
            log.warning("worker did not answer", worker=worker.index, error=repr(error))
            raise WorkerLost() from error
        if path == "/offer" and response.status_code == 200:
            # Routes the browser's next requests at once; the worker's "started" (or
            # "rekeyed") event, which counts the session, may come a moment later.
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._owner[response.json()["pc_id"]] = worker
        return response

    # --- keeping workers running ---------------------------------------------------------

    async def _keep_running(self, worker: Worker) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._run_once(worker)
            # Could not even start it: out of memory, say, or the fork server died as it
            # started (EOFError: it closed the pipe that should have brought the pid).
            except (OSError, EOFError) as error:
                log.error("cannot start a worker", worker=worker.index, error=str(error))
            ran_secs = time.monotonic() - worker.started
            failures = 0 if ran_secs >= STABLE_SECS else failures + 1
            delay = RESTART_DELAYS_SECS[min(failures, len(RESTART_DELAYS_SECS) - 1)]
            worker.restarts += 1
            log.info("restarting worker", worker=worker.index, in_secs=delay)
            await asyncio.sleep(delay)

    async def _run_once(self, worker: Worker) -> None:
        worker.socket.unlink(missing_ok=True)
        worker.started = time.monotonic()
        worker.process = await asyncio.to_thread(
            worker_processes.start, self._settings, worker.index, worker.socket
        )
        feed = asyncio.create_task(self._follow(worker))
        try:
            code = await worker_processes.exited(worker.process)
        finally:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)
        lost = self._forget(worker)
        metrics.process_dead(worker.process.pid)
        metrics.sessions_lost_with_worker(lost)
        if not self._stopping:
            log.error(
                "worker stopped unexpectedly",
                worker=worker.index,
                pid=worker.process.pid,
                exit_code=code,
                ended_sessions=lost,
            )

    def _forget(self, worker: Worker) -> int:
        """The worker is gone: its conversations ended with it; free their slots."""
        lost = len(worker.sessions)
        worker.ready = False
        worker.sessions.clear()
        worker.lag_ms = 0.0
        worker.census = {}
        self._disown(worker)
        self._reported(worker, list(self._unreported))
        return lost

    def _disown(self, worker: Worker) -> None:
        for pc_id in [pc_id for pc_id, owner in self._owner.items() if owner is worker]:
            del self._owner[pc_id]

    async def _follow(self, worker: Worker) -> None:
        """Read the worker's event feed for as long as it runs (reconnecting if need be)."""
        while True:
            try:
                timeout = httpx.Timeout(REQUEST_TIMEOUT_SECS, read=EVENTS_SILENT_SECS)
                async with worker.client.stream("GET", "/events", timeout=timeout) as response:
                    async for line in response.aiter_lines():
                        self._apply(worker, json.loads(line))
            except httpx.ReadTimeout:
                log.warning("worker stopped reporting", worker=worker.index)
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # still starting (no socket yet), or going away
            worker.ready = False
            await asyncio.sleep(RECONNECT_SECS)

    def _apply(self, worker: Worker, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "snapshot":
            self._disown(worker)
            worker.sessions = set(event["sessions"])
            for pc_id, formers in event["sessions"].items():
                for known in (pc_id, *formers):
                    self._owner[known] = worker
            self._reported(worker, list(self._unreported))  # in it, or over
            worker.ready = True
        elif kind == "started":
            worker.sessions.add(event["pc_id"])
            self._owner[event["pc_id"]] = worker
            self._reported(worker, [event["pc_id"]])
        elif kind == "rekeyed":
            worker.sessions.discard(event["former"])
            worker.sessions.add(event["pc_id"])
            self._owner[event["pc_id"]] = worker
        elif kind == "ended":
            for pc_id in event["pc_ids"]:
                worker.sessions.discard(pc_id)
                self._owner.pop(pc_id, None)
            self._reported(worker, event["pc_ids"])
        elif kind == "load":
            worker.lag_ms = event["lag_ms"]
            worker.cpu_secs = event["cpu_secs"]
            worker.census = event["census"]
            worker.ready = True

    async def _stop_process(self, worker: Worker) -> None:
        process = worker.process
        if process is None or process.exitcode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(worker_processes.exited(process), STOP_TIMEOUT_SECS)
        except TimeoutError:
            log.warning("worker did not stop in time; killing it", worker=worker.index)
            process.kill()
            await worker_processes.exited(process)
