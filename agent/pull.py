"""``voice-agent pull-models``: fetch the configured models before first use (``make models``).

It runs against the running services and uses the agent's own backend objects
(``agent.backends``, built as ``serve`` builds them): models already present are only
reported, missing ones are pulled with visible progress (``agent.progress``). Ctrl-C stops
cleanly; running the command again resumes (Ollama keeps the partial download). Exit
codes: 0 all models present, 1 something is missing, 128 + the signal number when
interrupted (130 for Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TextIO, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_before_delay

from agent.backends import Backend, BackendError, Backends, Ollama, Speaches
from agent.backends.client import Unreachable, backoff, is_transient
from agent.config import Settings
from agent.progress import ByteProgress, Screen, duration_text, showing_work, size_text

# `make models` starts the services just before: give them a few seconds to answer.
CONNECT_WAIT_SECS = 5.0
RESUME_HINT = "run `make models` again to resume"

T = TypeVar("T")


async def _reach(screen: Screen, backend: Backend, probe: Callable[[], Awaitable[T]]) -> T | None:
    """``probe()``, retried by the one backend rule for a few seconds while the backend is
    starting; None (and a line saying why) if it never answers as it should."""
    name, url = backend.state.name.capitalize(), backend.state.url

    def waiting(retry_state: RetryCallState) -> None:
        if retry_state.attempt_number == 1:
            screen.say(f"  waiting for {name} at {url} ({retry_state.outcome.exception()}) …")

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_transient),
        stop=stop_before_delay(CONNECT_WAIT_SECS),
        wait=backoff(2.0),
        before_sleep=waiting,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await probe()
    except Unreachable as error:
        screen.say(
            f"{screen.fail} cannot reach {name} at {url}: {error} — is it running? (make up)"
        )
    except BackendError as error:
        screen.say(f"{screen.fail} {name} at {url} answered {error} — is it healthy? (make status)")
    return None


def _pull_failed(screen: Screen, backend: Backend, model: str, error: BackendError) -> None:
    """One line: what failed, in the backend's words, and whether running again resumes."""
    name = backend.state.name.capitalize()
    if isinstance(error, Unreachable):
        line = f"lost {name} while pulling {model}: {error}"
    elif model in str(error):
        line = str(error)
    else:
        line = f"could not pull {model}: {name} answered {error}"
    resumable = isinstance(error, Unreachable) or (
        isinstance(backend, Ollama) and bool(backend.model.progress)
    )
    hint = f" — {RESUME_HINT}" if resumable else ""
    screen.say(f"{screen.fail} {line}{hint}")


async def _pull_ollama(screen: Screen, ollama: Ollama) -> bool:
    model = ollama.model_id
    screen.say(f"{screen.down} pulling {model} from Ollama")
    progress = ByteProgress(screen, model)
    started = time.monotonic()
    try:
        await ollama.pull(on_progress=progress)
    except BackendError as error:
        _pull_failed(screen, ollama, model, error)
        return False
    size = f"{size_text(progress.total)} " if progress.total else ""
    screen.say(f"{screen.ok} {model} pulled: {size}in {duration_text(time.monotonic() - started)}")
    return True


async def _pull_speaches(screen: Screen, speaches: Speaches, model_id: str) -> bool:
    if not screen.tty:
        screen.say(
            f"{screen.down} downloading {model_id} with Speaches "
            "(it reports no progress; a large model takes minutes) …"
        )
    try:
        async with showing_work(screen, model_id):
            secs = await speaches.pull(model_id)
    except BackendError as error:
        _pull_failed(screen, speaches, model_id, error)
        return False
    screen.say(f"{screen.ok} {model_id} done in {duration_text(secs)}")
    return True


async def _run(backends: Backends, screen: Screen) -> int:
    ollama, speaches = backends.ollama, backends.speaches

    async def speaches_installed() -> dict[str, bool]:
        return {model_id: await speaches.is_installed(model_id) for model_id in speaches.model_ids}

    screen.say(
        f"Checking models on Ollama at {ollama.state.url} and Speaches at {speaches.state.url} …"
    )
    llm_installed, speech_installed = await asyncio.gather(
        _reach(screen, ollama, ollama.is_installed),
        _reach(screen, speaches, speaches_installed),
    )
    all_present = llm_installed is not None and speech_installed is not None

    if llm_installed:
        screen.say(f"{screen.ok} {ollama.model_id} already present")
    elif llm_installed is not None:
        all_present &= await _pull_ollama(screen, ollama)

    for model_id, installed in (speech_installed or {}).items():
        if installed:
            screen.say(f"{screen.ok} {model_id} already present")
        else:
            all_present &= await _pull_speaches(screen, speaches, model_id)

    if all_present:
        screen.say("All models are present.")
        return 0
    screen.say("Not all models are present (see above).")
    return 1


@contextlib.contextmanager
def _quiet_logs(settings: Settings) -> Iterator[None]:
    """The progress display is the output: the model code's info logs would break it."""
    previous = structlog.get_config()["wrapper_class"]
    level = max(logging.WARNING, logging.getLevelName(settings.log_level.upper()))
    if settings.log_level != "debug":
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=previous)


async def pull_models(settings: Settings, out: TextIO | None = None) -> int:
    """Make sure the configured Ollama and Speaches models are present; the exit code.

    Ctrl-C (SIGINT) or SIGTERM stops the pulls and returns 128 + the signal number.
    ``out`` defaults to standard error.
    """
    screen = Screen(out if out is not None else sys.stderr)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        if task is not None:
            task.cancel()

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop, signum)
            handled.append(signum)
    try:
        with _quiet_logs(settings):
            async with Backends(settings) as backends:
                return await _run(backends, screen)
    except asyncio.CancelledError:
        if not received:
            raise
        screen.end_line()
        screen.say(f"Interrupted: {RESUME_HINT} (what was downloaded is kept).")
        return 128 + received[0]
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
