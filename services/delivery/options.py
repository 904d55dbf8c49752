"""Delivery's queue settings, read from `HERALD_DELIVERY_*` environment variables.

They live here rather than in services/core/config.py until they are folded into the
shared Settings; docs/delivery.md lists them. A bad value fails at start-up with one line
per variable, like the shared configuration does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from services.core.config import ConfigError

PREFIX = "HERALD_DELIVERY_"
PROVIDERS = ("apns", "fcm", "webpush")
_RATE_RE = re.compile(
    r"(?P<provider>apns|fcm|webpush)(?::(?P<app>[A-Za-z0-9._-]+))?"
    r"=(?P<count>\d+)/(?P<seconds>\d+(?:\.\d+)?)s?"
)


@dataclass(frozen=True)
class RateLimit:
    """`count` sends per `seconds`, with a burst of one second's worth (at least 1)."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def burst(self) -> int:
        return max(1, int(self.per_second))


def parse_rate_limits(text: str) -> dict[tuple[str, str], RateLimit]:
    """`fcm=600000/60,apns:shop=100/1` → {("fcm", ""): ..., ("apns", "shop"): ...}.
    An empty app means "every app of this provider" (each app gets its own budget)."""
    limits: dict[tuple[str, str], RateLimit] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _RATE_RE.fullmatch(part)
        if match is None or int(match["count"]) <= 0 or float(match["seconds"]) <= 0:
            raise ValueError(
                f"{part!r} is not PROVIDER[:APP]=COUNT/SECONDS (provider apns, fcm or webpush)"
            )
        limits[(match["provider"], match["app"] or "")] = RateLimit(
            int(match["count"]), float(match["seconds"])
        )
    return limits


@dataclass(frozen=True)
class DeliveryOptions:
    # Stream shards (each its own hash tag, so its own Cluster slot). Every process of
    # a deployment must use the same number: an item's shard comes from its id.
    queue_shards: int = 8
    # Items (queued and in flight) one shard may hold before Enqueue answers QUEUE_FULL.
    queue_max_depth: int = 250_000
    # The retry hint QUEUE_FULL and RATE_LIMITED answers carry when nothing better is known.
    queue_full_retry_seconds: float = 5.0
    # A worker's item untouched this long is taken over by another worker (XAUTOCLAIM);
    # also the lease a worker holds while sending. Must exceed the longest send.
    reclaim_seconds: float = 30.0
    # How long notification records (attempts) and list indexes are kept after their
    # last change.
    record_ttl_seconds: int = 7 * 24 * 3600
    # How long outcomes stay readable by StreamOutcomes (cursor older: CURSOR_EXPIRED).
    outcomes_retention_seconds: int = 24 * 3600
    # Sends in flight per process.
    worker_concurrency: int = 256
    # Items read from a shard per XREADGROUP.
    read_batch: int = 128
    # How often due retries are moved back to the streams.
    retry_poll_seconds: float = 0.2
    # A worker waits for rate budget up to this long; a longer wait puts the item back
    # in the retry schedule instead of holding a worker (and its lease).
    rate_wait_max_seconds: float = 5.0
    # PROVIDER[:APP]=COUNT/SECONDS, comma separated; a limit without an app applies to
    # every app separately (FCM's 600k/min per project).
    rate_limits: Mapping[tuple[str, str], RateLimit] = field(
        default_factory=lambda: parse_rate_limits("fcm=600000/60")
    )
    # Whether this process runs queue workers (off: it only accepts Enqueue and serves
    # reads; another process sends).
    workers_enabled: bool = True
    # How often the credential expiry gauge re-reads the expiry index (every app's
    # certificates), so scrapes never read Redis; this process's own puts show at once.
    credential_expiry_refresh_seconds: float = 30.0

    def rate_limit(self, provider: str, app_id: str) -> RateLimit | None:
        return self.rate_limits.get((provider, app_id)) or self.rate_limits.get((provider, ""))

    def with_changes(self, **changes: Any) -> DeliveryOptions:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeliveryOptions:
        """Read every `HERALD_DELIVERY_<FIELD>`; raise ConfigError naming each bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in fields(cls):
            name = PREFIX + spec.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[spec.name] = _parse(spec.name, raw.strip())
            except ValueError as error:
                problems.append(f"{name}: {error} (got {raw!r})")
        options = cls(**values)
        problems += [f"{PREFIX}{name.upper()}: {why}" for name, why in options.problems()]
        if problems:
            raise ConfigError("invalid Delivery configuration:\n  " + "\n  ".join(problems))
        return options

    def problems(self) -> list[tuple[str, str]]:
        checks = [
            ("queue_shards", 1 <= self.queue_shards <= 1024, "must be 1 to 1024"),
            ("queue_max_depth", self.queue_max_depth >= 1, "must be at least 1"),
            ("queue_full_retry_seconds", self.queue_full_retry_seconds > 0, "must be > 0"),
            ("reclaim_seconds", self.reclaim_seconds >= 0.5, "must be at least 0.5"),
            ("record_ttl_seconds", self.record_ttl_seconds >= 60, "must be at least 60"),
            ("outcomes_retention_seconds", self.outcomes_retention_seconds >= 1, "must be >= 1"),
            ("worker_concurrency", 1 <= self.worker_concurrency <= 10_000, "must be 1 to 10000"),
            ("read_batch", 1 <= self.read_batch <= 10_000, "must be 1 to 10000"),
            ("retry_poll_seconds", 0.01 <= self.retry_poll_seconds <= 60, "must be 0.01 to 60"),
            ("rate_wait_max_seconds", self.rate_wait_max_seconds >= 0, "must be >= 0"),
            (
                "credential_expiry_refresh_seconds",
                0.05 <= self.credential_expiry_refresh_seconds <= 3600,
                "must be 0.05 to 3600",
            ),
        ]
        return [(name, why) for name, ok, why in checks if not ok]


def _parse(name: str, raw: str) -> Any:
    if name == "rate_limits":
        return parse_rate_limits(raw)
    if name == "workers_enabled":
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if name.endswith("_seconds") and name not in (
        "record_ttl_seconds",
        "outcomes_retention_seconds",
    ):
        return float(raw)
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be an integer") from None
