"""A WebRTC client for tests and benchmarks, built on aiortc like a browser would be.

It sends a microphone track (silence, or speech you hand it, paced in real time), records
the audio it receives with the wall-clock time of each frame, and keeps the RTVI
messages that arrive on the data channel. Signalling goes through the agent's HTTP API.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
RTVI_VERSION = "2.2.0"
CLIENT_READY = {"version": RTVI_VERSION, "about": {"library": "tests"}}


def loopback_only() -> None:
    """Gather ICE candidates on 127.0.0.1 only: tests never send anywhere else."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


class Microphone(MediaStreamTrack):
    """An audio track that plays queued speech and is silent otherwise, in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._sent = 0
        self.speech_ended_at: float | None = None  # wall time the last speech sample went out
        self._speech_done = asyncio.Event()

    def say(self, samples_48k: np.ndarray) -> asyncio.Event:
        """Queue speech (int16, 48 kHz mono); the returned event is set once it is all sent."""
        self._pending = np.concatenate([self._pending, samples_48k.astype(np.int16)])
        self._speech_done = asyncio.Event()
        self.speech_ended_at = None
        return self._speech_done

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
        if not len(self._pending) and not self._speech_done.is_set():
            self.speech_ended_at = time.time()
            self._speech_done.set()
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += FRAME_SAMPLES
        return frame


@dataclass
class Recording:
    """Received audio as (wall time, mono int16 at 48 kHz) frames."""

    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def since(self, start: float) -> np.ndarray:
        parts = [samples for at, samples in self.frames if at >= start]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def first_sound_after(self, start: float, threshold: float = 300.0) -> float | None:
        for at, samples in self.frames:
            if at >= start and np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > threshold:
                return at
        return None

    def last_sound(self, threshold: float = 300.0) -> float | None:
        for at, samples in reversed(self.frames):
            if np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > threshold:
                return at
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
            self.channel.on("open", lambda: self.send_rtvi("client-ready", CLIENT_READY))

            @self.channel.on("message")
            def on_message(raw: str) -> None:
                self.messages.append(json.loads(raw))
                self._tasks.append(asyncio.ensure_future(self._notify(self._new_message)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            self._tasks.append(asyncio.ensure_future(self._notify(self._state_changed)))

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._record(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            response = await http.post(
                "/api/offer",
                json={"sdp": self.pc.localDescription.sdp, "type": "offer"},
            )
        response.raise_for_status()
        answer = response.json()
        self.pc_id = answer["pc_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return answer

    def send_rtvi(self, kind: str, data: dict[str, Any]) -> None:
        assert self.channel is not None, "this client has no data channel"
        message = {"label": "rtvi-ai", "type": kind, "id": uuid.uuid4().hex[:8], "data": data}
        self.channel.send(json.dumps(message))

    @staticmethod
    async def _notify(condition: asyncio.Condition) -> None:
        async with condition:
            condition.notify_all()

    async def wait_for_message(self, predicate, timeout: float = 30.0) -> dict[str, Any]:
        async def find():
            async with self._new_message:
                while True:
                    for message in self.messages:
                        if predicate(message):
                            return message
                    await self._new_message.wait()

        return await asyncio.wait_for(find(), timeout)

    async def _record(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ends when the connection closes
                return
            samples = frame.to_ndarray()
            if frame.format.name != "s16":
                samples = (samples * 32767).astype(np.int16)
            channels = len(frame.layout.channels)
            mono = samples.reshape(-1, channels)[:, 0] if channels > 1 else samples.reshape(-1)
            if frame.sample_rate != SAMPLE_RATE:
                mono = resample(mono, frame.sample_rate, SAMPLE_RATE)
            self.recording.frames.append((time.time(), mono.astype(np.int16)))
            await self._notify(self._new_audio)

    async def wait_connected(self, timeout: float = 20.0) -> None:
        async with self._state_changed:
            await asyncio.wait_for(
                self._state_changed.wait_for(lambda: self.pc.connectionState == "connected"),
                timeout,
            )

    async def wait_for_sound(self, after: float, timeout: float = 30.0) -> float:
        """Wait for received audio louder than silence after wall time ``after``."""
        async with self._new_audio:
            await asyncio.wait_for(
                self._new_audio.wait_for(lambda: self.recording.first_sound_after(after)),
                timeout,
            )
        onset = self.recording.first_sound_after(after)
        assert onset is not None
        return onset

    async def wait_for_spoken_reply(self, since: int, timeout: float = 60.0) -> None:
        """Wait until the bot has said its whole reply, judged by its RTVI messages after
        index ``since``: the LLM finished, each sentence went through TTS, and the bot
        stopped speaking after the last one. (Silence alone is no sign: on a loaded machine
        the pause between two sentences can be long.) Then let the last audio arrive."""

        def said_it_all() -> bool:
            new = self.messages[since:]
            kinds = [message.get("type") for message in new]
            if "bot-llm-stopped" not in kinds:
                return False
            text = "".join(m["data"]["text"] for m in new if m.get("type") == "bot-llm-text")
            sentences = max(1, len(re.findall(r"[.!?](?:\s|$)", text.strip())))
            spoken = [i for i, kind in enumerate(kinds) if kind == "bot-tts-text"]
            return len(spoken) >= sentences and "bot-stopped-speaking" in kinds[spoken[-1] :]

        async with self._new_message:
            await asyncio.wait_for(self._new_message.wait_for(said_it_all), timeout)
        await self.wait_for_silence_after_speech(time.time() - 3, quiet_secs=0.5, timeout=10)

    async def wait_for_silence_after_speech(
        self, start: float, quiet_secs: float = 1.5, timeout: float = 60.0
    ) -> float:
        """Wait until reply audio began after ``start`` and then stayed quiet; returns onset."""

        def replied_then_quiet() -> bool:
            onset = self.recording.first_sound_after(start)
            last = self.recording.last_sound()
            return onset is not None and last is not None and time.time() - last >= quiet_secs

        async with self._new_audio:
            await asyncio.wait_for(self._new_audio.wait_for(replied_then_quiet), timeout)
        onset = self.recording.first_sound_after(start)
        assert onset is not None
        return onset

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate or not len(samples):
        return samples
    duration = len(samples) / source_rate
    target_len = round(duration * target_rate)
    positions = np.linspace(0, len(samples) - 1, target_len)
    return np.interp(positions, np.arange(len(samples)), samples.astype(np.float64)).astype(
        np.int16
    )
