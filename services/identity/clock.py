"""Time as Identity stores it: integer microseconds since the epoch (compact in Redis)."""

from __future__ import annotations

import time

MICROS_PER_SECOND = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000
