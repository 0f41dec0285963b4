"""A second opinion on the end of a turn, from how it sounds.

Whisper can make a half sentence read as finished ("a table for" comes back as "a table
for it."), but the voice still rises or hangs where a person means to go on. Pipecat
ships the Smart Turn v3.2 model, which judges exactly that from the last 8 s of a turn's
audio; it takes about 45 ms on one core. One model is loaded per process and shared by
every session, and it runs on one thread of its own, off the event loop, while the
segment is being transcribed, so it adds no wait of its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.resources import files

import numpy as np
import onnxruntime as ort

# Pipecat's own implementation of Whisper's features (private upstream: the pinned
# version is tested).
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

SAMPLE_RATE = 16000  # the model's and the pipeline's input rate
WINDOW_SECS = 8  # the model hears the turn's last 8 s
FINISHED_ABOVE = 0.5  # the model's own threshold

_runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")


@cache
def _model() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = 1  # the event loop keeps the other core
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = files("pipecat.audio.turn.smart_turn.data").joinpath("smart-turn-v3.2-cpu.onnx")
    return ort.InferenceSession(str(path), sess_options=options)


def finished_probability(samples: np.ndarray) -> float:
    """How likely the speech in ``samples`` (16 kHz int16, the turn's end last) is a
    finished turn."""
    audio = samples[-WINDOW_SECS * SAMPLE_RATE :].astype(np.float32) / 32768.0
    audio = np.pad(audio, (WINDOW_SECS * SAMPLE_RATE - len(audio), 0))
    features = compute_whisper_log_mel_features(audio, do_normalize=True)[np.newaxis]
    (output,) = _model().run(None, {"input_features": features})[:1]
    return float(np.asarray(output).reshape(-1)[0])


async def sounds_finished(samples: np.ndarray) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_runner, finished_probability, samples) > FINISHED_ABOVE


class TurnAudio:
    """The last ``WINDOW_SECS`` of a turn's audio."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._bytes = 0

    def add(self, audio: bytes) -> None:
        self._chunks.append(audio)
        self._bytes += len(audio)
        while self._bytes - len(self._chunks[0]) >= WINDOW_SECS * SAMPLE_RATE * 2:
            self._bytes -= len(self._chunks.popleft())

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0

    def samples(self) -> np.ndarray:
        return np.frombuffer(b"".join(self._chunks), dtype=np.int16)
