"""End of turn with segmented speech-to-text: never before every segment is transcribed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
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
from pipecat.turns.types import UserTurnSpeculation
from pipecat.utils.asyncio.task_manager import TaskManager

from agent.turns import (
    Outcome,
    SegmentTranscribedFrame,
    WholeSentenceStopStrategy,
)
from tests.audio import synthesize, trim_silence
from tests.pause_set import QUIET_LEVEL, comma_gap

PAUSE = 0.6
FRAME_SECS = 0.02
SILENT_FRAME = bytes(int(16000 * FRAME_SECS) * 2)  # 20 ms of 16 kHz mono silence


@asynccontextmanager
async def started_strategy(
    pause: float = PAUSE,
) -> AsyncIterator[tuple[WholeSentenceStopStrategy, asyncio.Event]]:
    """A strategy set up as a pipeline would, and an event set when it ends the turn."""
    task_manager = TaskManager(loop=asyncio.get_running_loop())
    strategy = WholeSentenceStopStrategy(pause_secs=pause)
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


SHORT, LONG = 0.15, 1.5  # TURN_SILENCE_SECS and TURN_HESITATION_SECS's defaults


@asynccontextmanager
async def transcript_strategy(
    speculate: bool = False, hear_tone: bool = False
) -> AsyncIterator[TurnEvents]:
    """A strategy that ends turns by what they say, and what it told the pipeline."""
    task_manager = TaskManager(loop=asyncio.get_running_loop())
    strategy = WholeSentenceStopStrategy(
        pause_secs=SHORT,
        hesitation_secs=LONG,
        read_transcript=True,
        hear_tone=hear_tone,
        speculate=speculate,
    )
    await strategy.setup(
        FrameProcessorSetup(clock=SystemClock(), task_manager=task_manager, pipeline_worker=None)
    )
    events = TurnEvents(strategy)
    try:
        yield events
    finally:
        await strategy.cleanup()


class TurnEvents:
    """What a strategy told the user aggregator, in order."""

    def __init__(self, strategy: WholeSentenceStopStrategy) -> None:
        self.strategy = strategy
        self.told: list[tuple[str, str]] = []  # (event, the turn's text when it fired)

        @strategy.event_handler("on_user_turn_inference_triggered")
        async def on_inference(_strategy, speculation: UserTurnSpeculation | None) -> None:
            self.told.append(("speculate" if speculation else "infer", strategy._text))

        @strategy.event_handler("on_user_turn_speculation_cancelled")
        async def on_cancelled(_strategy) -> None:
            self.told.append(("withdraw", strategy._text))

        @strategy.event_handler("on_user_turn_stopped")
        async def on_stopped(_strategy, params) -> None:
            self.told.append(("confirm" if params.confirms_speculation else "stop", ""))

    def stops(self) -> int:
        return sum(event in ("stop", "confirm") for event, _ in self.told)


async def said(strategy: WholeSentenceStopStrategy, text: str) -> None:
    await speak_segment(strategy)
    await transcribed(strategy, text)


async def test_a_finished_sentence_ends_the_turn_after_a_short_pause() -> None:
    async with transcript_strategy() as turn:
        await said(turn.strategy, "Please turn on the kitchen lights.")
        await hear_silence(turn.strategy, SHORT - FRAME_SECS)
        assert turn.stops() == 0
        await hear_silence(turn.strategy, FRAME_SECS * 2)
        assert turn.stops() == 1


@pytest.mark.parametrize(
    "first_half", ["I'd like to book a table for.", "Set a timer for, um,", "What's the weather in"]
)
async def test_a_sentence_that_trails_off_waits_and_the_rest_joins_the_turn(first_half) -> None:
    async with transcript_strategy() as turn:
        await said(turn.strategy, first_half)
        await hear_silence(turn.strategy, LONG - FRAME_SECS)  # a long hesitation
        assert turn.stops() == 0, "a person who hesitates mid-sentence was cut off"
        await said(turn.strategy, "four people tomorrow evening.")
        await hear_silence(turn.strategy, SHORT + FRAME_SECS)
        whole = f"{first_half} four people tomorrow evening."
        assert turn.told == [("infer", whole), ("stop", "")]
        assert turn.strategy._text == f"{first_half} four people tomorrow evening."


async def test_a_speculative_reply_is_confirmed_by_the_end_of_the_turn() -> None:
    async with transcript_strategy(speculate=True) as turn:
        await said(turn.strategy, "What time is it?")
        assert turn.told == [("speculate", "What time is it?")], "no reply was started early"
        await hear_silence(turn.strategy, SHORT + FRAME_SECS)
        assert turn.told == [("speculate", "What time is it?"), ("confirm", "")]


async def test_a_speculative_reply_is_withdrawn_when_the_person_goes_on() -> None:
    async with transcript_strategy(speculate=True) as turn:
        await said(turn.strategy, "Book a table for.")
        await hear_silence(turn.strategy, 0.7)
        await said(turn.strategy, "two tonight.")
        await hear_silence(turn.strategy, SHORT + FRAME_SECS)
    first, whole = "Book a table for.", "Book a table for. two tonight."
    assert turn.told == [
        ("speculate", first),
        ("withdraw", first),
        ("speculate", whole),
        ("confirm", ""),
    ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.one_of(
            st.sampled_from(["Okay.", "a table for", "the kitchen lights.", "um,"]),
            st.floats(0.0, 2.0),
        ),
        min_size=1,
        max_size=8,
    )
)
async def test_every_speculation_is_settled_once_and_only_for_what_was_said(steps) -> None:
    """Any mix of speech and pauses: a speculative reply is confirmed only for the text
    the turn ends with, each is confirmed or withdrawn exactly once, and no turn ends
    without a reply started for it."""
    async with transcript_strategy(speculate=True) as turn:
        for step in steps:
            if isinstance(step, str):
                await said(turn.strategy, step)
            else:
                await hear_silence(turn.strategy, step)
            if turn.told and turn.told[-1][0] in ("stop", "confirm"):
                await turn.strategy.handle_user_turn_stopped()
        await turn.strategy.handle_user_turn_started()  # a new turn settles what is left
    open_speculation: str | None = None
    inferred = False
    for event, text in turn.told:
        if event == "speculate":
            assert open_speculation is None, f"two speculations at once: {turn.told}"
            open_speculation = text
        elif event == "withdraw":
            assert open_speculation is not None, f"withdrew nothing: {turn.told}"
            open_speculation = None
        elif event == "confirm":
            assert open_speculation is not None, f"confirmed nothing: {turn.told}"
            open_speculation = None
        elif event == "infer":
            assert open_speculation is None, f"a second reply beside a speculation: {turn.told}"
            inferred = True
        else:
            assert inferred, f"a turn ended with no reply started: {turn.told}"
            inferred = False
    assert open_speculation is None, f"a speculation was left unsettled: {turn.told}"


def first_half_audio(sentence: str, first: str) -> np.ndarray:
    """The words of ``sentence`` before its comma, as Piper says them with more to come."""
    whole = trim_silence(synthesize(sentence, 16000), QUIET_LEVEL)
    alone = trim_silence(synthesize(f"{first},", 16000), QUIET_LEVEL)
    start, _ = comma_gap(whole, alone, 16000)
    return whole[:start]


async def hear_speech(strategy: WholeSentenceStopStrategy, samples: np.ndarray) -> None:
    """Speech then the voice detector's stop, as the pipeline delivers them."""
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    samples = np.concatenate([samples, np.zeros(3200, np.int16)])  # VAD_STOP_SECS of quiet
    step = int(16000 * FRAME_SECS)
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step].tobytes()
        await strategy.process_frame(
            InputAudioRawFrame(audio=chunk, sample_rate=16000, num_channels=1)
        )
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))


@pytest.mark.parametrize(
    ("sentence", "first", "transcript"),
    [
        (
            "Add a meeting with Sarah on, Thursday at three.",
            "Add a meeting with Sarah on",
            "Add a meeting with Sarah on.",
        ),
        (
            "Send a message to my, um, brother.",
            "Send a message to my, um",
            "Send a message to mum.",
        ),
    ],
)
async def test_a_voice_that_trails_off_waits_even_if_the_transcript_reads_finished(
    sentence, first, transcript
) -> None:
    """Whisper can make half a sentence read as finished; the Smart Turn model still
    hears the voice hang, and the person gets the long pause to go on."""
    audio = await asyncio.to_thread(first_half_audio, sentence, first)
    async with transcript_strategy(hear_tone=True) as turn:
        await hear_speech(turn.strategy, audio)
        await transcribed(turn.strategy, transcript)
        await wait_until_judged(turn.strategy)
        await hear_silence(turn.strategy, LONG - FRAME_SECS)
        assert turn.stops() == 0, "the turn ended while the voice said there was more"
        await hear_silence(turn.strategy, FRAME_SECS * 2)
        assert turn.stops() == 1


async def test_a_finished_sentence_that_sounds_finished_ends_after_the_short_pause() -> None:
    audio = await asyncio.to_thread(synthesize, "Please turn on the kitchen lights.", 16000)
    async with transcript_strategy(hear_tone=True) as turn:
        await hear_speech(turn.strategy, trim_silence(audio, QUIET_LEVEL))
        await transcribed(turn.strategy, "Please turn on the kitchen lights.")
        await wait_until_judged(turn.strategy)
        await hear_silence(turn.strategy, SHORT + FRAME_SECS)
        assert turn.stops() == 1


async def wait_until_judged(strategy: WholeSentenceStopStrategy) -> None:
    """The tone is judged on a thread of its own while the audio goes on; here, wait."""
    judging = strategy._tone_task
    assert judging is not None, "the tone was not being judged"
    await asyncio.wait_for(judging, 10)


async def test_a_tone_model_that_fails_leaves_the_turn_to_the_transcript(monkeypatch) -> None:
    """A fault injected into the model run: the turn still ends, by the transcript."""

    async def broken_model(_samples):
        raise RuntimeError("onnxruntime could not run the model")

    monkeypatch.setattr("agent.turns.sounds_finished", broken_model)
    async with transcript_strategy(hear_tone=True) as turn:
        await hear_speech(turn.strategy, np.zeros(3200, np.int16))
        await transcribed(turn.strategy, "Please turn on the kitchen lights.")
        await wait_until_judged(turn.strategy)
        await hear_silence(turn.strategy, SHORT + FRAME_SECS)
        assert turn.stops() == 1, "a failed tone judgement held the turn open"
