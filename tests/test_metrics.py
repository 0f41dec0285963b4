"""/metrics: what is counted, how the worker processes' counts add up, and that each
backend error a service raises is counted once, under the right backend and kind (which
kind: tests/test_backend_errors.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from pipecat.frames.frames import EndFrame, ErrorFrame, Frame, InputAudioRawFrame, TextFrame
from pipecat.observers.user_bot_latency_observer import (
    LatencyBreakdown,
    LatencyContribution,
    LatencyOwnerKind,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.utils.errors import ErrorCategory
from pipecat.workers.runner import WorkerRunner
from prometheus_client.parser import text_string_to_metric_families

from agent import metrics

ROOT = Path(__file__).resolve().parents[1]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(body: bytes) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def scrape() -> Samples:
    """The agent's own samples (the default registry also has the process's, which move)."""
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    return {key: v for key, v in parse(body).items() if key[0].startswith("voice_agent_")}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample_name, labels in samples if sample_name == name]


# --- one process -------------------------------------------------------------------------


def test_a_turn_counts_its_latency_and_each_stage_in_its_bucket() -> None:
    before = scrape()
    metrics.record_turn(
        0.62,
        {
            "transcription": 0.21,
            "llm_inference": 0.3,
            "speech_synthesis": 0.08,
            "a_new_pipecat_stage": 0.02,  # unknown keys add up under "other"
            "another_one": 0.01,
        },
    )
    after = scrape()

    assert increase(before, after, "voice_agent_turns_total") == 1
    assert increase(before, after, "voice_agent_turn_latency_seconds_count") == 1
    assert increase(before, after, "voice_agent_turn_latency_seconds_sum") == pytest.approx(0.62)
    turn = "voice_agent_turn_latency_seconds_bucket"
    assert increase(before, after, turn, le="0.6") == 0
    assert increase(before, after, turn, le="0.7") == 1

    stage = "voice_agent_turn_stage_seconds"
    for name, secs, below, at_or_above in [
        ("transcription", 0.21, "0.2", "0.25"),
        ("llm_inference", 0.3, "0.25", "0.3"),
        ("speech_synthesis", 0.08, "0.075", "0.1"),
        ("other", 0.03, "0.025", "0.05"),
    ]:
        assert increase(before, after, f"{stage}_count", stage=name) == 1, name
        assert increase(before, after, f"{stage}_sum", stage=name) == pytest.approx(secs)
        assert increase(before, after, f"{stage}_bucket", stage=name, le=below) == 0, name
        assert increase(before, after, f"{stage}_bucket", stage=name, le=at_or_above) == 1
    assert {labels["stage"] for labels in series(after, f"{stage}_count")} <= set(metrics.STAGES)


def test_stage_seconds_adds_up_a_key_that_appears_twice_in_a_breakdown() -> None:
    def part(key: str, secs: float) -> LatencyContribution:
        return LatencyContribution(
            key=key,
            label=key,
            owner="test",
            owner_kind=LatencyOwnerKind.SERVICE,
            start_time=0.0,
            duration_secs=secs,
        )

    breakdown = LatencyBreakdown(
        contributions=[
            part("llm_inference", 0.25),
            part("turn_completion", 0.04),
            part("turn_completion", 0.06),
        ],
        total_secs=0.35,
    )
    seconds = metrics.stage_seconds(breakdown)
    assert seconds.keys() == {"llm_inference", "turn_completion"}
    assert seconds["turn_completion"] == pytest.approx(0.1)
    assert sum(seconds.values()) == pytest.approx(breakdown.total_secs)


def test_sessions_started_ended_refused_and_lost_with_a_worker() -> None:
    before = scrape()
    metrics.session_started()
    metrics.session_started()
    metrics.session_started()
    middle = scrape()
    metrics.session_ended("browser hung up")
    metrics.session_ended("browser did not connect within 15s")
    metrics.session_refused("busy")
    metrics.session_refused("full")
    metrics.session_refused("full")
    metrics.sessions_lost_with_worker(2)
    after = scrape()

    assert increase(before, middle, "voice_agent_sessions_active") == 3
    assert increase(before, after, "voice_agent_sessions_active") == 1
    assert increase(before, after, "voice_agent_sessions_started_total") == 3
    ended = "voice_agent_sessions_ended_total"
    assert increase(before, after, ended, reason="hangup") == 1
    assert increase(before, after, ended, reason="no_connection") == 1
    assert increase(before, after, ended, reason="worker_lost") == 2
    refused = "voice_agent_sessions_refused_total"
    assert increase(before, after, refused, reason="busy") == 1
    assert increase(before, after, refused, reason="full") == 2
    assert increase(before, after, refused, reason="unavailable") == 0
    # Every reason is there from the start, at zero until it happens.
    assert {labels["reason"] for labels in series(before, refused)} == set(metrics.REFUSAL_REASONS)
    assert {labels["reason"] for labels in series(before, ended)} == set(metrics.END_REASONS)


@pytest.mark.parametrize(
    ("reason", "reason_class"),
    [  # the end reasons agent.sessions logs
        ("browser hung up", "hangup"),
        ("connection closed", "hangup"),
        ("browser did not connect within 15s", "no_connection"),
        ("browser did not reconnect within 15s", "no_connection"),
        ("connection failed and was not restarted", "connection_lost"),
        ("pipeline ended", "pipeline_ended"),
        ("pipeline error", "error"),
        ("agent stopping", "shutdown"),
        ("worker_lost", "worker_lost"),
        ("the moon fell", "other"),
    ],
)
def test_each_end_reason_falls_in_its_class(reason: str, reason_class: str) -> None:
    assert metrics.end_reason_class(reason) == reason_class


def test_label_values_outside_their_fixed_sets_are_refused_and_make_no_series() -> None:
    before = scrape()
    with pytest.raises(ValueError, match="refusal reason"):
        metrics.session_refused("Too many requests from 192.168.1.7")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        metrics.record_backend_error("openai", "timeout")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        metrics.record_backend_error("ollama", "HTTP 503 from /v1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        metrics.count_backend_errors(_passing(), "openai")  # type: ignore[arg-type]
    assert scrape() == before


def test_backend_errors_and_worker_figures() -> None:
    before = scrape()
    metrics.record_backend_error("ollama", "timeout")
    metrics.record_backend_error("ollama", "timeout")
    metrics.record_backend_error("speaches", "http_5xx")
    metrics.set_event_loop_lag("t1", 0.25)
    metrics.set_event_loop_lag("t1", 0.03)  # a gauge: the latest value
    metrics.set_worker_cpu_seconds("t1", 1.0)
    metrics.set_worker_cpu_seconds("t1", 1.5)
    metrics.set_worker_cpu_seconds("t1", 0.25)  # a restarted worker: its total starts again
    after = scrape()

    errors = "voice_agent_backend_errors_total"
    assert increase(before, after, errors, backend="ollama", kind="timeout") == 2
    assert increase(before, after, errors, backend="speaches", kind="http_5xx") == 1
    assert sum(after[key] - before.get(key, 0.0) for key in after if key[0] == errors) == 3
    assert value(after, "voice_agent_event_loop_lag_seconds", worker="t1") == 0.03
    assert increase(before, after, "voice_agent_worker_cpu_seconds_total", worker="t1") == 1.75


# --- backend errors in a real pipeline ---------------------------------------------------


def _cut_stream_error() -> openai.APIConnectionError:
    """What openai raises when Ollama's stream breaks off: the transport error, wrapped."""
    request = httpx2.Request("POST", "http://127.0.0.1:11434/v1/chat/completions")
    try:
        try:
            raise httpx2.RemoteProtocolError("peer closed connection without sending complete body")
        except httpx2.RemoteProtocolError as error:
            raise openai.APIConnectionError(request=request) from error
    except openai.APIConnectionError as error:
        return error


class TimingOutSpeechToText(STTService):
    """Fails each transcription the way Pipecat's OpenAI speech-to-text does on a timeout:
    an ErrorFrame carrying the exception's text only."""

    async def run_stt(self, audio: bytes):
        yield ErrorFrame(error="Unknown error occurred: Request timed out.")


class FailingProcessor(FrameProcessor):
    """Fails on each text in ``errors`` with the error made for it; passes the rest on."""

    def __init__(self, errors: dict[str, Callable[[], ErrorFrame]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._errors = errors

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame) and frame.text in self._errors:
            await self.push_error_frame(self._errors[frame.text]())
        else:
            await self.push_frame(frame, direction)


class FailingLLM(FailingProcessor, LLMService):
    pass


def _passing() -> FrameProcessor:
    return FailingProcessor({})  # one more hop for an error on its way upstream


def _audio() -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)


async def test_each_backend_error_is_counted_once_under_its_backend_and_kind() -> None:
    speech_to_text = TimingOutSpeechToText()
    llm = FailingLLM(
        {  # as Pipecat's OpenAI LLM fails when the stream breaks; an application's error
            "llm": lambda: ErrorFrame("Error during completion", exception=_cut_stream_error()),
            "app": lambda: ErrorFrame("a tool failed", category=ErrorCategory.APPLICATION),
        }
    )
    metrics.count_backend_errors(speech_to_text, "speaches")
    metrics.count_backend_errors(llm, "ollama")
    # No backend's processor, below both services: its error passes through them.
    other = FailingProcessor(
        {"other": lambda: ErrorFrame("it broke", exception=ConnectionResetError())}
    )
    hops = [_passing(), speech_to_text, _passing(), _passing(), llm, _passing(), other]
    worker = PipelineWorker(Pipeline([*hops, _passing()]))
    arrived: list[ErrorFrame] = []  # at the top of the pipeline: every hop is behind them
    progress = asyncio.Event()

    @worker.event_handler("on_pipeline_error")
    async def on_error(_worker, frame: ErrorFrame) -> None:
        arrived.append(frame)
        progress.set()

    errors = "voice_agent_backend_errors_total"
    before = scrape()
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await worker.queue_frames(
            [_audio(), TextFrame("llm"), _audio(), TextFrame("app"), TextFrame("other"), _audio()]
        )
        async with asyncio.timeout(5):
            while len(arrived) < 6:
                progress.clear()
                await progress.wait()
        # A service's on_error handlers run before it pushes the error upstream: by the
        # time an error reaches the top, it has been counted.
        after = scrape()
    finally:
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, 10)

    assert len({frame.id for frame in arrived}) == 6
    assert increase(before, after, errors, backend="speaches", kind="timeout") == 3
    assert increase(before, after, errors, backend="ollama", kind="cut") == 1
    # Nothing else: each error once, not the application's own, not the other processor's.
    assert sum(after[key] - before.get(key, 0.0) for key in after if key[0] == errors) == 4


# --- several processes -------------------------------------------------------------------

WORKER = """
import os, sys
from agent import metrics
name, turns = sys.argv[1], int(sys.argv[2])
for _ in range(turns):
    metrics.record_turn(0.5, {"transcription": 0.2, "llm_inference": 0.3})
metrics.session_started()
metrics.session_started()
metrics.session_ended("browser hung up")  # one conversation still running at exit
metrics.record_backend_error("speaches", "timeout")
metrics.set_event_loop_lag(name, 0.02)
metrics.set_worker_cpu_seconds(name, 1.5)
print(os.getpid())
"""

COLLECTOR = """
import sys
from agent import metrics
sys.stdout.buffer.write(metrics.exposition()[0])
print("# --- process_dead ---", flush=True)
metrics.process_dead(int(sys.argv[1]))
sys.stdout.buffer.write(metrics.exposition()[0])
"""


def _python(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return out


def test_worker_processes_add_up_and_a_dead_ones_live_gauges_go(tmp_path: Path) -> None:
    env = {**os.environ, metrics.MULTIPROC_DIR_ENV: str(tmp_path)}
    first, second = _python(WORKER, "w1", "3", env=env), _python(WORKER, "w2", "2", env=env)
    first_pid = int(_finished(first))
    _finished(second)

    before_text, after_text = _finished(_python(COLLECTOR, str(first_pid), env=env)).split(
        "# --- process_dead ---\n"
    )
    before, after = parse(before_text.encode()), parse(after_text.encode())

    for samples in (before, after):  # counters and histograms keep the dead worker's share
        assert value(samples, "voice_agent_turns_total") == 5
        assert value(samples, "voice_agent_turn_latency_seconds_count") == 5
        assert value(samples, "voice_agent_turn_latency_seconds_sum") == pytest.approx(2.5)
        assert value(samples, "voice_agent_turn_latency_seconds_bucket", le="0.5") == 5
        stage = "voice_agent_turn_stage_seconds_count"
        assert value(samples, stage, stage="transcription") == 5
        assert value(samples, "voice_agent_sessions_started_total") == 4
        assert value(samples, "voice_agent_sessions_ended_total", reason="hangup") == 2
        errors = "voice_agent_backend_errors_total"
        assert value(samples, errors, backend="speaches", kind="timeout") == 2
        for worker in ("w1", "w2"):
            assert value(samples, "voice_agent_worker_cpu_seconds_total", worker=worker) == 1.5

    assert value(before, "voice_agent_sessions_active") == 2
    lag = "voice_agent_event_loop_lag_seconds"
    # One series per worker, with no pid label.
    assert sorted(series(before, lag), key=str) == [{"worker": "w1"}, {"worker": "w2"}]
    assert value(before, lag, worker="w1") == 0.02

    assert value(after, "voice_agent_sessions_active") == 1
    assert series(after, lag) == [{"worker": "w2"}]


def test_importing_prometheus_client_before_the_directory_is_set_is_caught(
    tmp_path: Path,
) -> None:
    script = (
        "import os, prometheus_client\n"
        f"os.environ[{metrics.MULTIPROC_DIR_ENV!r}] = {str(tmp_path)!r}\n"
        "import agent.metrics\n"
    )
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_DIR_ENV}
    process = _python(script, env=env)
    _, err = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "imported before PROMETHEUS_MULTIPROC_DIR was set" in err
