"""Time for the Campaign domain, injectable so schedules can be tested without waiting.

Every rule that depends on "now" (send times, local times, quiet hours, throttles,
frequency caps, conversion windows) reads a `Clock`. Production uses `SystemClock`;
tests install a `ManualClock` on the servicer (`servicer.use_clock(...)`) and move it
forward explicitly. Sleeping goes through the clock too, so a throttled fan-out waits
for the manual clock rather than for the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Wait until `seconds` have passed on this clock (callers bound it with a timeout)."""


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that only moves when `advance` or `set` is called (tests, demos)."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    def set(self, when: float) -> None:
        self._now = when
        # Wake every sleeper; each re-checks its own deadline.
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + seconds
        while self._now < deadline:
            await self._moved.wait()


def ms(seconds: float) -> int:
    return int(seconds * 1000)
