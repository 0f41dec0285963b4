"""Start a server module as a real subprocess and wait for its ``LISTENING <url>`` line.

Every stand-in (and the agent) prints exactly one line ``LISTENING http://127.0.0.1:PORT``
on stdout once it accepts connections (the stand-ins with ``serve`` below). Use from a
pytest fixture::

    with start_standin("tests.standins.speaches", "--port", "0", "--installed-all") as (_, url):
        yield url
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING = "LISTENING "


async def serve(
    app: web.Application,
    host: str,
    port: int,
    shutdown_secs: float = 1.0,
    access_log: logging.Logger | None = None,
) -> None:
    """The stand-in's side: serve ``app``, print the LISTENING line, run until SIGINT/SIGTERM."""
    runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=shutdown_secs)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"{LISTENING}http://{host}:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _pump(stream: IO[str], lines: queue.Queue[str | None], tail: collections.deque[str]) -> None:
    """Read the child's stdout until EOF: hand each line over and keep the last few."""
    for line in stream:
        tail.append(line)
        lines.put(line)
    lines.put(None)


@contextmanager
def start_standin(
    module: str,
    *args: str,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``python -m module *args``; yield (process, base_url); terminate it on exit.

    stderr is inherited (pytest shows it on failure); stdout is drained in a thread so the
    child never blocks on a full pipe, and its last lines are kept for error messages.
    """
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=child_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=50)
    reader = threading.Thread(target=_pump, args=(process.stdout, lines, tail), daemon=True)
    reader.start()
    try:
        yield process, _wait_for_url(process, lines, tail, timeout)
    finally:
        stop(process)
        reader.join(timeout=5)


def _wait_for_url(
    process: subprocess.Popen[str],
    lines: queue.Queue[str | None],
    tail: collections.deque[str],
    timeout: float,
) -> str:
    deadline = time.monotonic() + timeout
    try:
        while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            if line.startswith(LISTENING):
                return line[len(LISTENING) :].strip()
    except queue.Empty:
        raise TimeoutError(
            f"{process.args} printed no LISTENING line within {timeout} s; stdout: {list(tail)}"
        ) from None
    raise RuntimeError(
        f"{process.args} exited with {process.wait()} before listening; stdout: {list(tail)}"
    )


def stop(process: subprocess.Popen[str], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
