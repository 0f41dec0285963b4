"""Log lines stay whole when several processes write them to one stderr, as the supervisor
and its workers do (unbuffered in containers: PYTHONUNBUFFERED=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.standins.process import REPO_ROOT

WRITERS = 4
LINES = 2000

WRITER = """
import structlog
from agent.logs import configure_logging

configure_logging("info", "json")
log = structlog.get_logger("writer")
for index in range({lines}):
    log.info("line", writer={writer}, index=index)
"""


def test_processes_sharing_stderr_never_merge_lines() -> None:
    read, write = os.pipe()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(lines=LINES, writer=writer)],
            stderr=write,
            cwd=REPO_ROOT,
            env=env,
        )
        for writer in range(WRITERS)
    ]
    os.close(write)
    with os.fdopen(read) as output:
        lines = output.read().splitlines()
    assert all(writer.wait(timeout=60) == 0 for writer in writers)
    events = [json.loads(line) for line in lines]  # a merged line is not one JSON object
    assert len(events) == WRITERS * LINES
    for writer in range(WRITERS):
        indexes = [e["index"] for e in events if e["writer"] == writer]
        assert indexes == list(range(LINES))
