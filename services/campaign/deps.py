"""What the Campaign domain depends on, built once per process (no globals)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from services.campaign.clients import DeliveryClient, IdentityClient, RegistrationClient
from services.campaign.clock import Clock, SystemClock
from services.campaign.frequency import FrequencyCaps
from services.campaign.reports import ReportStore
from services.campaign.store import CampaignStore
from services.campaign.telemetry import CampaignMetrics


@dataclass
class Tuning:
    """Knobs with production defaults; tests shorten them on the servicer's deps."""

    # Devices per StreamAudience message and per commit: 2,000 (Registration allows
    # 5,000) makes 4x fewer stream messages, BatchGetUsers calls and commit scripts
    # than 500; one batch in memory is still a few MB.
    batch_size: int = 2000
    # Batches streamed and their users fetched ahead of the one being rendered and
    # enqueued: Registration and Identity work while Campaign renders, and at most this
    # many batches more are in memory.
    prefetch_batches: int = 2
    # Users remembered per fan-out (their masked fields, serialized: ~200 bytes each,
    # so ~40 MB at the limit) so a user's other devices need no BatchGetUsers; 0: off.
    known_users: int = 200_000
    enqueue_chunk: int = 1000  # notifications per Enqueue (Delivery's maximum)
    poll_seconds: float = 0.2  # how often the scheduler looks for due campaigns
    lease_seconds: float = 10.0  # a crashed holder's campaigns move on after this
    give_up_seconds: float = 300.0  # Delivery failing this long fails the campaign
    users_concurrency: int = 16  # ListUserDevices calls in flight ("any app" filters)
    settle_max_seconds: float = 300.0  # longest wait for the last outcomes before COMPLETED
    settle_poll_seconds: float = 0.2  # how often that wait reads the counters


@dataclass
class Deps:
    redis: Any  # RedisClient; Any because redis-py's async stubs do not type bytes replies
    store: CampaignStore
    reports: ReportStore
    caps: FrequencyCaps
    registration: RegistrationClient
    identity: IdentityClient
    delivery: DeliveryClient
    clock: Clock = field(default_factory=SystemClock)
    tuning: Tuning = field(default_factory=Tuning)
    metrics: CampaignMetrics = field(default_factory=CampaignMetrics)  # no-op unless wired
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    tracer: trace.Tracer = field(default_factory=trace.NoOpTracer)  # the fan-out's spans

    def now(self) -> float:
        return self.clock.now()

    def now_ms(self) -> int:
        return int(self.clock.now() * 1000)
