"""``voice-agent pull-models``: fetch the configured models before first use (``make models``).

It runs against the running services and uses the agent's own model code
(``OllamaModels``, ``SpeachesModels``): models already present are only reported, missing
ones are pulled with visible progress. Ollama reports bytes, so its pull gets a bar (one
line redrawn in place on a terminal, a plain line every tenth of the way otherwise);
Speaches downloads synchronously without progress, so its pull shows that it is working
and how long it took. Ctrl-C stops cleanly; running the command again resumes (Ollama
keeps the partial download). Exit codes: 0 all models present, 1 something is missing,
128 + the signal number when interrupted (130 for Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TextIO, TypeVar

import httpx
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_before_delay, wait_exponential

from agent.backends import BackendError, BackendState, describe_http_error
from agent.config import Settings
from agent.health import ollama_client, speaches_client
from agent.llm import OllamaModels
from agent.speech import SpeachesModels

# `make models` starts the services just before: give them a few seconds to answer.
CONNECT_WAIT_SECS = 5.0
REDRAW_SECS = 0.1  # terminal: redraw the progress line at most this often
PLAIN_STEP_PERCENT = 10  # not a terminal: one progress line per this many percent
STILL_WORKING_SECS = 30.0  # not a terminal: a Speaches download says it is alive this often
RATE_WINDOW_SECS = 3.0
RESUME_HINT = "run `make models` again to resume"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

T = TypeVar("T")


# --- output ---------------------------------------------------------------------------


class Screen:
    """Where the command talks: whole lines, plus (on a terminal) one line redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        try:
            self.tty = out.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        try:
            "✓✗↓█░⠋".encode(getattr(out, "encoding", None) or "utf-8")
            self.unicode = True
        except (LookupError, UnicodeEncodeError):
            self.unicode = False
        self.ok, self.fail, self.down = ("✓", "✗", "↓") if self.unicode else ("ok", "!!", "->")
        self._drawn = False

    def say(self, text: str) -> None:
        """A whole line; a line being redrawn is kept as it is and ended first."""
        self.end_line()
        self.out.write(text + "\n")
        self.out.flush()

    @staticmethod
    def width() -> int:
        """Characters a redrawn line may use without wrapping."""
        return max(20, shutil.get_terminal_size().columns - 1)

    def draw(self, text: str) -> None:
        """Replace the line being redrawn (terminals only)."""
        self.out.write("\r" + text[: self.width()] + "\x1b[K")
        self.out.flush()
        self._drawn = True

    def end_line(self) -> None:
        """Keep the line being redrawn and move below it."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False

    def erase(self) -> None:
        """Remove the line being redrawn."""
        if self._drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._drawn = False


def _size(count: float, unit_of: float | None = None) -> str:
    """Bytes in decimal units, as Ollama shows them; ``unit_of`` picks the unit by another size."""
    reference = count if unit_of is None else unit_of
    for unit, scale, digits in (("GB", 1e9, 2), ("MB", 1e6, 1), ("kB", 1e3, 0)):
        if reference >= scale:
            return f"{count / scale:.{digits}f} {unit}"
    return f"{count:.0f} B"


def _duration(secs: float) -> str:
    if secs < 10:
        return f"{secs:.1f} s"
    if secs < 60:
        return f"{secs:.0f} s"
    minutes, rest = divmod(round(secs), 60)
    return f"{minutes} min {rest:02d} s"


class ByteProgress:
    """Draws Ollama's pull progress: ``on_progress(status, completed, total)``."""

    def __init__(self, screen: Screen, model: str) -> None:
        self._screen = screen
        self._model = model
        self._samples: deque[tuple[float, int]] = deque()
        self._last_draw = 0.0
        self._last_step = -1
        self.first_completed: int | None = None
        self.completed = 0
        self.total = 0

    def __call__(self, status: str, completed: int, total: int) -> None:
        now = time.monotonic()
        if total <= 0:  # "pulling manifest": no byte counts yet
            if self._screen.tty:
                self._screen.draw(f"  {self._model}: {status}")
            return
        if self.first_completed is None:
            self.first_completed = completed
            if completed:
                self._screen.erase()  # "pulling manifest"
                self._screen.say(
                    f"  resuming at {self._percent(completed, total)}% "
                    f"({_size(completed, total)} of {_size(total)} already downloaded)"
                )
                self._last_step = self._step(self._percent(completed, total))  # just said
        self.completed, self.total = completed, total
        self._samples.append((now, completed))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_SECS:
            self._samples.popleft()
        percent = self._percent(completed, total)
        if self._screen.tty:
            if now - self._last_draw >= REDRAW_SECS or completed >= total:
                self._last_draw = now
                self._screen.draw(self._bar_line(percent, status))
        else:
            step = self._step(percent)
            if step > self._last_step:
                self._last_step = step
                self._screen.say(self._plain_line(percent))

    @staticmethod
    def _step(percent: int) -> int:
        return percent - percent % PLAIN_STEP_PERCENT

    @staticmethod
    def _percent(completed: int, total: int) -> int:
        return min(100, completed * 100 // total)

    def _rate(self) -> float | None:
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        return (last - first) / (end - start) if end - start >= 0.5 else None

    def _amounts(self) -> str:
        return f"{_size(self.completed, self.total).split()[0]} / {_size(self.total)}"

    def _plain_line(self, percent: int) -> str:
        rate = self._rate()
        speed = f"  {_size(rate)}/s" if rate else ""
        return f"  {self._model} {percent:3d}%  {self._amounts()}{speed}"

    def _bar_line(self, percent: int, status: str) -> str:
        details = f" {percent:3d}%  {self._amounts()}"
        rate = self._rate()
        if not status.startswith(("pulling", "success")):
            details += f"  {status}"  # verifying sha256 digest, writing manifest
        elif rate and self.completed < self.total:
            left = (self.total - self.completed) / rate
            details += f"  {_size(rate)}/s  {_duration(left)} left"
        head = f"  {self._model} "
        room = self._screen.width() - len(head) - len(details) - 2
        width = max(10, min(30, room))
        filled = width * percent // 100
        full, empty = ("█", "░") if self._screen.unicode else ("#", "-")
        return f"{head}[{full * filled}{empty * (width - filled)}]{details}"


@contextlib.asynccontextmanager
async def _showing_work(screen: Screen, model_id: str) -> AsyncIterator[None]:
    """While the body runs, show that a download without progress is still going."""
    ticker = asyncio.create_task(_show_working(screen, model_id, time.monotonic()))
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        screen.erase()


async def _show_working(screen: Screen, model_id: str, started: float) -> None:
    """Until cancelled: a spinner with the seconds so far, or a line now and then."""
    if screen.tty:
        frames = SPINNER if screen.unicode else "|/-\\"
        tick = 0
        while True:
            elapsed = time.monotonic() - started
            screen.draw(f"  {frames[tick % len(frames)]} downloading {model_id}  {elapsed:.0f} s")
            tick += 1
            await asyncio.sleep(REDRAW_SECS)
    else:
        while True:
            await asyncio.sleep(STILL_WORKING_SECS)
            elapsed = time.monotonic() - started
            screen.say(f"  still downloading {model_id} ({_duration(elapsed)} so far)")


# --- the command ----------------------------------------------------------------------


def _transient(error: BaseException) -> bool:
    """Worth another try while a service is starting: no connection yet, or a 5xx."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500
    return isinstance(error, httpx.TransportError)


async def _reach(
    screen: Screen, name: str, url: str, probe: Callable[[], Awaitable[T]]
) -> T | None:
    """``probe()`` with brief retries while the backend is not up; None (and a line) if never."""

    def waiting(retry_state) -> None:
        if retry_state.attempt_number == 1:
            error = retry_state.outcome.exception()
            screen.say(f"  waiting for {name} at {url} ({describe_http_error(error)}) …")

    retrying = AsyncRetrying(
        retry=retry_if_exception(_transient),
        stop=stop_before_delay(CONNECT_WAIT_SECS),
        wait=wait_exponential(multiplier=0.25, min=0.25, max=2.0),
        before_sleep=waiting,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await probe()
    except httpx.TransportError as error:
        detail = describe_http_error(error)
        screen.say(
            f"{screen.fail} cannot reach {name} at {url}: {detail} — is it running? (make up)"
        )
    except httpx.HTTPStatusError as error:
        detail = describe_http_error(error)
        screen.say(
            f"{screen.fail} {name} at {url} answered {detail} — is it healthy? (make status)"
        )
    except ValueError:  # not JSON: something else answers at that address
        screen.say(f"{screen.fail} what answers at {url} is not {name} — check the URL in .env")
    return None


def _pull_failed(screen: Screen, name: str, model: str, error: Exception, resumable: bool) -> None:
    if isinstance(error, BackendError):
        line = str(error)
    elif isinstance(error, httpx.TransportError):
        line = f"lost {name} while pulling {model}: {describe_http_error(error)}"
    else:
        line = f"could not pull {model}: {name} answered {describe_http_error(error)}"
    hint = f" — {RESUME_HINT}" if resumable else ""
    screen.say(f"{screen.fail} {line}{hint}")


async def _pull_ollama(screen: Screen, ollama: OllamaModels, model: str) -> bool:
    screen.say(f"{screen.down} pulling {model} from Ollama")
    progress = ByteProgress(screen, model)
    started = time.monotonic()
    try:
        await ollama.pull(on_progress=progress)
    except (BackendError, httpx.HTTPError) as error:
        _pull_failed(screen, "Ollama", model, error, resumable=progress.completed > 0)
        return False
    size = f"{_size(progress.total)} " if progress.total else ""
    screen.say(f"{screen.ok} {model} pulled: {size}in {_duration(time.monotonic() - started)}")
    return True


async def _pull_speaches(screen: Screen, speaches: SpeachesModels, model_id: str) -> bool:
    if not screen.tty:
        screen.say(
            f"{screen.down} downloading {model_id} with Speaches "
            "(it reports no progress; a large model takes minutes) …"
        )
    try:
        async with _showing_work(screen, model_id):
            secs = await speaches.pull(model_id)
    except (BackendError, httpx.HTTPError) as error:
        resumable = isinstance(error, httpx.TransportError)
        _pull_failed(screen, "Speaches", model_id, error, resumable)
        return False
    screen.say(f"{screen.ok} {model_id} done in {_duration(secs)}")
    return True


async def _run(settings: Settings, screen: Screen) -> int:
    async with ollama_client(settings) as ollama_http, speaches_client(settings) as speaches_http:
        ollama = OllamaModels(
            ollama_http, settings.ollama_model, BackendState("ollama", settings.ollama_base_url)
        )
        speech_ids = list(dict.fromkeys([settings.stt_model, settings.tts_model]))
        speaches = SpeachesModels(
            speaches_http, speech_ids, BackendState("speaches", settings.speaches_base_url)
        )

        async def speaches_installed() -> dict[str, bool]:
            return {model_id: await speaches.is_installed(model_id) for model_id in speech_ids}

        screen.say(
            f"Checking models on Ollama at {settings.ollama_base_url} "
            f"and Speaches at {settings.speaches_base_url} …"
        )
        llm_installed, speech_installed = await asyncio.gather(
            _reach(screen, "Ollama", settings.ollama_base_url, ollama.is_installed),
            _reach(screen, "Speaches", settings.speaches_base_url, speaches_installed),
        )
        all_present = llm_installed is not None and speech_installed is not None

        if llm_installed:
            screen.say(f"{screen.ok} {settings.ollama_model} already present")
        elif llm_installed is not None:
            all_present &= await _pull_ollama(screen, ollama, settings.ollama_model)

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
            return await _run(settings, screen)
    except asyncio.CancelledError:
        if not received:
            raise
        screen.end_line()
        screen.say(f"Interrupted: {RESUME_HINT} (what was downloaded is kept).")
        return 128 + received[0]
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
