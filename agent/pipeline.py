"""Builds one conversation's Pipecat pipeline from the settings.

fault notice → transport in → STT → user aggregator (VAD + turn detection) → turn
continuation → LLM → TTS → transport out → cut-reply marks → assistant aggregator. Each call
makes fresh services and a fresh context, so sessions share nothing. Audio frames end where
they are spent (``agent.spent_audio``): the microphone's after the user aggregator, the bot's
after the output. A backend's failure is told to the person by the fault notice
(``agent.fault_notice``), which every error passes on its way upstream; it stands before the
transport's input so that the microphone's audio, which starts there, never passes it.
"""

from __future__ import annotations

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from agent.config import Settings
from agent.continuation import TurnContinuation
from agent.cut_replies import MarkCutReplies
from agent.fault_notice import FaultNotice
from agent.services import build_services
from agent.spent_audio import DropSpentAudio
from agent.transcript_log import TranscriptLog
from agent.turns import WholeSentenceStopStrategy
from agent.unheard_turns import UnheardTurnStopStrategy
from agent.vad_windows import SileroVADByWindow

AUDIO_IN_SAMPLE_RATE = 16000  # what Whisper wants
AUDIO_OUT_SAMPLE_RATE = 24000  # Kokoro's own rate; Speaches resamples other voices to it
TURN_STOP_MARGIN_SECS = 5.0


def _turn_strategies(settings: Settings) -> UserTurnStrategies:
    if settings.turn_detection == "smart-turn":
        return UserTurnStrategies()  # Pipecat's default: the local Smart Turn v3 model
    judged = settings.turn_detection != "silence"
    strategy = WholeSentenceStopStrategy(
        pause_secs=settings.turn_silence_secs,
        hesitation_secs=settings.turn_hesitation_secs,
        read_transcript=judged,
        hear_tone=settings.turn_detection == "transcript+smart-turn",
        speculate=settings.turn_speculation == "on",
    )
    # A turn that could not be transcribed at all ends after a hesitation's pause.
    unheard = UnheardTurnStopStrategy(pause_secs=settings.turn_hesitation_secs)
    return UserTurnStrategies(stop=[strategy, unheard])


def build_worker(
    connection: SmallWebRTCConnection, settings: Settings
) -> tuple[PipelineWorker, SmallWebRTCTransport]:
    transport = SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
    )
    services = build_services(settings, tts_sample_rate=AUDIO_OUT_SAMPLE_RATE)
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADByWindow(
                params=VADParams(
                    confidence=settings.vad_confidence,
                    start_secs=settings.vad_start_secs,
                    stop_secs=settings.vad_stop_secs,
                    min_volume=settings.vad_min_volume,
                )
            ),
            user_turn_strategies=_turn_strategies(settings),
            # Pipecat's last-resort end of a turn with no news for this long. Our strategy
            # waits for every transcription, which ends by the first-byte deadline at the
            # latest.
            user_turn_stop_timeout=settings.backend_first_byte_timeout_secs + TURN_STOP_MARGIN_SECS,
            # A turn with no words is noise, or speech that could not be transcribed, which
            # the fault notice answers; Pipecat would also have the LLM ask to repeat it.
            empty_user_turn=None,
        ),
    )
    pipeline = Pipeline(
        [
            FaultNotice(services.parts()),
            transport.input(),
            services.stt,
            aggregators.user(),
            DropSpentAudio(InputAudioRawFrame),
            TurnContinuation(context, resume_secs=settings.turn_resume_secs),
            services.llm,
            services.tts,
            transport.output(),
            DropSpentAudio(OutputAudioRawFrame),
            MarkCutReplies(),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=AUDIO_IN_SAMPLE_RATE,
            audio_out_sample_rate=AUDIO_OUT_SAMPLE_RATE,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
        idle_timeout_secs=settings.session_idle_timeout_secs,
        # Pipecat's turn tracking feeds only its tracing, which is off: one observer fewer
        # to hand every frame to.
        enable_turn_tracking=False,
    )
    if settings.log_transcripts == "on":
        worker.add_observer(TranscriptLog())
    return worker, transport
