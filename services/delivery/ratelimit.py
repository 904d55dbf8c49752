"""Send budgets per (app, provider), shared by every Delivery process through Redis.

A GCRA bucket (scripts/rate_take.lua) per (app, provider): queue workers reserve a slot
and wait for it (nothing is dropped); Send takes only what is available now and answers
RESOURCE_EXHAUSTED (RATE_LIMITED) with the wait as its retry hint otherwise.
"""

from __future__ import annotations

from typing import Any

from services.core.errors import ResourceExhausted
from services.core.redis import RedisClient, load_script
from services.delivery import queue_keys as keys
from services.delivery.options import DeliveryOptions

SCRIPTS = "services.delivery.scripts"


class RateLimiter:
    def __init__(self, redis: RedisClient, options: DeliveryOptions) -> None:
        self.options = options
        self._take = load_script(redis, SCRIPTS, "rate_take.lua")

    async def take(self, app_id: str, provider: str, max_wait: float) -> tuple[bool, float]:
        """(taken, wait seconds). Taken with a wait: sleep that long, then send. Not
        taken: the budget is out for longer than `max_wait`; try again after the wait."""
        limit = self.options.rate_limit(provider, app_id)
        if limit is None:
            return True, 0.0
        answer: Any = await self._take(
            keys=[keys.rate(app_id, provider)],
            args=[f"{1000.0 / limit.per_second:.6f}", limit.burst, int(max_wait * 1000)],
        )
        return bool(int(answer[0])), int(answer[1]) / 1000

    async def check_now(self, app_id: str, provider: str) -> None:
        """For Send: take one unit now or raise RATE_LIMITED with the wait as hint."""
        taken, wait = await self.take(app_id, provider, 0.0)
        if not taken:
            raise ResourceExhausted(
                "RATE_LIMITED",
                f"app {app_id} has used its {provider} send budget; retry in {wait:.1f}s",
                max(wait, 0.001),
                {"app_id": app_id, "provider": provider},
            )
