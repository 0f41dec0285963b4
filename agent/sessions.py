"""WebRTC sessions and their pipelines: create, limit, renegotiate, clean up.

A session is one browser's peer connection plus the Pipecat pipeline that talks to it.
It ends when the browser hangs up, the connection never comes up, the browser has sent
nothing for WEBRTC_RECONNECT_GRACE_SECS (a closed tab, a lost network: no goodbye), the
conversation goes idle, or the agent stops; whichever happens, ``_release`` runs once
and frees everything. Sessions are keyed by ``pc_id`` and share nothing; each worker
process has its own manager, and tells the supervisor (``on_change``) when a session
starts, changes id or ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pipecat.frames.frames import LLMRunFrame
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, UserBotLatencyObserver
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.workers.runner import WorkerRunner

from agent import census, metrics
from agent.config import Settings
from agent.peer import (
    IceCandidate,
    drop_unplayed_audio,
    ice_ufrag,
    new_connection,
    packets_received,
    sdp_problem,
    voice_track,
)
from agent.pipeline import build_worker

log = structlog.get_logger("sessions")


# Closing a peer connection is quick; one that hangs must not keep the session's slot.
CLOSE_TIMEOUT_SECS = 5.0
# How often a session checks that its browser still sends anything: the reclaim time of
# a browser that vanished is WEBRTC_RECONNECT_GRACE_SECS plus at most this.
SILENCE_CHECK_SECS = 1.0


class SessionsFull(Exception):
    """MAX_SESSIONS conversations are already running."""


class UnknownSession(Exception):
    """No session has that pc_id (it ended, or never existed)."""


class InvalidOffer(Exception):
    """The SDP could not be used to set up a connection; the message says why."""


@dataclass
class Session:
    pc_id: str
    connection: SmallWebRTCConnection
    worker: PipelineWorker
    started: float = field(default_factory=time.monotonic)
    connected: asyncio.Event = field(default_factory=asyncio.Event)  # the current connection
    greeted: bool = False
    turns: int = 0
    restarts: int = 0  # ICE restarts (a new peer connection for the same conversation)
    restart_ufrag: str | None = None  # ICE username of the offer the last restart answered
    lost: bool = False  # the connection failed; awaiting an ICE restart
    heard: float = field(default_factory=time.monotonic)  # the browser's last sign of life
    end_reason: str = "pipeline ended"
    ending: bool = False  # _end has begun: its reason stands
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


SessionChange = dict[str, Any]  # {"event": "started" | "rekeyed" | "ended", ...}


class SessionManager:
    def __init__(
        self, settings: Settings, on_change: Callable[[SessionChange], None] = lambda _: None
    ) -> None:
        self._settings = settings
        self._on_change = on_change
        self._sessions: dict[str, Session] = {}
        # An ICE restart gives a session a new pc_id; the old one still finds it, since a
        # client's trickled candidates for the switch may name either.
        self._former_ids: dict[str, str] = {}
        self._starting = 0  # offers being set up; they count against the limit

    @property
    def active(self) -> int:
        return len(self._sessions)

    @property
    def limit(self) -> int:
        return self._settings.max_sessions

    async def offer(
        self, sdp: str, sdp_type: str, pc_id: str | None = None, restart_pc: bool = False
    ) -> dict[str, str]:
        """Answer an offer: a new session, or a renegotiation of ``pc_id``'s."""
        if pc_id is not None:
            return await self._renegotiate(pc_id, sdp, sdp_type, restart_pc)
        if self.active + self._starting >= self.limit:
            raise SessionsFull()
        self._starting += 1
        try:
            return await self._start(sdp, sdp_type)
        finally:
            self._starting -= 1

    def ids(self) -> dict[str, list[str]]:
        """Every session's pc_id, with the former ids that still reach it."""
        ids: dict[str, list[str]] = {pc_id: [] for pc_id in self._sessions}
        for former, current in self._former_ids.items():
            ids[current].append(former)
        return ids

    async def add_candidates(self, pc_id: str, candidates: list[IceCandidate]) -> None:
        session = self._find(pc_id)
        for item in candidates:
            await session.connection.add_ice_candidate(item.parsed())

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        for session in sessions:
            await self._end(session, "agent stopping")
        await asyncio.gather(
            *(task for session in sessions for task in session.tasks), return_exceptions=True
        )

    async def _start(self, sdp: str, sdp_type: str) -> dict[str, str]:
        if not any(line.startswith("m=audio ") for line in sdp.splitlines()):
            raise InvalidOffer("the offer has no audio track; the page must send the microphone")
        connection = new_connection(self._settings)
        try:
            await connection.initialize(sdp=sdp, type=sdp_type)
        except Exception as error:  # aiortc raises ValueError, and others, for bad SDP
            await connection.disconnect()
            raise InvalidOffer(sdp_problem(error)) from error
        answer = connection.get_answer()
        if answer is None:
            await connection.disconnect()
            raise InvalidOffer("no answer could be made for this offer")
        try:
            worker, transport = build_worker(connection, self._settings)
        except Exception:
            await connection.disconnect()  # nothing may hold the peer connection now
            raise
        session = Session(pc_id=answer["pc_id"], connection=connection, worker=worker)
        self._sessions[session.pc_id] = session
        self._wire(session, transport)
        session.tasks.append(asyncio.create_task(self._run(session), name=session.pc_id))
        session.tasks.append(asyncio.create_task(self._expect_connection(session)))
        session.tasks.append(asyncio.create_task(self._expect_signs_of_life(session)))
        log.info("session started", session=session.pc_id, active=self.active)
        metrics.session_started()
        self._on_change({"event": "started", "pc_id": session.pc_id})
        return answer

    def _find(self, pc_id: str) -> Session:
        session = self._sessions.get(self._former_ids.get(pc_id, pc_id))
        if session is None:
            raise UnknownSession(pc_id)
        return session

    async def _renegotiate(
        self, pc_id: str, sdp: str, sdp_type: str, restart_pc: bool
    ) -> dict[str, str]:
        session = self._find(pc_id)
        ufrag = ice_ufrag(sdp)
        if restart_pc and ufrag is not None and ufrag == session.restart_ufrag:
            # The same restart offer again: a retry whose first copy was answered, or that
            # copy delivered late by a network that stalled. Its connection is the one in
            # use; restarting again would drop it.
            answer = session.connection.get_answer()
            if answer is not None:
                return answer
        old_voice = voice_track(session.connection) if restart_pc else None
        if restart_pc:
            session.restarts += 1  # a lost connection waiting for this is saved
        try:
            await session.connection.renegotiate(sdp=sdp, type=sdp_type, restart_pc=restart_pc)
        except Exception as error:
            raise InvalidOffer(sdp_problem(error)) from error
        finally:
            if old_voice is not None:
                drop_unplayed_audio(old_voice)
        answer = session.connection.get_answer()
        if answer is None:
            raise InvalidOffer("no answer could be made for this offer")
        if restart_pc:
            census.track(session.connection.pc)
            session.restart_ufrag = ufrag
            session.connected = asyncio.Event()  # the new connection must come up in time too
            session.tasks.append(asyncio.create_task(self._expect_connection(session)))
        if answer["pc_id"] != session.pc_id:
            self._rekey(session, answer["pc_id"])
        return answer

    def _rekey(self, session: Session, new_id: str) -> None:
        """The conversation goes on over a new peer connection, under its id."""
        old_id = session.pc_id
        self._sessions[new_id] = self._sessions.pop(old_id)
        for former, current in self._former_ids.items():
            if current == old_id:
                self._former_ids[former] = new_id
        self._former_ids[old_id] = new_id
        session.pc_id = new_id
        self._on_change({"event": "rekeyed", "former": old_id, "pc_id": new_id})
        log.info("session reconnecting", session=new_id, former=old_id, restarts=session.restarts)

    def _wire(self, session: Session, transport) -> None:
        @transport.event_handler("on_client_connected")
        async def on_connected(_transport, _client):
            session.lost = False
            session.connected.set()
            if session.greeted:  # back after an ICE restart: no second greeting
                log.info("session reconnected", session=session.pc_id)
                return
            session.greeted = True
            log.info("session connected", session=session.pc_id)
            await session.worker.queue_frames([LLMRunFrame()])  # the greeting

        @transport.event_handler("on_client_disconnected")
        async def on_disconnected(_transport, _client):
            if not session.lost:
                await self._end(session, "browser hung up")

        @session.connection.event_handler("failed")
        async def on_failed(_connection):
            # A phone that changed networks restarts ICE with a new offer; until then (or
            # until the browser has been silent for the grace period) the conversation is
            # kept. Pipecat closes the old peer connection right after this: no hang-up.
            session.lost = True
            log.info("session connection lost", session=session.pc_id)

        @session.connection.event_handler("closed")
        async def on_closed(_connection):
            if not session.lost:
                await self._end(session, "connection closed")

        latency = UserBotLatencyObserver()

        @latency.event_handler("on_latency_breakdown")
        async def on_breakdown(_observer, breakdown: LatencyBreakdown):
            await self._report_turn(session, breakdown)

        session.worker.add_observer(latency)

    async def _report_turn(self, session: Session, breakdown: LatencyBreakdown) -> None:
        is_greeting = breakdown.measured_from == "client_connected"
        seconds = metrics.stage_seconds(breakdown)
        if not is_greeting:
            session.turns += 1
            metrics.record_turn(breakdown.total_secs, seconds)
        parts = {key: round(secs * 1000) for key, secs in seconds.items()}
        total_ms = round(breakdown.total_secs * 1000)
        log.info(
            "greeting" if is_greeting else "turn",
            session=session.pc_id,
            turn=session.turns,
            latency_ms=total_ms,
            parts_ms=parts,
        )
        if not is_greeting:
            message = {
                "type": "turn-latency",
                "turn": session.turns,
                "ms": total_ms,
                "parts_ms": parts,
            }
            await session.worker.queue_frame(RTVIServerMessageFrame(data=message))

    async def _run(self, session: Session) -> None:
        runner = WorkerRunner(handle_sigint=False)
        try:
            await runner.add_workers(session.worker)
            await runner.run()
        except Exception:
            session.end_reason = "pipeline error"
            log.exception("session pipeline crashed", session=session.pc_id)
        finally:
            await self._release(session)

    async def _expect_connection(self, session: Session) -> None:
        connected, again = session.connected, session.greeted
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connected.wait(), self._settings.connect_timeout_secs)
            return
        if connected is session.connected:  # not replaced by a later restart meanwhile
            what = "reconnect" if again else "connect"
            secs = self._settings.connect_timeout_secs
            await self._end(session, f"browser did not {what} within {secs:g}s")

    async def _expect_signs_of_life(self, session: Session) -> None:
        """End the conversation once its browser has sent nothing for the grace period.

        A browser always sends something: microphone audio (silence too) 50 times a second,
        and reports on what it receives. A tab that was closed, a crashed browser, or a
        network that went away sends nothing, and says no goodbye. ICE would notice too,
        but only after about 30 s (aioice's consent checks), and Pipecat's connection
        states do not cover a peer that just went quiet. While a connection is coming up
        (at first, or after an ICE restart) ``_expect_connection`` keeps the time instead.
        """
        grace = self._settings.reconnect_grace_secs
        seen: tuple[object, int | None] = (None, None)  # the peer connection, its count
        while True:
            await asyncio.sleep(SILENCE_CHECK_SECS)
            now = time.monotonic()
            if not session.connected.is_set():
                session.heard = now
                continue
            pc = session.connection.pc
            try:
                received = await packets_received(pc)
            except Exception:  # a closed or broken connection: no sign of life
                received = seen[1]
            if (pc, received) != seen:
                seen, session.heard = (pc, received), now
            elif now - session.heard >= grace:
                await self._end(session, f"connection failed: nothing came for {grace:g}s")
                return

    async def _end(self, session: Session, reason: str) -> None:
        # The first reason is the one: ending closes the connection, which reports that too.
        if session.ending or session.pc_id not in self._sessions or session.worker.has_finished():
            return
        session.ending = True
        session.end_reason = reason
        await session.worker.cancel(reason=reason)

    async def _release(self, session: Session) -> None:
        if self._sessions.pop(session.pc_id, None) is None:
            return
        formers = [f for f, current in self._former_ids.items() if current == session.pc_id]
        for former in formers:
            del self._former_ids[former]
        self._on_change({"event": "ended", "pc_ids": [session.pc_id, *formers]})
        metrics.session_ended(session.end_reason)
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        try:
            await asyncio.wait_for(session.connection.disconnect(), CLOSE_TIMEOUT_SECS)
        except TimeoutError:
            log.warning("connection did not close in time", session=session.pc_id)
        except Exception:
            log.exception("error while closing the connection", session=session.pc_id)
        log.info(
            "session ended",
            session=session.pc_id,
            reason=session.end_reason,
            secs=round(time.monotonic() - session.started, 1),
            turns=session.turns,
            active=self.active,
        )
