"""What ``pull-models`` shows while it works: whole lines, and on a terminal one line
redrawn in place (a progress bar for Ollama's byte counts, a spinner for a Speaches
download that reports no progress)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TextIO

REDRAW_SECS = 0.1  # terminal: redraw the progress line at most this often
PLAIN_STEP_PERCENT = 10  # not a terminal: one progress line per this many percent
STILL_WORKING_SECS = 30.0  # not a terminal: a Speaches download says it is alive this often
RATE_WINDOW_SECS = 3.0
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


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


def size_text(count: float, unit_of: float | None = None) -> str:
    """Bytes in decimal units, as Ollama shows them; ``unit_of`` picks the unit by another size."""
    reference = count if unit_of is None else unit_of
    for unit, scale, digits in (("GB", 1e9, 2), ("MB", 1e6, 1), ("kB", 1e3, 0)):
        if reference >= scale:
            return f"{count / scale:.{digits}f} {unit}"
    return f"{count:.0f} B"


def duration_text(secs: float) -> str:
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
                    f"({size_text(completed, total)} of {size_text(total)} already downloaded)"
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
        return f"{size_text(self.completed, self.total).split()[0]} / {size_text(self.total)}"

    def _plain_line(self, percent: int) -> str:
        rate = self._rate()
        speed = f"  {size_text(rate)}/s" if rate else ""
        return f"  {self._model} {percent:3d}%  {self._amounts()}{speed}"

    def _bar_line(self, percent: int, status: str) -> str:
        details = f" {percent:3d}%  {self._amounts()}"
        rate = self._rate()
        if not status.startswith(("pulling", "success")):
            details += f"  {status}"  # verifying sha256 digest, writing manifest
        elif rate and self.completed < self.total:
            left = (self.total - self.completed) / rate
            details += f"  {size_text(rate)}/s  {duration_text(left)} left"
        head = f"  {self._model} "
        room = self._screen.width() - len(head) - len(details) - 2
        width = max(10, min(30, room))
        filled = width * percent // 100
        full, empty = ("█", "░") if self._screen.unicode else ("#", "-")
        return f"{head}[{full * filled}{empty * (width - filled)}]{details}"


@contextlib.asynccontextmanager
async def showing_work(screen: Screen, model_id: str) -> AsyncIterator[None]:
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
            screen.say(f"  still downloading {model_id} ({duration_text(elapsed)} so far)")
