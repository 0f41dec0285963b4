"""How many new conversations one client may start in a minute (NEW_SESSIONS_PER_MINUTE).

A client is the IP address its connection comes from. Headers such as X-Forwarded-For
are not believed: any device on the network can write them. So each device on the LAN
has its own allowance, and behind a reverse proxy all visitors share the proxy's.

Only offers that a worker looks at count: one refused at once (the house is full, the
workers are busy) is handed back, so a person retrying a full house is told it is full,
never that they tried too often. Renegotiations and ICE restarts of a conversation that
exists are not new conversations and are not counted.
"""

from __future__ import annotations

import ipaddress
import math
from collections import deque

WINDOW_SECS = 60.0


def client_address(remote: str | None) -> str:
    """The client's key: its IP address, an IPv4 address the same however it arrived."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


class NewSessionLimit:
    """A sliding window per client: at most ``per_minute`` starts in any 60 s (0: no limit).

    Times are the caller's (``time.monotonic()``); memory is one small queue per client
    that started something in the last minute.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._starts: dict[str, deque[float]] = {}
        self._swept = -math.inf

    def take(self, client: str, now: float) -> float | None:
        """Count a new conversation for ``client`` and return None, or, over the limit,
        count nothing and return the seconds until it may start one again."""
        if not self.per_minute:
            return None
        self._sweep(now)
        starts = self._starts.setdefault(client, deque())
        while starts and starts[0] <= now - WINDOW_SECS:
            starts.popleft()
        if len(starts) >= self.per_minute:
            return starts[0] + WINDOW_SECS - now
        starts.append(now)
        return None

    def give_back(self, client: str) -> None:
        """The conversation last counted for ``client`` never reached a worker."""
        starts = self._starts.get(client)
        if starts:
            starts.pop()
            if not starts:
                del self._starts[client]

    @property
    def clients(self) -> int:
        """How many clients are remembered (each started something in the last minute)."""
        return len(self._starts)

    def _sweep(self, now: float) -> None:
        """Forget clients with nothing in the window, once a window."""
        if now - self._swept < WINDOW_SECS:
            return
        self._swept = now
        for client in [c for c, starts in self._starts.items() if starts[-1] <= now - WINDOW_SECS]:
            del self._starts[client]
