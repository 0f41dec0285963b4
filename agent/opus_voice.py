"""The bot's voice track: Opus made here, once per 20 ms, and not made again for silence.

Pipecat's ``RawAudioTrack`` hands aiortc 10 ms of PCM every 10 ms, silence included, for
as long as the call lasts. aiortc's sender then takes each one through a thread of its
default executor, resamples it to 48 kHz stereo and encodes it at 96 kbit/s: a hundred
thread round trips and fifty Opus encodings a second per session, nearly all of silence:
about a quarter of a silent session's CPU (measured with 4 sessions).

``OpusVoiceTrack`` takes the same calls as ``RawAudioTrack`` (``add_audio_bytes``, whose
future resolves once those bytes have been sent) and, every 20 ms, gives aiortc an Opus
packet it encoded itself (aiortc sends a track's packets as they are, as it does for a
media file it does not decode): mono, at the pipeline's rate (Opus takes 24 kHz as it is),
on the event loop (a tenth of a millisecond). Between utterances the encoder is fed
silence only until it gives the same packet for it a few times in a row (it has settled,
and the end of the speech it still held is out); from then on that packet is sent again
without encoding, and the next utterance goes on with the same encoder, which has
stayed where the receiver's decoder is. (A fresh encoder for each utterance, after a
settled one's silence, made a steady tone start 30 dB low and rise over 160 ms.)
Timing is Pipecat's: the first packet at once, then one per 20 ms of the stream's own
clock. A reply's first audio leaves as soon as before: aiortc sent a packet once it had
two of Pipecat's 10 ms frames, so audio that arrived waited up to 20 ms then too.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, CodecContext, Packet
from pipecat.transports.smallwebrtc import transport as smallwebrtc_transport

FRAME_SECS = 0.020
SAMPLE_BYTES = 2  # s16le mono
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what an Opus encoder takes as it is
BIT_RATE = 96000  # as aiortc's own encoder: at 48 kbit/s some loud frames lost 3 dB
# The encoder has settled on silence once it gives the same packet for it this many
# times in a row (at 96 kbit/s, 3 or 4 frames after speech: Opus' 3-byte silent frame).
SETTLED_REPEATS = 3


class OpusVoiceTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in OPUS_RATES:
            raise ValueError(f"Opus does not take {sample_rate} Hz")
        super().__init__()
        self._sample_rate = sample_rate
        self._frame_samples = round(sample_rate * FRAME_SECS)
        self._frame_bytes = self._frame_samples * SAMPLE_BYTES
        self._time_base = fractions.Fraction(1, sample_rate)
        self._encoder = _opus_encoder(sample_rate)
        self._pending = bytearray()
        # Bytes ever queued and ever sent, and one (queued by then, future) per
        # add_audio_bytes call: its future resolves once ``sent`` has reached that.
        self._queued = 0
        self._sent = 0
        self._writes: deque[tuple[int, asyncio.Future[bool]]] = deque()
        self._last_silence = b""  # the encoder's latest packet for silence
        self._silence_repeats = 0  # how many times in a row it gave that one
        self._timestamp = 0
        self._start = time.monotonic()
        self.encoded_frames = 0  # how many times the encoder ran (for tests)

    def add_audio_bytes(self, audio_bytes: bytes) -> asyncio.Future[bool]:
        """Queue PCM (s16le mono at the track's rate); the future resolves once it is sent."""
        future = asyncio.get_running_loop().create_future()
        self._pending += audio_bytes
        self._queued += len(audio_bytes)
        self._writes.append((self._queued, future))
        return future

    def drop_unplayed(self) -> None:
        """Forget the queued audio and release whoever waits on it being sent."""
        self._pending.clear()
        self._sent = self._queued
        self._release_sent()

    async def recv(self) -> Packet:
        """The next packet, at its time: the first at once, then one per 20 ms."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._timestamp > 0:
            wait = self._start + self._timestamp / self._sample_rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return self.next_packet()

    def next_packet(self) -> Packet:
        """The next 20 ms of the stream, without waiting for its time."""
        packet = Packet(self._next_payload())
        packet.pts = self._timestamp
        packet.time_base = self._time_base
        self._timestamp += self._frame_samples
        return packet

    def _next_payload(self) -> bytes:
        if self._pending:
            chunk = bytes(self._pending[: self._frame_bytes])
            del self._pending[: self._frame_bytes]
            self._sent += len(chunk)
            self._release_sent()
            self._silence_repeats = 0
            return self._encode(chunk.ljust(self._frame_bytes, b"\0"))
        if self._silence_repeats >= SETTLED_REPEATS:
            return self._last_silence
        payload = self._encode(bytes(self._frame_bytes))
        if payload == self._last_silence:
            self._silence_repeats += 1
        else:
            self._last_silence, self._silence_repeats = payload, 1
        return payload

    def _release_sent(self) -> None:
        while self._writes and self._writes[0][0] <= self._sent:
            _queued, future = self._writes.popleft()
            if not future.done():
                future.set_result(True)

    def _encode(self, pcm: bytes) -> bytes:
        self.encoded_frames += 1
        return _encode_frame(self._encoder, pcm, self._sample_rate, self._timestamp)


def _encode_frame(encoder: CodecContext, pcm: bytes, sample_rate: int, pts: int) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, sample_rate)
    # libopus encodes each whole frame at once: one packet per frame, never none.
    (packet,) = encoder.encode(frame)
    return bytes(packet)


def _opus_encoder(sample_rate: int) -> CodecContext:
    encoder = CodecContext.create("libopus", "w")
    encoder.bit_rate = BIT_RATE
    encoder.format = "s16"
    encoder.layout = "mono"
    encoder.sample_rate = sample_rate
    encoder.time_base = fractions.Fraction(1, sample_rate)
    encoder.options = {"application": "voip"}  # as aiortc's own encoder
    return encoder


PIPECATS_OWN_TRACK = smallwebrtc_transport.RawAudioTrack  # taken before it is replaced


def voice_output_track(sample_rate: int, auto_silence: bool = True) -> MediaStreamTrack:
    """What Pipecat gets when it asks for its output track: an ``OpusVoiceTrack``, or, for
    a rate Opus cannot take as it is or a track that must wait instead of sending
    silence, Pipecat's own."""
    if auto_silence and sample_rate in OPUS_RATES:
        return OpusVoiceTrack(sample_rate)
    return PIPECATS_OWN_TRACK(sample_rate=sample_rate, auto_silence=auto_silence)


def speak_through_opus_voice_track() -> None:
    """Make every SmallWebRTC transport from now on send the bot's voice through
    ``voice_output_track``. Pipecat makes its output track when a peer connects, and
    again after an ICE restart, by calling ``RawAudioTrack(sample_rate=...,
    auto_silence=...)``, a name it looks up in its transport module each time: a private
    detail of the pinned Pipecat, which tests/test_session_cost.py checks on a call."""
    smallwebrtc_transport.RawAudioTrack = voice_output_track
