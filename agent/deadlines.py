"""Deadlines on a backend's answer: for its start, and for every pause within it.

A backend that stops answering keeps its connection open and sends nothing: no error ever
comes, and without a deadline the person waits in silence. The OpenAI client's own
timeouts cannot tell the two waits apart (a CPU server may think for many seconds before
its first token, then send one every tenth of a second), so each read is bounded here:
the first piece of the answer by the first-byte deadline, counted from the request, and
each later piece by the stall deadline, counted from the piece before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class BackendTimeout(TimeoutError):
    """A backend did not answer, or stopped answering, in time."""


@dataclass(frozen=True)
class Deadlines:
    first_byte_secs: float  # from the request to the first piece of its answer
    stall_secs: float  # between two pieces of a streamed answer

    def start(self) -> float:
        """When (event-loop time) the first piece of the answer to a request sent now is due."""
        return asyncio.get_running_loop().time() + self.first_byte_secs

    async def first(self, answer: Awaitable[T], due: float) -> T:
        """``answer`` (the start of a backend's answer, say its headers), if it comes by ``due``."""
        try:
            async with asyncio.timeout_at(due):
                return await answer
        except TimeoutError as error:
            raise self.no_start() from error

    async def bounded(self, pieces: AsyncIterable[T], due: float) -> AsyncIterator[T]:
        """``pieces`` as they come; a BackendTimeout if the first is not there by ``due`` or
        a later one keeps the stream waiting longer than ``stall_secs``."""
        loop = asyncio.get_running_loop()
        iterator = aiter(pieces)
        first = True
        while True:
            try:
                async with asyncio.timeout_at(due if first else loop.time() + self.stall_secs):
                    piece = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError as error:
                raise (self.no_start() if first else self.stalled()) from error
            first = False
            yield piece

    def no_start(self) -> BackendTimeout:
        return BackendTimeout(f"no answer within {self.first_byte_secs:g} s")

    def stalled(self) -> BackendTimeout:
        return BackendTimeout(f"the answer stopped for {self.stall_secs:g} s")
