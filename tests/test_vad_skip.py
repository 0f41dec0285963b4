"""Voice detection that skips the model in near silence decides exactly as Pipecat's does.

``SileroVADByWindow`` (agent/vad_windows.py) and Pipecat's own ``SileroVADAnalyzer`` are
fed the same audio, 20 ms at a time as the microphone delivers it: real speech (the Piper
voice, sentences said in one go and sentences with a hesitation in the middle) at levels
from normal to a whisper Silero still hears but the volume gate never lets through, with
digital silence or room noise around it. After every frame the two must be in the same
state, so speech starts and stops at the same frames and every turn comes out the same.
And it pays: a silent microphone costs no model runs and no trip to the analyzer's thread.
"""

from __future__ import annotations

import asyncio
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from agent.vad_windows import LOW_WINDOWS, NEAR_SILENCE, SileroVADByWindow
from tests.audio import synthesize, trim_silence
from tests.pause_set import COMPLETE, PAUSED, QUIET_LEVEL, paused_speech

RATE = 16000
FRAME_BYTES = 320 * 2  # 20 ms, as the pipeline hands the user aggregator its audio
WINDOW_SECS = 512 / RATE
RESET_WINDOWS = 63  # Pipecat resets the model after 2 s of windows (63 of 32 ms)
PARAMS = VADParams()  # the agent's defaults: confidence 0.7, 0.2 s / 0.2 s, volume 0.6


@cache
def clips() -> tuple[np.ndarray, ...]:
    """Sentences said in one go, and with a hesitation (a real pause inside)."""
    whole = [trim_silence(synthesize(u.text, RATE), QUIET_LEVEL) for u in COMPLETE[:3]]
    paused = [paused_speech(u, RATE) for u in PAUSED[:3]]
    return tuple(clip.astype(np.float64) for clip in whole + paused)


def room_noise(length: int, dbfs: float, seed: int) -> np.ndarray:
    """Pink noise (the spectrum of a room's hum and hiss) at an RMS of ``dbfs``."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).normal(size=length))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, length)
    return noise / np.sqrt(np.mean(noise**2)) * 32768 * 10 ** (dbfs / 20)


def scene(
    lead_secs: float,
    said: list[tuple[int, float, float]],  # (clip, gain dB, silence after it in s)
    noise_dbfs: float | None = None,
    seed: int = 0,
) -> bytes:
    parts = [np.zeros(round(lead_secs * RATE))]
    for clip, gain_db, after_secs in said:
        parts += [clips()[clip] * 10 ** (gain_db / 20), np.zeros(round(after_secs * RATE))]
    audio = np.concatenate(parts)
    if noise_dbfs is not None:
        audio += room_noise(len(audio), noise_dbfs, seed)
    return np.clip(np.round(audio), -32768, 32767).astype("<i2").tobytes()


def analyzer(kind: type[SileroVADAnalyzer]) -> SileroVADAnalyzer:
    vad = kind(params=PARAMS)
    vad.set_sample_rate(RATE)
    return vad


async def both_states(audio: bytes) -> tuple[list[VADState], list[VADState], SileroVADByWindow]:
    """The state after each 20 ms frame: Pipecat's analyzer's, then ours. The smoothed
    volume must be Pipecat's to the last bit all along."""
    pipecats, ours = analyzer(SileroVADAnalyzer), analyzer(SileroVADByWindow)
    theirs_seen, ours_seen = [], []
    for start in range(0, len(audio), FRAME_BYTES):
        frame = audio[start : start + FRAME_BYTES]
        theirs_seen.append(await pipecats.analyze_audio(frame))
        ours_seen.append(await ours.analyze_audio(frame))
        assert ours._prev_volume == pipecats._prev_volume
    await pipecats.cleanup()
    await ours.cleanup()
    return theirs_seen, ours_seen, ours


def speech_spans(states: list[VADState]) -> list[tuple[int, int]]:
    """(first SPEAKING frame, first QUIET frame after it): what the user aggregator acts on."""
    spans, start = [], None
    for index, state in enumerate(states):
        if state is VADState.SPEAKING and start is None:
            start = index
        elif state is VADState.QUIET and start is not None:
            spans.append((start, index))
            start = None
    return spans + ([(start, len(states))] if start is not None else [])


def windows(audio: bytes) -> int:
    return len(audio) // (512 * 2)


# --- the same decisions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "noise_dbfs", [None, -90.0, -80.0, -60.0], ids=["silence", "-90dBFS", "-80dBFS", "-60dBFS"]
)
async def test_a_conversation_is_heard_as_pipecat_hears_it(noise_dbfs: float | None) -> None:
    """Six sentences (three with a hesitation) with pauses of 0.3 to 5 s between them,
    the last said quietly, in silence or in a room's noise."""
    said = [(0, 0, 5.0), (3, -6, 0.3), (1, 0, 2.5), (4, 0, 4.0), (2, -12, 1.0), (5, -20, 1.0)]
    audio = scene(2.0, said, noise_dbfs, seed=1)
    theirs, ours, vad = await both_states(audio)
    assert ours == theirs
    assert len(speech_spans(theirs)) >= 6  # every sentence was heard (hesitations split some)
    assert vad._model.loud_replays == 0  # no skipped window would have scored 0.1 or more
    if noise_dbfs is None or noise_dbfs <= -90:
        # Silence between sentences was not judged by the model, bar what a return replays.
        assert vad._model.runs < 0.8 * windows(audio)


@settings(max_examples=100, deadline=None)
@given(
    lead_secs=st.floats(0.0, 2.5),
    said=st.lists(
        st.tuples(
            st.integers(0, len(PAUSED[:3]) + len(COMPLETE[:3]) - 1),
            st.floats(-65.0, 6.0),  # from a whisper the volume gate keeps out to loud
            st.floats(0.0, 3.0),
        ),
        min_size=1,
        max_size=2,
    ),
    noise_dbfs=st.none() | st.floats(-110.0, -75.0),  # around near silence (±8 = -72 dBFS peak)
    seed=st.integers(0, 2**16),
)
def test_every_frame_ends_in_pipecats_state(
    lead_secs: float, said: list[tuple[int, float, float]], noise_dbfs: float | None, seed: int
) -> None:
    audio = scene(lead_secs, said, noise_dbfs, seed)
    theirs, ours, _vad = asyncio.run(both_states(audio))
    assert ours == theirs


async def test_the_model_is_where_pipecats_is_whenever_it_runs() -> None:
    """Whispers Silero hears but the volume gate keeps out, then a sentence said aloud: each
    time our model runs, its recurrent state and Pipecat's bookkeeping of resets are
    exactly those of Pipecat's analyzer, including after skipped windows of a whisper that
    scored higher on replay than they had been counted."""
    said = [(3, -60, 1.0), (0, -55, 2.5), (4, -62, 0.5), (1, 0, 1.0)]
    audio = scene(2.5, said)
    pipecats, ours = analyzer(SileroVADAnalyzer), analyzer(SileroVADByWindow)
    compared = 0
    for start in range(0, len(audio), FRAME_BYTES):
        frame = audio[start : start + FRAME_BYTES]
        runs = ours._model.runs
        assert await ours.analyze_audio(frame) == await pipecats.analyze_audio(frame)
        if ours._model.runs > runs:
            compared += 1
            theirs_model, our_model = pipecats._model, ours._model.model
            if ours._model._reset_due:  # Pipecat reset its model after this window; ours will
                assert not theirs_model._state.any() and not theirs_model._context.size
            else:
                assert np.array_equal(our_model._state, theirs_model._state)
                assert np.array_equal(our_model._context, theirs_model._context)
            assert ours._windows_since_reset == pipecats._windows_since_reset
            assert ours._low_confidence_windows == pipecats._low_confidence_windows
    assert ours._model.loud_replays > 0  # the whispers did put the count right
    assert compared < 0.8 * windows(audio)  # and much of the audio was skipped
    await pipecats.cleanup()
    await ours.cleanup()


async def test_conversations_at_once_share_the_model_but_not_its_state() -> None:
    """Every analyzer in a process runs on one loaded model (loading it took 30 ms of the
    event loop for each conversation that started). Fed different audio at the same time,
    each in its own thread, each still decides exactly as a Pipecat analyzer of its own."""
    scenes = [scene(0.5, [(0, 0, 1.0), (4, -6, 0.8)]), scene(1.0, [(1, -3, 1.5)], -60.0, seed=3)]
    ours = [analyzer(SileroVADByWindow) for _ in scenes]
    assert ours[0]._model.model.session is ours[1]._model.model.session

    async def feed(vad: SileroVADAnalyzer, audio: bytes) -> list[VADState]:
        return [
            await vad.analyze_audio(audio[start : start + FRAME_BYTES])
            for start in range(0, len(audio), FRAME_BYTES)
        ]

    heard = await asyncio.gather(
        *(feed(vad, audio) for vad, audio in zip(ours, scenes, strict=True))
    )
    for vad, audio, states in zip(ours, scenes, heard, strict=True):
        await vad.cleanup()
        assert states == await feed(analyzer(SileroVADAnalyzer), audio)
        assert speech_spans(states), "no speech was heard: the comparison compared nothing"


# --- what it saves ------------------------------------------------------------------------------


async def test_a_silent_microphone_costs_no_model_runs_and_no_thread() -> None:
    vad = analyzer(SileroVADByWindow)
    silence = bytes(FRAME_BYTES)
    for _ in range(50):  # the first windows are judged: the model has to score them low
        await vad.analyze_audio(silence)
    runs = vad._model.runs
    assert LOW_WINDOWS <= runs <= LOW_WINDOWS + 1
    for _ in range(500):  # 10 s
        judging = vad.analyze_audio(silence)
        with pytest.raises(StopIteration) as done:  # judged without waiting on anything
            judging.send(None)
        assert done.value.value is VADState.QUIET
    assert vad._model.runs == runs
    await vad.cleanup()


async def test_speech_after_a_long_silence_replays_two_seconds_at_most() -> None:
    """The model catches up on the windows since Pipecat's last reset of it, not on the
    whole silence."""
    audio = scene(0.5, [(0, 0, 30.0), (1, 0, 0.5)])
    vad = analyzer(SileroVADByWindow)
    runs_per_frame = []
    for start in range(0, len(audio), FRAME_BYTES):
        before = vad._model.runs
        await vad.analyze_audio(audio[start : start + FRAME_BYTES])
        runs_per_frame.append(vad._model.runs - before)
    await vad.cleanup()
    pause = slice(round(5.0 / 0.02), round(30.0 / 0.02))  # well inside the 30 s pause
    assert sum(runs_per_frame[pause]) == 0
    assert max(runs_per_frame) <= RESET_WINDOWS + 1  # the return: a catch-up and its window
    assert max(runs_per_frame) > 1  # (there was one)


async def test_near_silence_is_skipped_and_anything_louder_is_judged() -> None:
    """After settling on silence: noise within ±NEAR_SILENCE costs no model run; a window
    beyond it runs the model."""
    vad = analyzer(SileroVADByWindow)
    for _ in range(50):
        await vad.analyze_audio(bytes(FRAME_BYTES))
    rng = np.random.default_rng(0)
    hiss = rng.integers(-NEAR_SILENCE, NEAR_SILENCE + 1, size=RATE * 2).astype("<i2")
    runs = vad._model.runs
    for start in range(0, len(hiss), 320):
        await vad.analyze_audio(hiss[start : start + 320].tobytes())
    assert vad._model.runs == runs
    await vad.analyze_audio(np.full(512, NEAR_SILENCE + 1, "<i2").tobytes())
    assert vad._model.runs > runs
    await vad.cleanup()
