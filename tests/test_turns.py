"""End of turn with segmented speech-to-text: never before every segment is transcribed."""

from __future__ import annotations

import asyncio

from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager

from agent.turns import WholeSentenceStopStrategy

PAUSE = 0.05


async def started_strategy(**kwargs) -> tuple[WholeSentenceStopStrategy, asyncio.Event]:
    task_manager = TaskManager(loop=asyncio.get_running_loop())
    strategy = WholeSentenceStopStrategy(user_speech_timeout=PAUSE, **kwargs)
    await strategy.setup(
        FrameProcessorSetup(clock=SystemClock(), task_manager=task_manager, pipeline_worker=None)
    )
    stopped = asyncio.Event()

    @strategy.event_handler("on_user_turn_stopped")
    async def on_stopped(_strategy, *_args):
        stopped.set()

    return strategy, stopped


def transcript(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text=text, user_id="", timestamp="", finalized=True)


async def speak_segment(strategy: WholeSentenceStopStrategy) -> None:
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))


async def test_the_turn_waits_for_a_late_transcript_of_the_first_half() -> None:
    strategy, stopped = await started_strategy()
    await speak_segment(strategy)  # "I would like to know,"
    await speak_segment(strategy)  # "the weather in Paris"
    await strategy.process_frame(transcript("I would like to know."))
    # The pause has long passed and a transcript is here, but one is still on its way.
    await asyncio.sleep(PAUSE * 4)  # let the pause timer run out: nothing must happen
    assert not stopped.is_set()
    await strategy.process_frame(transcript("the weather in Paris."))
    await asyncio.wait_for(stopped.wait(), 2)
    await strategy.cleanup()


async def test_a_segment_that_never_yields_text_does_not_hold_the_turn_forever() -> None:
    strategy, stopped = await started_strategy(unanswered_segment_cap_secs=0.3)
    await speak_segment(strategy)
    await strategy.process_frame(transcript("Turn on the lights."))
    await speak_segment(strategy)  # a cough: Whisper returns no text, no transcript comes
    await asyncio.wait_for(stopped.wait(), 2)
    await strategy.cleanup()


async def test_speaking_again_restarts_the_wait() -> None:
    strategy, stopped = await started_strategy(unanswered_segment_cap_secs=0.2)
    await speak_segment(strategy)
    await strategy.process_frame(transcript("One."))
    await speak_segment(strategy)
    await strategy.process_frame(VADUserStartedSpeakingFrame())  # still talking
    await asyncio.sleep(0.4)  # past the cap: a speaking user is never cut off
    assert not stopped.is_set()
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await strategy.process_frame(transcript("Two."))
    await strategy.process_frame(transcript("Three."))
    await asyncio.wait_for(stopped.wait(), 2)
    await strategy.cleanup()
