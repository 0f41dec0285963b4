"""How late the event loop runs a timer: the sign that a process has more work than time.

Every audio frame of every conversation in a worker is handled on its one event loop;
when that loop falls behind, every conversation there hears the agent late. The lag is
sampled by a timer that asks to wake every ``INTERVAL_SECS`` and notes how late it woke.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

INTERVAL_SECS = 0.05
WINDOW_SECS = 2.0


class LoopLag:
    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=round(WINDOW_SECS / INTERVAL_SECS))

    @property
    def mean_ms(self) -> float:
        """Mean lateness over the last ``WINDOW_SECS``: what decides whether to take more."""
        return 1000 * sum(self._samples) / len(self._samples) if self._samples else 0.0

    @property
    def max_ms(self) -> float:
        return 1000 * max(self._samples, default=0.0)

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(INTERVAL_SECS)
            self._samples.append(max(0.0, time.monotonic() - asked - INTERVAL_SECS))
