"""Audio helpers shared by tests: speech in (Piper), words out (Whisper tiny.en), WAV files.

The engines are the same ones the Speaches stand-in uses (``tests/standins/engines.py``),
loaded once per process on first use. Synthesis is deterministic: the same text gives the
same samples on every run.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tests.standins import engines

LOUD_RMS = 300.0
"""int16 RMS above which a frame of received audio counts as sound, not silence or codec hiss."""


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file as mono int16 samples; returns (samples, sample_rate)."""
    samples, rate = engines.decode_wav(Path(path).read_bytes())
    return engines.float_to_int16(samples), rate


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono samples (int16, or float in [-1, 1]) as a 16-bit WAV file."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        samples = engines.float_to_int16(samples)
    path = Path(path)
    path.write_bytes(engines.encode_wav(samples, sample_rate))
    return path


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample mono int16 samples."""
    floats = engines.resample(engines.int16_to_float(samples), rate, target_rate)
    return engines.float_to_int16(floats)


def synthesize(text: str, sample_rate: int = 16000) -> np.ndarray:
    """Speak ``text`` with the Piper joe voice: mono int16 samples at ``sample_rate``."""
    return engines.synthesize(text, sample_rate)


def synthesize_wav(text: str, path: str | Path, sample_rate: int = 16000) -> Path:
    """Speak ``text`` into a mono 16-bit WAV file at ``sample_rate``."""
    return write_wav(path, synthesize(text, sample_rate), sample_rate)


def pad_with_silence(
    samples: np.ndarray, sample_rate: int, before: float = 0.5, after: float = 0.5
) -> np.ndarray:
    """Add ``before`` and ``after`` seconds of digital silence around the samples."""
    samples = np.asarray(samples)
    head = np.zeros(round(before * sample_rate), dtype=samples.dtype)
    tail = np.zeros(round(after * sample_rate), dtype=samples.dtype)
    return np.concatenate([head, samples, tail])


def is_loud(samples: np.ndarray) -> bool:
    """Whether int16 samples (a 20 ms frame, say) are louder than silence."""
    return bool(np.sqrt(np.mean(np.asarray(samples, dtype=np.float64) ** 2)) > LOUD_RMS)


def trim_silence(samples: np.ndarray, level: int = 300) -> np.ndarray:
    """Cut the synthesiser's own leading and trailing silence: the samples from the first to
    the last one whose amplitude is above ``level``."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > level)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def transcribe(audio: str | Path | bytes | np.ndarray, sample_rate: int | None = None) -> str:
    """Transcribe a WAV file, raw s16le PCM bytes, or int16/float samples with Whisper tiny.en.

    ``sample_rate`` is required for bytes and arrays, and ignored for a WAV file.
    """
    if isinstance(audio, str | Path):
        floats, sample_rate = engines.decode_wav(Path(audio).read_bytes())
    else:
        if sample_rate is None:
            raise ValueError("sample_rate is required for raw PCM or sample arrays")
        if isinstance(audio, bytes):
            audio = np.frombuffer(audio, dtype="<i2")
        floats = audio if audio.dtype.kind == "f" else engines.int16_to_float(audio)
    segments, _ = engines.transcribe_16k(engines.resample(floats, sample_rate, 16000))
    return "".join(segment.text for segment in segments).strip()


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation: "Hello, World!" → ["hello", "world"]."""
    words = re.findall(r"[a-z0-9']+", text.lower().replace("’", "'"))
    return [word.strip("'") for word in words if word.strip("'")]
