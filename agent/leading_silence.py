"""Drops the silence that synthesised speech starts with, as the audio streams in.

Piper starts every utterance with 25-60 ms of near silence (below -80 dBFS) before the
voice rises; before a reply's first words that is time the person spends waiting. The
samples before the first audible one are dropped, except the last few milliseconds, which
are faded in from zero so that the cut can never click. Audio that turns audible at once is
passed on untouched, and so is a start that stays quiet for longer than anything a speech
engine pads with (it is left as the engine made it).
"""

from __future__ import annotations

import numpy as np

SAMPLE_BYTES = 2  # s16le mono
AUDIBLE_DBFS = -50.0
"""A sample this loud or louder is speech: Piper's padding stays below -80 dBFS, and the
rise of a voiced onset passes -50 dBFS within a few milliseconds of leaving it."""
KEEP_SECS = 0.010
"""Kept before the first audible sample: the very start of the onset, below the threshold."""
MAX_TRIM_SECS = 0.5
"""No onset by then: this utterance starts with a real pause, not padding; keep it."""

AUDIBLE_LEVEL = round(32768 * 10 ** (AUDIBLE_DBFS / 20))


class LeadingSilenceTrimmer:
    """Feed the PCM of one utterance as it arrives; each call returns what can be played.

    Until the first audible sample arrives nothing is returned (that audio would only be
    silence); from then on every byte passes straight through. With ``trim=False`` every
    byte passes straight through from the start.
    """

    def __init__(self, sample_rate: int, *, trim: bool = True) -> None:
        self._keep = round(KEEP_SECS * sample_rate)
        self._max_samples = round(MAX_TRIM_SECS * sample_rate)
        self._held = bytearray()
        self._done = not trim
        self.dropped_samples = 0

    def feed(self, pcm: bytes) -> bytes:
        if self._done:
            return pcm
        self._held += pcm
        whole = len(self._held) - len(self._held) % SAMPLE_BYTES
        samples = np.frombuffer(bytes(self._held[:whole]), dtype="<i2")
        start = samples[: self._max_samples].astype(np.int32)
        audible = np.flatnonzero(np.abs(start) >= AUDIBLE_LEVEL)
        if audible.size:
            return self._release(samples, onset=int(audible[0]), tail=self._held[whole:])
        if samples.size >= self._max_samples:
            return self.flush()
        return b""

    def flush(self) -> bytes:
        """The end of the utterance (or of waiting for an onset): what is held, untouched."""
        self._done = True
        held, self._held = bytes(self._held), bytearray()
        return held

    def _release(self, samples: np.ndarray, onset: int, tail: bytearray) -> bytes:
        self._done = True
        self._held = bytearray()
        start = max(0, onset - self._keep)
        if start == 0:
            return samples.tobytes() + bytes(tail)
        self.dropped_samples = start
        kept = samples[start:].astype(np.float32)
        fade = onset - start
        # 0 at the cut, rising to 1 at the onset: the audible samples are left as they are.
        kept[:fade] *= np.arange(fade, dtype=np.float32) / fade
        return np.round(kept).astype("<i2").tobytes() + bytes(tail)
