"""A WebRTC client for tests and benchmarks, built on aiortc like a browser would be.

It sends a microphone track (silence, or speech you hand it, paced in real time), records
the audio it receives with the wall-clock time of each frame, and keeps the RTVI
messages that arrive on the data channel. Signalling goes through the agent's HTTP API.
Tests read what arrived through the ``wait_for_*`` methods, which return what they found.
"""

from __future__ import annotations

import asyncio
import bisect
import fractions
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import aioice.ice
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from tests.audio import is_loud, resample
from tests.helpers import TRUSTED
from tests.standins.engines import float_to_int16

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
RTVI_VERSION = "2.2.0"
CLIENT_READY = {"version": RTVI_VERSION, "about": {"library": "tests"}}

T = TypeVar("T")


def loopback_only() -> None:
    """Gather ICE candidates on 127.0.0.1 only: tests never send anywhere else."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


async def browser_like_offer(data_channel: bool = True, video: str | None = None) -> str:
    """A real offer, as a browser makes it (audio both ways and, unless told otherwise, the
    RTVI data channel; a video transceiver of direction ``video`` if given), for tests
    where anything but the offer must be the reason for a refusal."""
    loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        if video:
            pc.addTransceiver("video", direction=video)
        if data_channel:
            pc.createDataChannel("rtvi")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


class Microphone(MediaStreamTrack):
    """An audio track that plays queued speech and is silent otherwise, in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._sent = 0
        self._speaking: list[asyncio.Future[float]] = []

    def say(self, samples_48k: np.ndarray) -> asyncio.Future[float]:
        """Queue speech (int16, 48 kHz mono). The returned future resolves, once all queued
        speech is sent, to the wall time its last sample went out."""
        self._pending = np.concatenate([self._pending, samples_48k.astype(np.int16)])
        done = asyncio.get_running_loop().create_future()
        self._speaking.append(done)
        return done

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._sent / SAMPLE_RATE
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # real-time pacing, as a sound card would
        chunk = self._pending[:FRAME_SAMPLES]
        self._pending = self._pending[FRAME_SAMPLES:]
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - len(chunk), np.int16)])
        if not len(self._pending) and self._speaking:
            ended_at = time.time()
            for done in self._speaking:
                if not done.done():
                    done.set_result(ended_at)
            self._speaking.clear()
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += FRAME_SAMPLES
        return frame


class Frame(NamedTuple):
    at: float  # wall time of arrival
    samples: np.ndarray  # mono int16 at 48 kHz
    loud: bool


@dataclass
class Recording:
    """Received audio, frame by frame; loudness is judged once, as each frame arrives."""

    frames: list[Frame] = field(default_factory=list)
    loud_times: list[float] = field(default_factory=list)  # arrival order is time order

    def add(self, at: float, samples: np.ndarray) -> None:
        frame = Frame(at, samples, is_loud(samples))
        self.frames.append(frame)
        if frame.loud:
            self.loud_times.append(at)

    def since(self, start: float) -> np.ndarray:
        parts = [frame.samples for frame in self.frames if frame.at >= start]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def first_sound_after(self, start: float) -> float | None:
        index = bisect.bisect_left(self.loud_times, start)
        return self.loud_times[index] if index < len(self.loud_times) else None

    def last_sound(self) -> float | None:
        return self.loud_times[-1] if self.loud_times else None

    def quiet_from(self, start: float, quiet_secs: float) -> float | None:
        """The wall time from which audio after ``start`` stayed quiet for ``quiet_secs``."""
        quiet_since = None
        for frame in self.frames:
            if frame.at < start:
                continue
            if frame.loud:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = frame.at
            elif frame.at - quiet_since >= quiet_secs:
                return quiet_since
        return None


class VoiceClient:
    def __init__(self, base_url: str, data_channel: bool = True, video: str | None = None) -> None:
        self.base_url = base_url
        self._want_channel = data_channel
        self._video = video  # direction of an extra video transceiver, as browsers may add
        self.channel = None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = Microphone()
        self.recording = Recording()
        self.messages: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()  # RTVI messages received, by type
        self.pc_id: str | None = None
        self._new_message = asyncio.Condition()
        self._new_audio = asyncio.Condition()
        self._state_changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> dict[str, Any]:
        """Offer, get the answer, and start recording; returns the answer."""
        self.pc.addTransceiver(self.microphone, direction="sendrecv")
        if self._video:
            self.pc.addTransceiver("video", direction=self._video)
        if self._want_channel:
            self.channel = self.pc.createDataChannel("rtvi")

            @self.channel.on("open")
            def on_open() -> None:
                self.send_rtvi("client-ready", CLIENT_READY)
                self._tasks.append(asyncio.ensure_future(self._notify(self._state_changed)))

            @self.channel.on("message")
            def on_message(raw: str) -> None:
                message = json.loads(raw)
                self.messages.append(message)
                self.counts[str(message.get("type"))] += 1
                self._tasks.append(asyncio.ensure_future(self._notify(self._new_message)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            self._tasks.append(asyncio.ensure_future(self._notify(self._state_changed)))

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._record(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, verify=TRUSTED) as http:
            response = await http.post("/api/offer", json=offer)
        response.raise_for_status()
        answer = response.json()
        self.pc_id = answer["pc_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return answer

    def send_rtvi(self, kind: str, data: dict[str, Any]) -> None:
        assert self.channel is not None, "this client has no data channel"
        message = {"label": "rtvi-ai", "type": kind, "id": uuid.uuid4().hex[:8], "data": data}
        self.channel.send(json.dumps(message))

    def send_text(self, text: str, **options: Any) -> None:
        """Type ``text`` to the bot (RTVI ``send-text``), e.g. with ``run_immediately=True``."""
        self.send_rtvi("send-text", {"content": text, "options": options})

    @staticmethod
    async def _notify(condition: asyncio.Condition) -> None:
        async with condition:
            condition.notify_all()

    @staticmethod
    async def _wait(
        condition: asyncio.Condition, found: Callable[[], T], timeout: float, what: str
    ) -> T:
        """Wait until ``found()`` returns something truthy, re-checked on each notification."""

        async def satisfied() -> T:
            async with condition:
                return await condition.wait_for(found)

        return await _within(satisfied(), timeout, what)

    async def wait_for_message(self, predicate, timeout: float = 30.0) -> dict[str, Any]:
        """The first RTVI message ``predicate`` accepts, once it has arrived."""
        return await self._wait(
            self._new_message,
            lambda: next((m for m in self.messages if predicate(m)), None),
            timeout,
            "matching RTVI message",
        )

    async def wait_for_count(self, kind: str, count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` RTVI messages of type ``kind`` have arrived in all."""
        await self._wait(
            self._new_message, lambda: self.counts[kind] >= count, timeout, f"{kind!r} #{count}"
        )

    async def _record(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ends when the connection closes
                return
            samples = frame.to_ndarray()
            if frame.format.name != "s16":
                samples = float_to_int16(samples)
            channels = len(frame.layout.channels)
            mono = samples.reshape(-1, channels)[:, 0] if channels > 1 else samples.reshape(-1)
            if frame.sample_rate != SAMPLE_RATE:
                mono = resample(mono, frame.sample_rate, SAMPLE_RATE)
            self.recording.add(time.time(), mono.astype(np.int16))
            await self._notify(self._new_audio)

    async def wait_for_audio(
        self, found: Callable[[Recording], T], timeout: float = 30.0, what: str = "audio"
    ) -> T:
        """Wait until ``found(recording)`` is truthy, re-checked as each frame arrives."""
        return await self._wait(self._new_audio, lambda: found(self.recording), timeout, what)

    async def wait_connected(self, timeout: float = 20.0) -> None:
        """Wait until the connection is up and, if this client has one, its data channel
        open (a moment later: the channel needs a handshake of its own)."""
        await self._wait(
            self._state_changed,
            lambda: (
                self.pc.connectionState == "connected"
                and (self.channel is None or self.channel.readyState == "open")
            ),
            timeout,
            "connection",
        )

    async def wait_for_sound(self, after: float, timeout: float = 30.0) -> float:
        """Wait for received audio louder than silence after wall time ``after``; returns
        the wall time of its first loud frame."""
        return await self.wait_for_audio(
            lambda recording: recording.first_sound_after(after), timeout, "sound"
        )

    async def wait_for_spoken_reply(self, since: int, timeout: float = 60.0) -> None:
        """Wait until the bot has said its whole reply, judged by its RTVI messages after
        index ``since``: the LLM finished, all its speech was made, each sentence was
        spoken, and the bot stopped speaking after the last one. (Silence alone is no sign:
        on a loaded machine speech still being made can arrive with gaps.) Then let the
        last audio arrive."""

        def said_it_all() -> bool:
            new = self.messages[since:]
            kinds = [message.get("type") for message in new]
            if "bot-llm-stopped" not in kinds:
                return False
            text = "".join(m["data"]["text"] for m in new if m.get("type") == "bot-llm-text")
            sentences = max(1, len(re.findall(r"[.!?](?:\s|$)", text.strip())))
            spoken = [i for i, kind in enumerate(kinds) if kind == "bot-tts-text"]
            # bot-tts-stopped comes once all speech is made, before it has all played.
            if len(spoken) < sentences or "bot-tts-stopped" not in kinds:
                return False
            return "bot-stopped-speaking" in kinds[spoken[-1] :]

        try:
            await self._wait(self._new_message, said_it_all, timeout, "whole spoken reply")
        except TimeoutError as error:
            new = self.messages[since:]
            heard = [m["type"] for m in new if m.get("type", "").startswith(("bot-", "user-"))]
            llm = "".join(m["data"]["text"] for m in new if m.get("type") == "bot-llm-text")
            raise TimeoutError(f"{error}; after it: {heard}; LLM said {llm!r}") from None
        await self.wait_for_silence_after_speech(time.time() - 3, quiet_secs=0.5, timeout=10)

    async def wait_for_silence_after_speech(
        self, start: float, quiet_secs: float = 1.5, timeout: float = 60.0
    ) -> float:
        """Wait until reply audio began after ``start`` and then stayed quiet; returns onset."""

        def onset_then_quiet(recording: Recording) -> float | None:
            onset = recording.first_sound_after(start)
            last = recording.last_sound()
            if onset is None or last is None or time.time() - last < quiet_secs:
                return None
            return onset

        return await self.wait_for_audio(onset_then_quiet, timeout, "reply followed by quiet")

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _within(waiting: Awaitable[T], timeout: float, what: str) -> T:
    """``waiting``'s result, or a TimeoutError that says what did not come."""
    try:
        return await asyncio.wait_for(waiting, timeout)
    except TimeoutError:
        raise TimeoutError(f"no {what} within {timeout:g} s") from None
