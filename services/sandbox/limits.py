"""Rate limits the providers enforce: token buckets, one per project or per key.

FCM's project quota, the per-device limits of APNs and FCM, and the Web Push service's
per-subscription / per-VAPID-key limits are all buckets refilled continuously (the
providers' windows are not clock-aligned). A refused request takes nothing from any bucket.
"""

from __future__ import annotations

import math
import time


class QuotaBucket:
    """A token bucket of `per_minute` requests, refilled continuously, starting full."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, per_seconds: float = 60.0) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / per_seconds
        self.level = float(per_minute)
        self.updated = time.monotonic()

    def refill(self, now: float) -> float:
        """The level at `now`, without taking anything; 0 when nothing may go."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        return self.level

    def wait(self) -> float:
        """Seconds until one request may go (after refill())."""
        return (1 - self.level) / self.rate if self.rate else 60.0

    def take(self) -> float:
        """0 when a message may go (and counts it), else the seconds until one may."""
        if self.refill(time.monotonic()) >= 1:
            self.level -= 1
            return 0.0
        return self.wait()


def refuse_negative(message: str, *values: float | None) -> None:
    """ValueError(message) when a limit (or penalty) given is below zero; None is not given."""
    if any(value is not None and value < 0 for value in values):
        raise ValueError(message)


class KeyedLimit:
    """Per-key buckets (device token, subscription, VAPID key): at most `per_minute` and
    `per_hour` requests per key; either may be off (None). Off entirely when both are.

    Keys are bounded to `max_keys` (the oldest is forgotten, its limit starting afresh), so
    a long run with fresh tokens cannot grow memory without limit."""

    def __init__(
        self, per_minute: int | None = None, per_hour: int | None = None, max_keys: int = 100_000
    ) -> None:
        self.per_minute = per_minute or None
        self.per_hour = per_hour or None
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[QuotaBucket, ...]] = {}

    @property
    def enabled(self) -> bool:
        return self.per_minute is not None or self.per_hour is not None

    def to_json(self) -> dict[str, int | None]:
        return {"per_minute": self.per_minute, "per_hour": self.per_hour}

    def take(self, key: str) -> int:
        """0 when a request for `key` may go (and counts it), else whole seconds to wait
        (at least 1, as a Retry-After)."""
        if not self.enabled:
            return 0
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = self._new_buckets()
            if len(self._buckets) >= self.max_keys:
                del self._buckets[next(iter(self._buckets))]
            self._buckets[key] = buckets
        now = time.monotonic()
        levels = [bucket.refill(now) for bucket in buckets]
        if all(level >= 1 for level in levels):
            for bucket in buckets:
                bucket.level -= 1
            return 0
        return max(1, math.ceil(max(b.wait() for b in buckets if b.level < 1)))

    def give_back(self, key: str) -> None:
        """Undo one take() for `key` (a request another limit then refused)."""
        for bucket in self._buckets.get(key, ()):
            bucket.level = min(bucket.capacity, bucket.level + 1)

    def _new_buckets(self) -> tuple[QuotaBucket, ...]:
        buckets = []
        if self.per_minute is not None:
            buckets.append(QuotaBucket(self.per_minute))
        if self.per_hour is not None:
            buckets.append(QuotaBucket(self.per_hour, per_seconds=3600.0))
        return tuple(buckets)
