"""Voice detection that runs the model only where its answer can change something.

Pipecat's Silero analyzer judges 32 ms windows (512 samples at 16 kHz): a window is
speech when the model's confidence reaches ``confidence`` *and* the smoothed volume
reaches ``min_volume``. The volume follows from the audio alone, so where it is below
``min_volume`` the model's answer cannot change the decision. It can still change the
future: the model carries a recurrent state from window to window, and Pipecat resets
that state once two seconds of windows have passed, the voice detector is quiet and the
last five windows scored below 0.1. ``SileroVADByWindow`` works out each window's volume
first, exactly as Pipecat does, and skips the model for a window that is

- below ``min_volume`` (the decision is "not speech" whatever the model says),
- near digital silence (no sample beyond ±``NEAR_SILENCE``: in silence and room noise
  Silero scored such windows below 0.05, well under Pipecat's 0.1; only between the
  syllables of a whisper too quiet to pass the volume gate did some score more), and
- after five windows in a row that scored (or were skipped as) below 0.1, so that it is
  not the tail of speech the model still hears.

A skipped window counts towards Pipecat's reset as one that scored low, and is kept: when
the model is next needed, ``DeferredSileroModel`` first gives it the windows kept since
the model's last run or its last reset (about two seconds at most, a few milliseconds
of work), so its state is the one Pipecat's would have. Each window is run at most once.
Should a replayed window score 0.1 or more after all, the count of low windows is put
right; only a reset that such a window should have put off stays where it was (a model
reset in a quiet stretch, as Pipecat makes wherever its two-second count falls).
Frames that complete no window, and frames whose windows are all skipped, are judged on
the event loop; the analyzer's thread is used only when the model runs. And the volume of
0.4 s of digital silence is known to be nil without measuring its loudness.

A silent session (the digital silence of a muted or quiet microphone) then costs no
model runs. tests/test_vad_skip.py checks frame by frame that the states are Pipecat's
on speech at many levels in silence and noise, and counts replayed windows that scored
0.1 or more (``DeferredSileroModel.loud_replays``).

All analyzers in a process run on one loaded model (``silero_model()``), each with its own
recurrent state: loading it for every conversation stalled the worker's event loop.

This relies on private parts of the pinned Pipecat (``_vad_buffer``,
``_vad_frames_num_bytes``, ``_vad_state``, ``_run_analyzer``, ``_get_smoothed_volume``,
``_maybe_reset_model``, ``_low_confidence_windows``, ``_model``, the volume tracker and
its smoothing, and what ``SileroOnnxModel`` and ``SileroVADAnalyzer`` set up), all
exercised by those tests.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import deque
from importlib import resources
from typing import NamedTuple

import numpy as np
import onnxruntime
from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad import silero
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS

NEAR_SILENCE = 8  # int16 amplitude (-72 dBFS): windows within it are near digital silence
# Pipecat's own criteria for a reset of the model's state.
LOW_CONFIDENCE = silero._MODEL_RESET_MAX_CONFIDENCE
LOW_WINDOWS = silero._MODEL_RESET_LOW_CONFIDENCE_WINDOWS
SKIPPED_CONFIDENCE = 0.0  # what a skipped window scores: below every threshold
SAMPLE_BYTES = 2  # s16le mono


def model_input(window: bytes) -> np.ndarray:
    """A window's samples as the model gets them (Pipecat's conversion)."""
    return np.frombuffer(window, np.int16).astype(np.float32) / 32768.0


def near_silence(window: bytes) -> bool:
    samples = np.frombuffer(window, np.int16)
    return bool(samples.max() <= NEAR_SILENCE and samples.min() >= -NEAR_SILENCE)


@functools.cache
def _silero_session() -> onnxruntime.InferenceSession:
    """One ONNX Runtime session of Pipecat's Silero model for the whole process.

    Pipecat loads the model anew for every analyzer: 30 ms of CPU on the event loop
    each time a conversation starts, stalling every other conversation's audio. The
    session itself holds no state between calls (the model's state is passed in and out)
    and ONNX Runtime lets several threads run one session at once."""
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1  # as Pipecat sets them
    path = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
    return onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"], sess_options=options
    )


def silero_model() -> silero.SileroOnnxModel:
    """Pipecat's Silero model with a state of its own, on the process's one session."""
    model = silero.SileroOnnxModel.__new__(silero.SileroOnnxModel)
    model.session = _silero_session()
    model.sample_rates = [8000, 16000]
    model.reset_states()
    return model


class DeferredSileroModel:
    """Pipecat's Silero model, given the windows it skipped before it next runs."""

    def __init__(self, model: silero.SileroOnnxModel) -> None:
        self.model = model
        self._skipped: list[bytes] = []  # since the model's last run or reset
        self._reset_due = False
        self.runs = 0  # windows the model has judged, replayed ones included (for tests)
        self.loud_replays = 0  # replayed windows that scored LOW_CONFIDENCE or more

    def skip(self, window: bytes) -> None:
        self._skipped.append(window)

    def reset_states(self) -> None:
        """Pipecat's reset: what was skipped before it no longer matters."""
        self._skipped.clear()
        self._reset_due = True

    def catch_up(self, sample_rate: int) -> int | None:
        """Give the model the windows it skipped. Returns how many of them came after the
        last one that scored ``LOW_CONFIDENCE`` or more, or None if none did."""
        if self._reset_due:
            self.model.reset_states()
            self._reset_due = False
        low_since: int | None = None
        for window in self._skipped:
            if self._run(model_input(window), sample_rate)[0].item() >= LOW_CONFIDENCE:
                self.loud_replays += 1
                low_since = 0
            elif low_since is not None:
                low_since += 1
        self._skipped.clear()
        return low_since

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        self.catch_up(sample_rate)
        return self._run(samples, sample_rate)

    def _run(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        self.runs += 1
        return self.model(samples, sample_rate)


class WindowLevel(NamedTuple):
    volume: float  # smoothed, as Pipecat's ``_get_smoothed_volume`` gives it
    near_silence: bool


class SileroVADByWindow(silero.SileroVADAnalyzer):
    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None) -> None:
        # What Pipecat's ``SileroVADAnalyzer.__init__`` sets, but for loading the model.
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = DeferredSileroModel(silero_model())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        # The level of each window ``_run_analyzer`` is about to judge, in order.
        self._levels: deque[WindowLevel] = deque()
        self._zero_window = b""  # a window of digital silence, to compare with
        self._zero_bytes = 0  # how much digital silence the latest windows were, in a row

    async def analyze_audio(self, buffer: bytes) -> VADState:
        if len(self._vad_buffer) + len(buffer) < self._vad_frames_num_bytes:
            self._vad_buffer += buffer  # no whole window yet: what the thread would do
            return self._vad_state
        levels = self._measure_windows(self._vad_buffer + buffer)
        if all(self._may_skip(level) for level in levels):
            return self._run_analyzer(buffer)  # the model will not run: no thread needed
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_analyzer, buffer)

    def _measure_windows(self, pending: bytes) -> list[WindowLevel]:
        """The level of every whole window in ``pending``, queued for ``_run_analyzer``."""
        size = self._vad_frames_num_bytes
        if len(self._zero_window) != size:
            self._zero_window = bytes(size)
        volume = self._prev_volume
        levels = []
        for start in range(0, len(pending) - size + 1, size):
            window = pending[start : start + size]
            self._volume_tracker.update(window, self.sample_rate)
            zero = window == self._zero_window
            self._zero_bytes = self._zero_bytes + size if zero else 0
            # The loudness of the tracker's 0.4 s is nil when they are digital silence (below
            # BS.1770's gate): known without measuring.
            all_zero = self._zero_bytes >= self._volume_bytes()
            loudness = 0.0 if all_zero else self._volume_tracker.volume
            volume = exp_smoothing(loudness, volume, self._smoothing_factor)
            levels.append(WindowLevel(volume, zero or near_silence(window)))
        self._levels.extend(levels)
        return levels

    def _volume_bytes(self) -> int:
        """How much audio the volume is measured over (the tracker's rolling window)."""
        return math.ceil(VOLUME_WINDOW_SECS * self.sample_rate) * SAMPLE_BYTES

    def _may_skip(self, level: WindowLevel) -> bool:
        return (
            level.volume < self._params.min_volume
            and level.near_silence
            and self._low_confidence_windows >= LOW_WINDOWS
        )

    def _get_smoothed_volume(self, audio: bytes) -> float:
        return self._levels.popleft().volume  # measured already, in _measure_windows

    def voice_confidence(self, buffer) -> float:
        if self._may_skip(self._levels[0]):
            self._model.skip(bytes(buffer))
            self._maybe_reset_model(SKIPPED_CONFIDENCE)
            return SKIPPED_CONFIDENCE
        low_since = self._model.catch_up(self.sample_rate)
        if low_since is not None:  # a skipped window scored higher than it was counted
            self._low_confidence_windows = low_since
        return super().voice_confidence(buffer)
