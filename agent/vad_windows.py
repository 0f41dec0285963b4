"""Voice detection that leaves the event loop only when there is a window to judge.

Pipecat's Silero analyzer judges 32 ms windows (512 samples at 16 kHz), and hands every
20 ms frame of the microphone to its own thread to do so: the frame is appended to a
buffer there, and the model runs once the buffer holds a whole window. For 3 frames in 8
there is no whole window yet, and the round trip to the thread (and the event loop's
wake-up when it answers) is for appending bytes. ``SileroVADByWindow`` appends those
frames on the event loop, exactly as the thread would have (the same buffer, the same
unchanged state returned), and goes to the thread only when the model will run. Measured
with 4 silent sessions: about 0.6 % of a core less per session.

This relies on three private attributes of Pipecat's ``VADAnalyzer`` (``_vad_buffer``,
``_vad_frames_num_bytes``, ``_vad_state``); tests/test_session_cost.py checks that it
reaches the same states as Pipecat's own analyzer on the same audio.
"""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState


class SileroVADByWindow(SileroVADAnalyzer):
    async def analyze_audio(self, buffer: bytes) -> VADState:
        if len(self._vad_buffer) + len(buffer) < self._vad_frames_num_bytes:
            self._vad_buffer += buffer  # no whole window yet: what the thread would do
            return self._vad_state
        return await super().analyze_audio(buffer)
