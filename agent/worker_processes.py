"""Worker processes, forked from one that has already loaded what they run.

What a worker imports (Pipecat, aiortc and PyAV, ONNX Runtime, the OpenAI client) is
about 150 MB of memory and a few seconds of start-up. Python's fork server (a process the
supervisor starts once, see ``multiprocessing``) imports it all once, in
``agent.worker_preload``, and forks each worker from itself: the workers share those
pages, copied only where a worker writes to them, instead of each holding its own copy,
and a worker started again after a crash is ready at once.

A worker learns that the supervisor is gone from multiprocessing's pipe to it
(``multiprocessing.parent_process().sentinel``), so no worker outlives the supervisor.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from multiprocessing.process import BaseProcess
from pathlib import Path

from agent.config import Settings

_FORK_SERVER = multiprocessing.get_context("forkserver")
_FORK_SERVER.set_forkserver_preload(["agent.worker_preload"])


def start(settings: Settings, index: int, socket: Path) -> BaseProcess:
    """Fork a worker. Blocks until it runs: the first time, until the fork server has
    imported everything (seconds), so call it in a thread."""
    process = _FORK_SERVER.Process(
        target=_run_worker,
        args=(settings, index, str(socket)),
        name=f"voice-agent worker {index}",
        daemon=True,  # should the supervisor exit without stopping it, it is stopped then
    )
    process.start()
    return process


async def exited(process: BaseProcess) -> int | None:
    """Wait for the process to end; its exit code (negative: the signal that ended it)."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    loop.add_reader(process.sentinel, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_reader(process.sentinel)
    process.join()  # reads the exit code the fork server sent, which has already arrived
    return process.exitcode


def _run_worker(settings: Settings, index: int, socket_path: str) -> None:
    from agent.logs import configure_logging
    from agent.worker import run_worker

    configure_logging(
        settings.log_level, settings.log_format, transcripts=settings.log_transcripts == "on"
    )
    sys.exit(run_worker(settings, index, socket_path))
