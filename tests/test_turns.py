"""End of turn with segmented speech-to-text: never before every segment is transcribed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager

from agent.turns import Outcome, SegmentTranscribedFrame, WholeSentenceStopStrategy

PAUSE = 0.6  # TURN_SILENCE_SECS's default
FRAME_SECS = 0.02
SILENT_FRAME = bytes(int(16000 * FRAME_SECS) * 2)  # 20 ms of 16 kHz mono silence


@asynccontextmanager
async def started_strategy(
    pause: float = PAUSE,
) -> AsyncIterator[tuple[WholeSentenceStopStrategy, asyncio.Event]]:
    """A strategy set up as a pipeline would, and an event set when it ends the turn."""
    task_manager = TaskManager(loop=asyncio.get_running_loop())
    strategy = WholeSentenceStopStrategy(user_speech_timeout=pause)
    await strategy.setup(
        FrameProcessorSetup(clock=SystemClock(), task_manager=task_manager, pipeline_worker=None)
    )
    stopped = asyncio.Event()
    strategy.in_flight_at_stops = []  # for the property test: checked at the moment of a stop

    @strategy.event_handler("on_user_turn_stopped")
    async def on_stopped(_strategy, *_args):
        strategy.in_flight_at_stops.append(strategy.segments_in_flight)
        stopped.set()

    try:
        yield strategy, stopped
    finally:
        await strategy.cleanup()


async def transcribed(strategy: WholeSentenceStopStrategy, text: str) -> None:
    """A segment's transcription ends with text, as the STT service reports it."""
    await strategy.process_frame(
        TranscriptionFrame(text=text, user_id="", timestamp="", finalized=True)
    )
    await strategy.process_frame(SegmentTranscribedFrame(outcome="text"))


async def ended_without_text(strategy: WholeSentenceStopStrategy, outcome: Outcome) -> None:
    """A segment's transcription ends with no text (a cough) or fails."""
    await strategy.process_frame(SegmentTranscribedFrame(outcome=outcome))


async def speak_segment(strategy: WholeSentenceStopStrategy) -> None:
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))


async def hear_silence(strategy: WholeSentenceStopStrategy, secs: float) -> None:
    """The microphone's audio of ``secs`` of silence reaches the strategy, as it does in
    the pipeline: the pause is measured in audio heard, not in wall-clock time."""
    for _ in range(round(secs / FRAME_SECS)):
        await strategy.process_frame(
            InputAudioRawFrame(audio=SILENT_FRAME, sample_rate=16000, num_channels=1)
        )


async def let_the_pause_pass(strategy: WholeSentenceStopStrategy, times: float = 2) -> None:
    """Let ``times`` the pause pass in audio (what must not happen then is checked by the
    caller)."""
    await hear_silence(strategy, PAUSE * times)


async def test_the_turn_waits_for_a_late_transcript_of_the_first_half() -> None:
    async with started_strategy() as (strategy, stopped):
        await speak_segment(strategy)  # "I would like to know,"
        await speak_segment(strategy)  # "the weather in Paris"
        await transcribed(strategy, "I would like to know.")
        # The pause has long passed and a transcript is here, but one is still on its way.
        await let_the_pause_pass(strategy)
        assert not stopped.is_set()
        await transcribed(strategy, "the weather in Paris.")
        await asyncio.wait_for(stopped.wait(), 2)


async def test_a_transcription_slower_than_any_timer_still_holds_the_turn() -> None:
    async with started_strategy() as (strategy, stopped):
        await speak_segment(strategy)
        await transcribed(strategy, "My train leaves at eight thirty,")
        await speak_segment(strategy)  # "how long until then?": its transcription is slow
        await let_the_pause_pass(strategy, times=6)  # past the old 3 s cap
        assert not stopped.is_set(), "a slow transcription must never split the sentence"
        await transcribed(strategy, "how long until then?")
        await asyncio.wait_for(stopped.wait(), 2)


async def test_the_pause_is_counted_in_audio_heard_not_in_wall_clock_time() -> None:
    """On a busy machine audio is worked through in bursts: however long the wall clock
    says it has been, the turn ends only once the pause has been heard in the audio."""
    async with started_strategy() as (strategy, stopped):
        await speak_segment(strategy)
        await transcribed(strategy, "My train leaves at eight thirty,")
        await asyncio.sleep(PAUSE * 2)  # wall-clock time passes, with no audio processed
        assert not stopped.is_set(), "a wall-clock pause would cut the sentence here"
        await hear_silence(strategy, PAUSE * 0.5)  # the person resumes within the pause
        await strategy.process_frame(VADUserStartedSpeakingFrame())
        await hear_silence(strategy, PAUSE * 2)  # (speaking: the detector says so)
        assert not stopped.is_set()
        await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await transcribed(strategy, "how long until then?")
        await hear_silence(strategy, PAUSE)
        await asyncio.wait_for(stopped.wait(), 2)


@pytest.mark.parametrize("outcome", ["empty", "failed"])
async def test_a_segment_without_text_is_accounted_for_at_once(outcome: Outcome) -> None:
    async with started_strategy() as (strategy, stopped):
        await speak_segment(strategy)
        await transcribed(strategy, "Turn on the lights.")
        await speak_segment(strategy)  # a cough (no text), or a transcription that failed
        await let_the_pause_pass(strategy)
        assert not stopped.is_set()
        await ended_without_text(strategy, outcome)
        await asyncio.wait_for(stopped.wait(), 2)


async def test_speaking_again_restarts_the_wait() -> None:
    async with started_strategy() as (strategy, stopped):
        await speak_segment(strategy)
        await transcribed(strategy, "One.")
        await speak_segment(strategy)
        await strategy.process_frame(VADUserStartedSpeakingFrame())  # still talking
        await ended_without_text(strategy, "empty")
        await let_the_pause_pass(strategy)
        assert not stopped.is_set(), "a speaking user is never cut off"
        await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await transcribed(strategy, "Two.")
        await hear_silence(strategy, PAUSE * 0.9)
        assert not stopped.is_set(), "the pause is not over yet"
        await hear_silence(strategy, PAUSE * 0.2)
        await asyncio.wait_for(stopped.wait(), 2)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    outcomes=st.lists(st.sampled_from(["text", "empty", "failed"]), min_size=1, max_size=4),
)
async def test_a_turn_never_ends_with_a_transcription_running(data, outcomes) -> None:
    """Segments spoken and transcriptions ending in any interleaving, with pauses between:
    no turn ends while a spoken segment is still being transcribed, and every text ends
    up in a turn that ends."""
    # Results come in order (one background task per session), never before their segment.
    events: list[str] = []
    spoken = answered = 0
    while answered < len(outcomes):
        if spoken < len(outcomes) and (spoken == answered or data.draw(st.booleans())):
            events.append("speak")
            spoken += 1
        else:
            events.append("result")
            answered += 1
    async with started_strategy() as (strategy, stopped):
        text_since_stop = False
        results = iter(outcomes)
        for number, event in enumerate(events):
            if event == "speak":
                await speak_segment(strategy)
            elif (outcome := next(results)) == "text":
                await transcribed(strategy, f"part {number}.")
                text_since_stop = True
            else:
                await ended_without_text(strategy, outcome)
            await let_the_pause_pass(strategy)
            if stopped.is_set():  # as the pipeline's turn controller does after a stop
                stopped.clear()
                text_since_stop = False
                await strategy.handle_user_turn_stopped()
        if text_since_stop:
            await asyncio.wait_for(stopped.wait(), 2)
        stops = strategy.in_flight_at_stops
        assert stops == [0] * len(stops), f"a turn ended with transcriptions running: {events}"
        assert len(stops) <= outcomes.count("text")
        assert bool(stops) == ("text" in outcomes)
