"""What a session costs while nobody speaks: audio goes only where it is used.

- In a real call (an aiortc client and the agent's own pipeline, in this process), the
  microphone's audio reaches speech-to-text and the user aggregator and no processor
  after them, and the bot's audio goes no further than the output transport, which sends
  it on the agent's ``OpusVoiceTrack`` (``agent/spent_audio.py``, ``agent/opus_voice.py``).
- Voice detection leaves the event loop only for frames that complete a window, and
  reaches the same states as Pipecat's own analyzer (``agent/vad_windows.py``).
- ``OpusVoiceTrack``: silence between utterances is sent without encoding; what it sends
  decodes to what was queued, as loud from the start as an encoder fed all along would
  make it; its writers are released when their audio has been sent, never before; its
  packets are paced at 20 ms.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, rtcrtpreceiver
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import convert_timebase
from hypothesis import given, settings
from hypothesis import strategies as st
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, TTSAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed
from pipecat.transports.smallwebrtc import transport as smallwebrtc_transport
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.workers.runner import WorkerRunner

from agent.config import load_settings
from agent.ice import offer_only
from agent.opus_voice import (
    PIPECATS_OWN_TRACK,
    OpusVoiceTrack,
    voice_output_track,
)
from agent.peer import drop_unplayed_audio, new_connection, voice_track
from agent.pipeline import build_worker
from agent.services import build_services
from agent.vad_windows import SileroVADByWindow
from tests.audio import LOUD_RMS, pad_with_silence, synthesize, trim_silence
from tests.webrtc_client import Microphone

RATE = 24000  # the pipeline's output rate
FRAME = 480  # samples in 20 ms at RATE
FRAME_BYTES = FRAME * 2
RTP_CLOCK = fractions.Fraction(1, 48000)  # Opus' RTP clock, whatever the audio's rate


def tone(secs: float, level: int = 8000, hz: float = 300.0) -> np.ndarray:
    t = np.arange(round(secs * RATE)) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype("<i2")


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


# --- the agent's pipeline in a call -----------------------------------------------------------


class AudioSeen(BaseObserver):
    """Counts the audio frames each processor processed, by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.changed = asyncio.Condition()

    async def on_process_frame(self, data: FrameProcessed) -> None:
        for kind in (InputAudioRawFrame, OutputAudioRawFrame):
            if isinstance(data.frame, kind):
                self.counts[(type(data.processor).__name__, kind.__name__)] += 1
                async with self.changed:
                    self.changed.notify_all()

    def processors(self, kind: type) -> dict[str, int]:
        return {name: n for (name, seen), n in self.counts.items() if seen == kind.__name__}

    async def wait_for(self, processor: str, kind: type, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: self.counts[(processor, kind.__name__)] >= count),
                20,
            )


class Loudness:
    """The audio a client receives, frame by frame: whether anything loud has arrived."""

    def __init__(self) -> None:
        self.loud_frames = 0
        self.changed = asyncio.Condition()

    async def record(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ends with the call
                return
            if rms(frame.to_ndarray()) > LOUD_RMS:
                self.loud_frames += 1
            async with self.changed:
                self.changed.notify_all()

    async def wait_for_loud(self, frames: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.loud_frames >= frames), 20)


@asynccontextmanager
async def call_with_the_agents_pipeline(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[SmallWebRTCConnection, object, AudioSeen, Loudness]]:
    """An aiortc client in a call with one session's pipeline, built as the agent builds
    it, both in this process on 127.0.0.1. Its microphone sends silence. The backends are
    never asked: nothing here starts a turn."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    offer_only(("127.0.0.1",))  # as WEBRTC_HOST_ADDRESSES does in the agent
    # new_connection installs the agent's receive buffer and voice track for the whole
    # process: put Pipecat's and aiortc's own back afterwards.
    monkeypatch.setattr(rtcrtpreceiver, "JitterBuffer", rtcrtpreceiver.JitterBuffer)
    monkeypatch.setattr(smallwebrtc_transport, "RawAudioTrack", smallwebrtc_transport.RawAudioTrack)
    settings = load_settings({})
    connection = new_connection(settings)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver(Microphone(), direction="sendrecv")
    heard = Loudness()
    recorders: list[asyncio.Task] = []
    client.on("track", lambda track: recorders.append(asyncio.ensure_future(heard.record(track))))
    await client.setLocalDescription(await client.createOffer())
    await connection.initialize(sdp=client.localDescription.sdp, type="offer")
    answer = connection.get_answer()
    await client.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

    worker, transport = build_worker(connection, settings)
    seen = AudioSeen()
    worker.add_observer(seen)
    connected = asyncio.Event()

    @transport.event_handler("on_client_connected")
    async def on_connected(_transport, _client):
        connected.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(connected.wait(), 20)
        yield connection, transport, seen, heard
    finally:
        await worker.cancel(reason="test over")
        await asyncio.wait_for(running, 20)
        await client.close()
        for recorder in recorders:
            recorder.cancel()
        await asyncio.gather(*recorders, return_exceptions=True)


async def test_audio_goes_no_further_than_the_processors_that_use_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with call_with_the_agents_pipeline(monkeypatch) as (connection, transport, seen, heard):
        # A second of the client's microphone (silence) through voice detection.
        await seen.wait_for("LLMUserAggregator", InputAudioRawFrame, 50)
        # The bot says something: half a second of a tone, handed to the output.
        speech = TTSAudioRawFrame(tone(0.5).tobytes(), RATE, 1, context_id="reply")
        await transport.output().queue_frame(speech)
        await heard.wait_for_loud(10)
        await seen.wait_for("DropSpentAudio", OutputAudioRawFrame, 5)
        # Pipecat made its output track through the name the agent replaced: the bot's
        # voice went out on an OpusVoiceTrack, and the client heard it.
        assert isinstance(voice_track(connection), OpusVoiceTrack)

    heard_by = seen.processors(InputAudioRawFrame)
    assert set(heard_by) == {"SpeachesSTTService", "LLMUserAggregator", "DropSpentAudio"}
    played_by = seen.processors(OutputAudioRawFrame)
    assert set(played_by) == {"SmallWebRTCOutputTransport", "DropSpentAudio"}


def test_pipecats_turn_tracking_is_off() -> None:
    worker, _transport = build_worker(SmallWebRTCConnection(), load_settings({}))
    assert worker.turn_tracking_observer is None


# --- voice detection ---------------------------------------------------------------------------

VAD_RATE = 16000
VAD_PARAMS = VADParams(start_secs=0.2, stop_secs=0.2)
MICROPHONE_FRAME = 320 * 2  # bytes in 20 ms at VAD_RATE


def analyzer(kind: type[SileroVADAnalyzer]) -> SileroVADAnalyzer:
    vad = kind(params=VAD_PARAMS)
    vad.set_sample_rate(VAD_RATE)
    return vad


async def test_frames_that_complete_no_window_stay_on_the_event_loop() -> None:
    vad = analyzer(SileroVADByWindow)
    frame = bytes(MICROPHONE_FRAME)
    first = vad.analyze_audio(frame)  # 320 of the 512 samples a window needs
    with pytest.raises(StopIteration):  # done without waiting on anything
        first.send(None)
    second = vad.analyze_audio(frame)  # a whole window: the model runs, in its thread
    waiting_on = second.send(None)
    assert isinstance(waiting_on, asyncio.Future)
    second.close()
    await vad.cleanup()


UTTERANCE = pad_with_silence(
    trim_silence(synthesize("Turn on the lights", VAD_RATE), 100), VAD_RATE, 0.3, 0.5
).tobytes()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 4).map(lambda n: n * 160 * 2), min_size=1, max_size=20))
def test_voice_detection_reaches_pipecats_states(chunk_sizes: list[int]) -> None:
    """A sentence in chunks of 10 to 40 ms (the sizes drawn, over and over), as a network
    may deliver it: the same state after every chunk."""

    async def run() -> None:
        ours, pipecats = analyzer(SileroVADByWindow), analyzer(SileroVADAnalyzer)
        states, start = [], 0
        for size in itertools.cycle(chunk_sizes):
            chunk = UTTERANCE[start : start + size]
            start += size
            if not chunk:
                break
            state = await ours.analyze_audio(chunk)
            assert state == await pipecats.analyze_audio(chunk)
            states.append(state)
        assert VADState.SPEAKING in states  # the sentence was heard
        await ours.cleanup()
        await pipecats.cleanup()

    asyncio.run(run())


# --- the voice track --------------------------------------------------------------------------


def take(track: OpusVoiceTrack, count: int) -> list:
    return [track.next_packet() for _ in range(count)]


def decode(packets: list) -> np.ndarray:
    """What a receiver hears (aiortc's decoder: 48 kHz stereo), as mono at RATE."""
    decoder = OpusDecoder()
    parts = [
        frame.to_ndarray().reshape(-1, 2)[:, 0]
        for packet in packets
        for frame in decoder.decode(JitterFrame(data=bytes(packet), timestamp=0))
    ]
    return np.concatenate(parts)[::2]


def frame_levels(samples: np.ndarray) -> list[float]:
    return [rms(samples[i : i + FRAME]) for i in range(0, len(samples) - FRAME + 1, FRAME)]


def test_a_conversations_backend_clients_share_the_trusted_certificates() -> None:
    """Loading the system's certificates takes 25 ms of CPU; a conversation that starts must
    not make each of its three backend clients do it on the event loop."""

    def tls_context(service) -> object:
        return service._client._client._transport._pool._ssl_context

    contexts = {
        id(tls_context(service))
        for _ in range(2)
        for service, _part, _backend in build_services(load_settings({}), RATE).parts()
    }
    assert len(contexts) == 1


async def test_silence_is_sent_without_encoding() -> None:
    track = OpusVoiceTrack(RATE)
    quiet = take(track, 50)
    settled = track.encoded_frames
    assert settled <= 10  # until the encoder has settled on silence
    track.add_audio_bytes(tone(0.2).tobytes())
    take(track, 10)
    assert track.encoded_frames == settled + 10  # every frame of speech
    quiet_again = take(track, 50)
    settled_again = track.encoded_frames
    assert settled_again <= settled + 10 + 10
    quiet_again += take(track, 50)
    assert track.encoded_frames == settled_again  # and no more
    assert len({bytes(packet) for packet in quiet[-40:] + quiet_again[-40:]}) == 1
    assert np.abs(decode(quiet[-40:] + quiet_again[-40:])).max() <= 2  # heard as silence


async def test_packets_carry_the_streams_clock() -> None:
    track = OpusVoiceTrack(RATE)
    track.add_audio_bytes(tone(0.1).tobytes())
    packets = take(track, 20)
    stamps = [convert_timebase(p.pts, p.time_base, RTP_CLOCK) for p in packets]
    assert stamps == [960 * i for i in range(20)]


@pytest.mark.parametrize("gap_frames", [2, 20])
async def test_what_is_sent_decodes_to_what_was_queued(gap_frames: int) -> None:
    """A sentence and a steady tone, with a gap between, are heard as they were queued,
    frame by frame, from the first frame on (a slow onset shows best on a steady tone)."""
    sentence = trim_silence(synthesize("Okay, the kitchen lights are on now.", RATE), 100)
    sentence = np.concatenate([sentence, np.zeros((-len(sentence)) % FRAME, "<i2")])
    track = OpusVoiceTrack(RATE)
    sent = take(track, 10)
    stream = [np.zeros(10 * FRAME, "<i2")]
    for utterance in (sentence, tone(0.4)):
        track.add_audio_bytes(utterance.tobytes())
        sent += take(track, len(utterance) // FRAME + gap_frames)
        stream += [utterance, np.zeros(gap_frames * FRAME, "<i2")]
    queued = np.concatenate(stream).astype(np.float64)
    heard = decode(sent).astype(np.float64)
    # The encoder's lookahead (6.5 ms) delays what is heard: line the two up.
    span = len(queued) - 400
    lag = max(range(400), key=lambda lag: float(np.dot(heard[lag : lag + span], queued[:span])))
    assert lag < 200
    levels = list(zip(frame_levels(heard[lag:]), frame_levels(queued), strict=False))

    def off_db(heard_level: float, queued_level: float) -> float:
        return abs(20 * np.log10(heard_level / queued_level))

    assert max(off_db(h, q) for h, q in levels if q > 1000) < 2
    assert np.mean([off_db(h, q) for h, q in levels if q > 300]) < 1
    assert max(h for h, q in levels if q <= 300) < 700
    tone_start = 10 + len(sentence) // FRAME + gap_frames
    assert off_db(*levels[tone_start]) < 1  # at full level from its first frame


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 3 * FRAME), st.integers(0, 5)),  # (samples written, packets taken)
        min_size=1,
        max_size=12,
    )
)
def test_writers_are_released_once_their_audio_is_sent_and_never_before(plan) -> None:
    async def run() -> None:
        track = OpusVoiceTrack(RATE)
        writes: list[tuple[int, asyncio.Future]] = []  # (bytes written by its end, future)
        queued = sent = 0
        for samples, packets in plan:
            queued += samples * 2
            writes.append((queued, track.add_audio_bytes(bytes(samples * 2))))
            for _ in range(packets):
                track.next_packet()
                sent = min(queued, sent + FRAME_BYTES)
                assert [f.done() for _, f in writes] == [end <= sent for end, _ in writes]
        while sent < queued:
            track.next_packet()
            sent = min(queued, sent + FRAME_BYTES)
        assert all(f.done() for _, f in writes)

    asyncio.run(run())


async def test_dropping_unplayed_audio_releases_its_writers() -> None:
    track = OpusVoiceTrack(RATE)
    waiting = track.add_audio_bytes(tone(2.0).tobytes())
    take(track, 5)
    drop_unplayed_audio(track)  # as after an ICE restart
    assert waiting.done()
    take(track, 10)
    encoded = track.encoded_frames
    take(track, 10)
    assert track.encoded_frames == encoded  # nothing left to say: silence again


async def test_packets_leave_every_20_ms() -> None:
    track = OpusVoiceTrack(RATE)
    started = time.monotonic()
    for index in range(25):
        await track.recv()
        elapsed = time.monotonic() - started
        assert elapsed >= index * 0.020 - 0.002  # never ahead of the stream's clock
    assert elapsed < 25 * 0.020 + 0.1  # and not behind it on an idle loop


def test_pipecat_keeps_its_own_track_where_opus_cannot_follow() -> None:
    assert isinstance(voice_output_track(RATE), OpusVoiceTrack)
    assert type(voice_output_track(22050)) is PIPECATS_OWN_TRACK  # no such Opus rate
    assert type(voice_output_track(RATE, auto_silence=False)) is PIPECATS_OWN_TRACK
