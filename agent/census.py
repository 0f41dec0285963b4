"""What a worker process holds right now: its sessions, their peer connections, its asyncio
tasks and threads.

A leak under churn shows up here as a number that does not come back down once the
conversations have ended. The worker takes a census with each load report (once a second,
``agent.worker``), and the supervisor shows the latest one per worker in ``/health``.
Peer connections are counted from a weak registry, so one that is still in memory after
its session let go of it counts too, until it is freed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

from aiortc import RTCPeerConnection

# concurrent.futures.ThreadPoolExecutor's default size, which asyncio's pool has.
POOL_THREADS_MAX = min(32, (os.cpu_count() or 1) + 4)

_peer_connections: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()


def track(pc: RTCPeerConnection) -> None:
    """Count ``pc`` from now until it is freed."""
    _peer_connections.add(pc)


def take(sessions: int) -> dict[str, Any]:
    pcs = list(_peer_connections)
    threads = threading.enumerate()
    return {
        "sessions": sessions,
        "peer_connections": sum(pc.connectionState != "closed" for pc in pcs),
        "peer_connections_in_memory": len(pcs),
        "tasks": len(asyncio.all_tasks()),
        "threads": len(threads),
        # asyncio's default thread pool (name look-ups for backend connections, among
        # others) keeps the threads a busy moment started: at most POOL_THREADS_MAX.
        "pool_threads": sum(thread.name.startswith("asyncio_") for thread in threads),
    }
