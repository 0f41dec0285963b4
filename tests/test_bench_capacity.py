"""The capacity bench follows the agent's whole process tree: children found by their parent
id, a child that exits and is replaced still counted, a process outside the tree not counted.

Real processes burn a known amount of CPU time (measured by themselves, so it does not depend
on how busy the machine is).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.bench.capacity import TreeWatch
from tests.bench.latency import process_tree

BURN = "import time\nwhile time.process_time() < {secs}: pass\n"

# Waits for "go", then runs child A (burns 0.3 s of CPU, exits), then child B (burns 0.3 s,
# says so with its pid, then waits for "quit" on the shared stdin).
PARENT = textwrap.dedent(
    f"""
    import os, subprocess, sys
    sys.stdin.readline()
    burn = {BURN.format(secs=0.3)!r}
    subprocess.run([sys.executable, "-c", burn], check=True)
    b = burn + "import os, sys; print('burnt', os.getpid(), flush=True); sys.stdin.readline()"
    subprocess.run([sys.executable, "-c", b], check=True)
    """
)


def test_tree_counts_children_that_come_and_go_and_nothing_outside_it() -> None:
    outsider = subprocess.Popen([sys.executable, "-c", BURN.format(secs=1.0)])
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with TreeWatch(parent.pid, every=0.02) as watch:
            start = watch.sample()
            parent.stdin.write("go\n")
            parent.stdin.flush()
            word, pid = parent.stdout.readline().split()  # B has burnt its share
            end = watch.sample()
            tree = [stat.pid for stat in process_tree(parent.pid)]
            parent.stdin.write("quit\n")
            parent.stdin.flush()
        assert parent.wait(timeout=30) == 0
        assert outsider.wait(timeout=30) == 0
    finally:
        parent.kill()
        outsider.kill()

    assert word == "burnt"
    assert tree == [parent.pid, int(pid)]
    usage = watch.usage(start, end)
    # A (gone by then) and B used 0.6 s together; the outsider's 1.0 s is not the tree's.
    assert 0.5 <= usage["cpu_secs"] <= 0.9, usage
    assert usage["processes_started"] == 2  # A and B
    assert usage["processes"] == 2
    assert 0 < usage["pss_mb_end"] <= usage["rss_mb_end"]


def test_a_process_that_is_gone_has_no_tree() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert process_tree(process.pid) == []
