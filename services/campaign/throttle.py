"""The per-campaign send rate (messages per minute), paced on the injectable clock.

A token bucket holding one minute's worth: a campaign may send its per-minute budget
at once, then one message every 60/rate seconds. Only the process holding the
campaign's lease fans it out, so the bucket lives in that process; after a takeover
the new holder starts a fresh bucket (at most one extra minute's budget).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from services.campaign.clock import Clock

STOP_CHECK_SECONDS = 0.5


class Stopped(Exception):
    """The fan-out must stop (cancelled, lease lost, shutting down)."""


class Throttle:
    def __init__(self, per_minute: int, clock: Callable[[], Clock]) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._tokens = float(per_minute)
        self._at = clock().now()

    @property
    def chunk(self) -> int:
        return max(1, self.per_minute)

    def _refill(self) -> None:
        now = self._clock().now()
        if now > self._at:
            self._tokens = min(
                float(self.per_minute), self._tokens + (now - self._at) * self.per_minute / 60.0
            )
        self._at = now

    async def take(self, count: int, should_stop: Callable[[], Awaitable[bool]]) -> None:
        """Waits until `count` (≤ per_minute) messages may go; raises Stopped."""
        while True:
            self._refill()
            if self._tokens >= count:
                self._tokens -= count
                return
            missing = (count - self._tokens) * 60.0 / self.per_minute
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clock().sleep(missing), STOP_CHECK_SECONDS)
            if await should_stop():
                raise Stopped()
