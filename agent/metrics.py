"""The agent's Prometheus metrics, and the text ``/metrics`` serves.

Counted: conversations (active, started, refused, ended), turns and where each turn's
time went, backend errors, and each worker's event-loop lag and CPU time. All names
start with ``voice_agent_``; every label value comes from a fixed set, so a value from
a request or an error message can never create a new time series.

Every process of the agent records into its own metrics. With ``PROMETHEUS_MULTIPROC_DIR``
set before prometheus_client is first imported (the supervisor sets it, its workers
inherit it), each process writes them to files there and ``exposition`` in any process
adds them all up; ``process_dead`` drops a dead process's live gauges (its counters
stay). Without it, one process serves its own.

Who calls what: the process that runs a conversation calls ``session_started`` and
``session_ended`` (so the active gauge dies with it), and ``count_backend_errors`` once
for each backend's service; the supervisor calls ``session_refused``, and when a worker
dies ``process_dead`` and ``sessions_lost_with_worker``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

from agent.backend_errors import ErrorKind, error_frame_kind

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

if os.environ.get(MULTIPROC_DIR_ENV) and values.ValueClass is values.MutexValue:
    # This process would count in memory only and /metrics would never see it.
    raise RuntimeError(
        f"prometheus_client was imported before {MULTIPROC_DIR_ENV} was set: "
        "set it before anything imports prometheus_client"
    )

# Multiprocess mode has no *_created samples; without them anywhere, /metrics reads the
# same in one process as in several.
disable_created_metrics()

RefusalReason = Literal["full", "busy", "unavailable", "rate"]
EndReason = Literal[
    "hangup",  # the browser hung up or closed the connection
    "no_connection",  # the browser did not connect, or reconnect, in time
    "connection_lost",  # the connection failed and no ICE restart saved it
    "pipeline_ended",  # the pipeline ended by itself (the idle timeout, say)
    "error",  # the pipeline crashed
    "shutdown",  # the agent stopped
    "worker_lost",  # the worker process running it died
    "other",
]
Backend = Literal["ollama", "speaches"]
# The keys of Pipecat 1.14's LatencyBreakdown contributions; any other key counts as "other".
Stage = Literal[
    "endpointing_wait",
    "first_request",
    "transcription",
    "turn_detection",
    "llm_inference",
    "turn_completion",
    "waiting_for_user",
    "llm_tool_call",
    "function_handler",
    "awaiting_speakable_text",
    "sentence_aggregation",
    "speech_synthesis",
    "output_transport",
    "pipeline",
    "other",
]

REFUSAL_REASONS: tuple[str, ...] = get_args(RefusalReason)
END_REASONS: tuple[str, ...] = get_args(EndReason)
BACKENDS: tuple[str, ...] = get_args(Backend)
ERROR_KINDS: tuple[str, ...] = get_args(ErrorKind)
STAGES: tuple[str, ...] = get_args(Stage)

# 10 ms to 10 s, finest where turns land (a few hundred ms to a second and a half), so
# a quantile there is good to about 50-100 ms.
LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
)  # fmt: skip

SESSIONS_ACTIVE = Gauge(
    "voice_agent_sessions_active",
    "Conversations running now.",
    multiprocess_mode="livesum",  # the sum over the processes that are alive
)
SESSIONS_STARTED = Counter("voice_agent_sessions_started", "Conversations started.")
SESSIONS_REFUSED = Counter(
    "voice_agent_sessions_refused",
    "Offers for a new conversation that were turned away, by reason: full (MAX_SESSIONS "
    "running), busy (the machine cannot keep up), unavailable (no worker ready), rate.",
    ["reason"],
)
SESSIONS_ENDED = Counter(
    "voice_agent_sessions_ended", "Conversations ended, by what ended them.", ["reason"]
)
TURNS = Counter("voice_agent_turns", "User turns the agent answered.")
TURN_LATENCY = Histogram(
    "voice_agent_turn_latency_seconds",
    "From the end of the user's speech to the first sound of the answer leaving the agent.",
    buckets=LATENCY_BUCKETS,
)
TURN_STAGE = Histogram(
    "voice_agent_turn_stage_seconds",
    "Time a turn spent in each stage (Pipecat's latency breakdown); the stages of a turn "
    "add up to its latency.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_ERRORS = Counter(
    "voice_agent_backend_errors",
    "Errors from the backends: Ollama (LLM) and Speaches (speech-to-text, text-to-speech).",
    ["backend", "kind"],
)
EVENT_LOOP_LAG = Gauge(
    "voice_agent_event_loop_lag_seconds",
    "How late each worker's event loop runs its timers (mean over the last seconds).",
    ["worker"],
    # One series per worker label, without a pid label that would change at each
    # restart; a dead worker's value goes with process_dead.
    multiprocess_mode="livemax",
)
WORKER_CPU = Counter(
    "voice_agent_worker_cpu_seconds", "CPU time used by each worker process.", ["worker"]
)

# Every series of a fixed label set exists from the start, so that rate() and increase()
# see the first event rather than a series appearing out of nowhere.
for _reason in REFUSAL_REASONS:
    SESSIONS_REFUSED.labels(_reason)
for _reason in END_REASONS:
    SESSIONS_ENDED.labels(_reason)
for _backend in BACKENDS:
    for _kind in ERROR_KINDS:
        BACKEND_ERRORS.labels(_backend, _kind)


def _checked(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not a {what}; one of: {', '.join(allowed)}")
    return value


def session_started() -> None:
    SESSIONS_STARTED.inc()
    SESSIONS_ACTIVE.inc()


def session_ended(reason: str) -> None:
    """A conversation this process ran has ended; ``reason`` is its end reason as logged
    (``Session.end_reason``) or one of ``END_REASONS``."""
    SESSIONS_ENDED.labels(end_reason_class(reason)).inc()
    SESSIONS_ACTIVE.dec()


def sessions_lost_with_worker(count: int) -> None:
    """A worker died with ``count`` conversations: counted as ended. The active gauge is
    left alone: the dead worker's share of it goes with ``process_dead``."""
    SESSIONS_ENDED.labels("worker_lost").inc(count)


def session_refused(reason: RefusalReason) -> None:
    SESSIONS_REFUSED.labels(_checked(reason, REFUSAL_REASONS, "refusal reason")).inc()


_END_REASON_PREFIXES: tuple[tuple[str, EndReason], ...] = (
    ("browser hung up", "hangup"),
    ("connection closed", "hangup"),
    ("browser did not", "no_connection"),
    ("connection failed", "connection_lost"),
    ("pipeline ended", "pipeline_ended"),
    ("pipeline error", "error"),
    ("agent stopping", "shutdown"),
)


def end_reason_class(reason: str) -> EndReason:
    """The class of a session's end reason, from the sentence ``agent.sessions`` logs."""
    if reason in END_REASONS:
        return reason  # type: ignore[return-value]
    for prefix, reason_class in _END_REASON_PREFIXES:
        if reason.startswith(prefix):
            return reason_class
    return "other"


def record_turn(total_secs: float, parts: Mapping[str, float]) -> None:
    """An answered user turn (not the greeting): its latency, and the seconds of each part
    by its ``LatencyBreakdown`` contribution key (see ``stage_seconds``)."""
    TURNS.inc()
    TURN_LATENCY.observe(total_secs)
    by_stage: dict[str, float] = {}
    for key, secs in parts.items():
        stage = key if key in STAGES else "other"
        by_stage[stage] = by_stage.get(stage, 0.0) + secs
    for stage, secs in by_stage.items():
        TURN_STAGE.labels(stage).observe(secs)


def stage_seconds(breakdown: Any) -> dict[str, float]:
    """Seconds per contribution key of a Pipecat ``LatencyBreakdown``: a key can appear
    more than once in a turn (turn completion does), so its parts are added up."""
    seconds: dict[str, float] = {}
    for part in breakdown.contributions:
        seconds[part.key] = seconds.get(part.key, 0.0) + part.duration_secs
    return seconds


def record_backend_error(backend: Backend, kind: ErrorKind) -> None:
    BACKEND_ERRORS.labels(
        _checked(backend, BACKENDS, "backend"), _checked(kind, ERROR_KINDS, "backend error kind")
    ).inc()


def count_backend_errors(service: Any, backend: Backend) -> None:
    """Count each error the Pipecat ``service`` that talks to ``backend`` reports, once, as
    it raises it. Its ``on_error`` event runs only then, not for every frame that passes by,
    and not for errors of other processors that pass through it upstream."""
    _checked(backend, BACKENDS, "backend")

    @service.event_handler("on_error")
    async def count(_service: Any, error: Any) -> None:
        # By value (pipecat.utils.errors.ErrorCategory.APPLICATION), so that the supervisor
        # can import this module without loading Pipecat.
        if getattr(error.category, "value", None) != "application":
            record_backend_error(backend, error_frame_kind(error))


def set_event_loop_lag(worker: str | int, lag_secs: float) -> None:
    EVENT_LOOP_LAG.labels(str(worker)).set(lag_secs)


_cpu_seen: dict[str, float] = {}


def set_worker_cpu_seconds(worker: str | int, cpu_secs: float) -> None:
    """The worker's process has used ``cpu_secs`` of CPU in all so far. A smaller total
    than last time is a new process under the same label: all of it is new."""
    label = str(worker)
    seen = _cpu_seen.get(label, 0.0)
    WORKER_CPU.labels(label).inc(cpu_secs - seen if cpu_secs >= seen else cpu_secs)
    _cpu_seen[label] = cpu_secs


def exposition() -> tuple[bytes, str]:
    """The body and content type of ``/metrics``: every process's metrics when
    ``PROMETHEUS_MULTIPROC_DIR`` is set, else this process's."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


def process_dead(pid: int) -> None:
    """A process of the agent has exited: its live gauges (sessions active, event-loop
    lag) stop counting; its counters and histograms stay in the sums."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        multiprocess.mark_process_dead(pid)
