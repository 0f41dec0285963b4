"""LOG_TRANSCRIPTS=on: a conversation's words in the log, as "heard" and "said" lines.

"heard" is each transcript speech-to-text made of what the person said; "said" is each
piece of a reply as the text-to-speech service sends it out after its audio (a reply cut
short by the person is logged only as far as it was spoken). The observer is added to
a session's pipeline only when the setting is on: with it off, no words reach the log.
"""

from __future__ import annotations

import structlog
from pipecat.frames.frames import TranscriptionFrame, TTSTextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

log = structlog.get_logger("conversation")


class TranscriptLog(BaseObserver):
    def __init__(self, session: str | None = None) -> None:
        # Each frame once, where it is made, not again at every processor it passes.
        super().__init__(observe_every_push=False)
        self._log = log.bind(session=session) if session else log

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, TranscriptionFrame) and isinstance(data.source, STTService):
            self._log.info("heard", text=frame.text)
        elif isinstance(frame, TTSTextFrame) and isinstance(data.source, TTSService):
            self._log.info("said", text=frame.text)
