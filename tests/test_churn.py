"""Churn: hundreds of visits to a real agent (a supervisor and two workers), each a real
WebRTC client in a process of its own that connects (ICE and DTLS) and then hangs up; every
third one is killed instead (SIGKILL: a closed tab, a crashed browser, no goodbye).

Afterwards nothing is left: no session, no peer connection, and no more asyncio tasks,
threads or open files in any of the agent's processes than at start-up (but for the idle
threads of asyncio's bounded thread pool), and their memory within 10 % of where it
settled: the agent idle after the first 50 visits, which load the voice models. A visitor
told the house is full is told so in words, only when it is full, and once everyone has
gone exactly MAX_SESSIONS conversations fit again. A browser that vanishes is let go
WEBRTC_RECONNECT_GRACE_SECS after the last thing it sent, not before, and not much later.

CHURN_CYCLES sets the number of visits (500 by default).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import httpx
import pytest

from agent.census import POOL_THREADS_MAX
from agent.config import load_settings
from agent.services import build_services
from agent.sessions import CLOSE_TIMEOUT_SECS, SILENCE_CHECK_SECS
from tests.helpers import (
    LLM_MODEL,
    TRUSTED,
    AgentProcess,
    active_sessions,
    agent_env,
    run_agent,
    wait_until,
)
from tests.standins.process import start_standin
from tests.webrtc_client import VoiceClient, loopback_only

pytestmark = pytest.mark.voice

CYCLES = int(os.environ.get("CHURN_CYCLES", "500"))
SETTLED_AFTER = 50
VISITORS_AT_ONCE = 4
MAX_SESSIONS = 8
GRACE_SECS = 2.0  # short, so that the killed visitors' places come back within the run
# From the moment a visitor is gone to its place being free at the supervisor: the
# check's own interval, closing the connection, and the worker's word reaching the
# supervisor (a moment).
RELEASE_SECS = SILENCE_CHECK_SECS + CLOSE_TIMEOUT_SECS
HANG_UP_SECS = 2.0  # a visitor that hung up politely: its place is free within this
RSS_GROWTH = 1.10
FORKSERVER_LOST_TRACK = 255  # multiprocessing's exit code for "status unknown"
STEADY_SECS = 2.5  # figures unchanged this long: two censuses (one a second) agreed


# --- the visitors: each in a process of its own ------------------------------------------


def visit(base_url: str, parent: Connection) -> None:
    """A child process: offer, connect, say so, hang up when the parent says so (unless
    the parent kills it first). A refusal is passed on as it came."""
    loopback_only()
    asyncio.run(_visit(base_url, parent))


async def _visit(base_url: str, parent: Connection) -> None:
    client = VoiceClient(base_url)
    try:
        try:
            await client.connect()
        except httpx.HTTPStatusError as refused:
            response = refused.response
            parent.send(("refused", (response.status_code, response.json())))
            return
        await client.wait_connected(timeout=30)
        parent.send(("connected", client.pc_id))
        await asyncio.to_thread(parent.recv)  # the parent's word to hang up
    finally:
        await client.close()
    parent.send(("closed", None))


@dataclass
class Visit:
    number: int
    abrupt: bool
    started: float  # the visitor's process started: its offer follows
    outcome: str = "?"  # connected, refused, or what went wrong
    answer: Any = None  # the pc_id, or the refusal's status and body
    answered: float | None = None
    gone: float | None = None  # killed, or hung up

    def may_hold_a_place(self, since: float, until: float) -> bool:
        """Whether the agent may have counted this visit at some moment in [since, until]."""
        if self.outcome == "refused" or self.started > until:
            return False
        if self.gone is None:
            return True
        freed_by = self.gone + (GRACE_SECS + RELEASE_SECS if self.abrupt else HANG_UP_SECS)
        return freed_by >= since


class Visitors:
    """Visitors arrive VISITORS_AT_ONCE at a time; a refused one tries again a moment later."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._context = multiprocessing.get_context("forkserver")
        # The children start from a process that has imported the client already, and
        # what httpx imports only when it first connects: a fork of it costs
        # milliseconds, a fresh interpreter most of a second.
        self._context.set_forkserver_preload(
            ["tests.test_churn", "httpcore", "anyio._backends._asyncio"]
        )
        self.visits: list[Visit] = []
        self._lock = threading.Lock()

    def run(self, numbers: range) -> None:
        queue = iter(numbers)
        errors: list[BaseException] = []

        def next_number() -> int | None:
            with self._lock:
                return next(queue, None)

        def visitor() -> None:
            try:
                while (number := next_number()) is not None:
                    while self._one(number).outcome == "refused":
                        time.sleep(0.25)  # a person trying again, not a wait for anything
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=visitor) for _ in range(VISITORS_AT_ONCE)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def arrive(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        """One visitor's process, started, and the parent's end of its pipe."""
        ours, theirs = self._context.Pipe()
        child = self._context.Process(target=visit, args=(self._base_url, theirs))
        child.start()
        theirs.close()
        return child, ours

    def _one(self, number: int) -> Visit:
        record = Visit(number, abrupt=number % 3 == 2, started=time.monotonic())
        with self._lock:
            self.visits.append(record)
        child, ours = self.arrive()
        try:
            record.outcome, record.answer = _receive(ours, 60)
            record.answered = time.monotonic()
            if record.outcome == "connected":
                time.sleep(random.Random(number).uniform(0, 0.3))  # hang up at varying moments
                if record.abrupt:
                    child.kill()
                else:
                    ours.send("hang up")
                    record.outcome, _ = _receive(ours, 30)
                record.gone = time.monotonic()
        finally:
            child.join(10)
            if child.exitcode is None:
                child.kill()
                child.join()
            ours.close()
        if record.outcome not in ("refused", "connected", "closed"):
            raise AssertionError(f"visit {number}: {record.outcome} {record.answer}")
        if record.abrupt and record.outcome == "connected":
            # The forkserver that started it reports the signal, or 255 when it could not
            # learn how its child ended (it reaps children itself; rare, under load).
            assert child.exitcode in (-signal.SIGKILL, FORKSERVER_LOST_TRACK), child.exitcode
        return record


def _receive(pipe: Connection, timeout: float) -> tuple[str, Any]:
    try:
        if pipe.poll(timeout):
            return pipe.recv()
    except EOFError:
        return "died", "the visitor's process ended without a word"
    return "stuck", f"no word from the visitor in {timeout:g} s"


# --- what the agent holds -----------------------------------------------------------------


def health(agent: AgentProcess) -> dict[str, Any]:
    return httpx.get(f"{agent.base_url}/health", timeout=10, verify=TRUSTED).json()


def from_proc(pid: int) -> dict[str, float]:
    """Threads, open files and resident memory of a process, as the kernel counts them."""
    with open(f"/proc/{pid}/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_mb": round(rss_kb / 1024, 1),
    }


def figures(agent: AgentProcess) -> dict[str, Any]:
    """Per process (the supervisor, each worker): /proc's figures and the worker's census;
    and when they were taken."""
    report = health(agent)
    taken: dict[str, Any] = {"taken_at": time.monotonic()}
    taken["supervisor"] = {"sessions": report["sessions"]["active"]}
    taken["supervisor"].update(from_proc(agent.process.pid))
    for worker in report["workers"]:
        taken[f"worker {worker['worker']}"] = {
            **from_proc(worker["pid"]),
            **worker["census"],
            "routes": worker["routes"],
            "supervisor_counts": worker["sessions"],
        }
    return taken


def idle(agent: AgentProcess) -> bool:
    """No session anywhere, and every worker has let go of its last one's peer connection."""
    report = health(agent)
    workers = report["workers"]
    return report["sessions"]["active"] == 0 and all(
        w["ready"]
        and w["sessions"] == 0
        and w["routes"] == 0
        and w["census"].get("sessions") == 0
        and w["census"].get("peer_connections_in_memory") == 0
        for w in workers
    )


def settle(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    """The agent's figures once it is idle (the killed visitors' sessions reclaimed) and
    they have stopped changing (the idle workers' memory collected, fresh censuses).

    The supervisor's open files go up and down by one as it checks the backends: each
    process's files are the fewest seen while the rest held still."""
    wait_until(lambda: idle(agent), GRACE_SECS + RELEASE_SECS + 10, "the agent to be idle")
    window: list[dict[str, dict[str, Any]]] = []

    def steady() -> dict[str, dict[str, Any]] | None:
        taken = figures(agent)
        if window and _counts(taken) != _counts(window[0]):
            window.clear()
        window.append(taken)
        if len(window) < 2 or not idle(agent):
            return None
        if time.monotonic() - window[0]["taken_at"] < STEADY_SECS:
            return None
        for name, process in taken.items():
            if name != "taken_at":
                process["fds"] = min(sample[name]["fds"] for sample in window)
        del taken["taken_at"]
        return taken

    return wait_until(steady, 30, "the agent's figures to settle")


def _counts(taken: dict[str, Any]) -> dict[str, Any]:
    """What must hold still: everything but memory, the time, and the supervisor's files."""
    return {
        name: {k: v for k, v in process.items() if k not in ("rss_mb", "fds")}
        for name, process in taken.items()
        if name != "taken_at"
    } | {f"{name} fds": p["fds"] for name, p in taken.items() if name.startswith("worker")}


def left_over(started: dict[str, Any], settled: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What a process holds after the churn beyond what it held at start-up (its memory:
    beyond what it held once settled, with the voice models loaded)."""
    found = []
    for key in ("tasks", "fds", "peer_connections", "peer_connections_in_memory", "sessions"):
        if key in after and after[key] > started[key]:
            found.append(f"{key} {started[key]} -> {after[key]}")
    # The thread pool's idle threads are bounded; any other thread must be gone.
    own = after["threads"] - after.get("pool_threads", 0)
    own_started = started["threads"] - started.get("pool_threads", 0)
    if own > own_started:
        found.append(f"threads besides the pool {own_started} -> {own}")
    if after.get("pool_threads", 0) > POOL_THREADS_MAX:
        found.append(f"pool threads {after['pool_threads']} > {POOL_THREADS_MAX}")
    if after["rss_mb"] > RSS_GROWTH * settled["rss_mb"]:
        found.append(f"rss {settled['rss_mb']} MB -> {after['rss_mb']} MB")
    return found


def print_table(columns: dict[str, dict[str, dict[str, Any]]]) -> None:
    names = list(columns)
    processes = list(columns[names[-1]])
    print(f"\n{'':34}" + "".join(f"{name:>14}" for name in names))
    for process in processes:
        keys = [k for k in columns[names[-1]][process] if k not in ("worker", "pid")]
        for key in keys:
            values = [columns[name].get(process, {}).get(key, "") for name in names]
            print(f"{process + ' ' + key:34}" + "".join(f"{v!s:>14}" for v in values))


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_speaches() -> Iterator[str]:
    """Speaches with its real Piper voice, saying the (one) greeting from a cache: the
    visitors hang up before saying anything, so Whisper is not needed."""
    with start_standin(
        "tests.standins.speaches",
        *("--installed-all", "--warm", "--tts-cache", "--stt-fixed-text", "hello"),
    ) as (_, url):
        yield url


@pytest.fixture(scope="module")
def ollama() -> Iterator[str]:
    with start_standin("tests.standins.ollama", "--installed", LLM_MODEL) as (_, url):
        yield url


@pytest.fixture(scope="module")
def agent(quick_speaches: str, ollama: str) -> Iterator[AgentProcess]:
    env = agent_env(
        quick_speaches,
        ollama,
        WORKERS="2",
        MAX_SESSIONS=str(MAX_SESSIONS),
        WEBRTC_RECONNECT_GRACE_SECS=str(GRACE_SECS),
        BUSY_LOOP_LAG_MS="0",  # "busy" is a judgement of load; this test is about places
        NEW_SESSIONS_PER_MINUTE="0",  # every visitor comes from 127.0.0.1
    )
    with run_agent(env) as running:
        yield running


# --- the tests ----------------------------------------------------------------------------


def test_churn_leaves_nothing_behind_and_refuses_only_a_full_house(agent: AgentProcess):
    assert CYCLES > SETTLED_AFTER
    wait_until(lambda: idle(agent), 30, "the workers to report")
    started = settle(agent)
    visitors = Visitors(agent.base_url)

    began = time.monotonic()
    visitors.run(range(SETTLED_AFTER))
    settled = settle(agent)
    visitors.run(range(SETTLED_AFTER, CYCLES))
    churn_secs = time.monotonic() - began
    after = settle(agent)

    visits = visitors.visits
    done = [v for v in visits if v.outcome != "refused"]
    refused = [v for v in visits if v.outcome == "refused"]
    killed = [v for v in done if v.abrupt]
    print(
        f"\n{len(done)} visits ({len(killed)} killed, {len(done) - len(killed)} hung up) in "
        f"{churn_secs:.0f} s, {VISITORS_AT_ONCE} at a time; {len(refused)} offers refused"
    )
    print_table({"started": started, "settled (50)": settled, f"after {CYCLES}": after})

    assert len(done) == CYCLES and len(killed) == len(range(2, CYCLES, 3))
    assert {v.outcome for v in done} == {"closed", "connected"}  # hung up / killed
    for name, figures_after in after.items():
        assert figures_after["sessions"] == 0, name
        extra = left_over(started[name], settled[name], figures_after)
        assert not extra, (name, extra)
    for name in after:
        if name != "supervisor":
            assert after[name]["peer_connections"] == 0
            assert after[name]["routes"] == 0

    # Refused only when full: at the moment of each refusal, MAX_SESSIONS visits may have
    # held a place (counting each one until the latest its place can have come back).
    assert refused, "the house never filled: the check of refusals checked nothing"
    for refusal in refused:
        status, body = refusal.answer
        assert status == 503 and body["code"] == "full", body
        assert body["error"] == (
            f"The assistant is busy with {MAX_SESSIONS} other conversations; try again in a moment."
        )
        holding = [
            v
            for v in visits
            if v is not refusal and v.may_hold_a_place(refusal.started, refusal.answered)
        ]
        assert len(holding) >= MAX_SESSIONS, (refusal.number, [v.number for v in holding])

    asyncio.run(_exactly_max_sessions_fit(agent.base_url))


async def _exactly_max_sessions_fit(base_url: str) -> None:
    """After the churn, every place is free: MAX_SESSIONS visitors at once, not one more."""
    loopback_only()
    clients = [VoiceClient(base_url) for _ in range(MAX_SESSIONS)]
    try:
        await asyncio.gather(*(client.connect() for client in clients))
        await asyncio.gather(*(client.wait_connected() for client in clients))
        one_more = VoiceClient(base_url)
        try:
            with pytest.raises(httpx.HTTPStatusError) as refused:
                await one_more.connect()
        finally:
            await one_more.close()
        assert refused.value.response.json()["code"] == "full"
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    await asyncio.to_thread(
        wait_until,
        lambda: active_sessions(base_url) == 0,
        HANG_UP_SECS + 5,
        "the last visitors' places to be free",
    )


def test_a_browser_that_vanishes_is_let_go_after_the_grace_period(agent: AgentProcess):
    """Killed once connected: its session lasts WEBRTC_RECONNECT_GRACE_SECS after the last
    thing the browser sent (a phone that changes networks has that long to come back), and
    its place is free within the next check (a second) and the moment closing takes."""
    wait_until(lambda: idle(agent), 30, "the agent to be idle")
    child, ours = Visitors(agent.base_url).arrive()
    try:
        outcome, pc_id = _receive(ours, 60)
        assert outcome == "connected"
        child.kill()
        killed = time.monotonic()
        assert health(agent)["sessions"]["active"] == 1
        wait_until(
            lambda: health(agent)["sessions"]["active"] == 0,
            GRACE_SECS + RELEASE_SECS + 5,
            "the vanished browser's place to be free",
        )
        reclaimed = time.monotonic() - killed
    finally:
        child.join(10)
        ours.close()
    print(f"\na killed browser's place was free {reclaimed:.2f} s later (grace {GRACE_SECS:g} s)")
    assert GRACE_SECS <= reclaimed <= GRACE_SECS + SILENCE_CHECK_SECS + 1.0
    # Its end, as logged (read as text: the workers' log lines may interleave).
    reason = f'"reason": "connection failed: nothing came for {GRACE_SECS:g}s"'
    assert any(pc_id in line and reason in line for line in agent.log_lines), reason


async def test_a_sessions_backend_clients_are_closed_with_it() -> None:
    services = build_services(load_settings({}), tts_sample_rate=24000)
    for service, part, _backend in services.parts():
        assert not service._client.is_closed(), part
        await service.cleanup()
        assert service._client.is_closed(), f"the {part} service left its client open"
