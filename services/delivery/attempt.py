"""AttemptResult: what one delivery attempt did, in the shape attempt records keep."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import duration_pb2, timestamp_pb2

from herald.delivery.v1 import notification_pb2
from herald.type.v1 import platform_pb2, push_options_pb2
from services.delivery.actions import ACTION_TABLE_VERSION, Action
from services.delivery.credentials import PROVIDER_ENUMS

PROTO_ACTIONS = {
    Action.DELIVERED: notification_pb2.PROVIDER_ACTION_NONE,
    Action.RETRY: notification_pb2.PROVIDER_ACTION_RETRY,
    Action.DELETE_TOKEN: notification_pb2.PROVIDER_ACTION_DELETE_TOKEN,
    Action.QUARANTINE: notification_pb2.PROVIDER_ACTION_QUARANTINE,
    Action.FAIL: notification_pb2.PROVIDER_ACTION_FAIL,
}


@dataclass(frozen=True)
class AttemptResult:
    """One attempt's outcome. `action` is the table's verdict; `outcome` is what the
    notification's state becomes (a RETRY past the TTL is FAILED / EXPIRED)."""

    notification_id: str
    attempt: int
    action: Action
    outcome: int  # herald.type.v1.DeliveryOutcome
    provider: str  # "apns" | "fcm" | "webpush"
    status: int  # the provider's HTTP status; 0 when none
    reason: str  # provider reason, or TIMEOUT / GOAWAY / RST_STREAM / CONNECTION_LOST / CONNECT_FAILED / CIRCUIT_OPEN / ...
    outcome_reason: (
        str  # the reason the notification's outcome carries (EXPIRED when the TTL ran out)
    )
    provider_id: str  # apns-id, FCM message name or Web Push Location
    provider_time: (
        float | None
    )  # epoch seconds: the APNs 410 timestamp, else the answer time for DELETE_TOKEN
    retry_after_seconds: float | None  # the provider's Retry-After
    next_retry_delay_seconds: float | None  # set when another attempt should follow
    latency_ms: float
    connection_id: str
    error: str  # safe to log: no token, no secret
    start_time: float  # epoch seconds
    invalidation: str = ""  # DELETE_TOKEN: Registration's verdict (REMOVED, KEPT_REREGISTERED, NOT_FOUND, UNIMPLEMENTED, ...)
    table_version: str = ACTION_TABLE_VERSION

    @property
    def final(self) -> bool:
        return self.next_retry_delay_seconds is None

    def to_proto(self) -> notification_pb2.DeliveryAttempt:
        """The DeliveryAttempt GetNotification returns (worker_id and trace ids are the
        caller's to fill)."""
        out = notification_pb2.DeliveryAttempt(
            attempt_number=self.attempt,
            provider=PROVIDER_ENUMS.get(self.provider, platform_pb2.PROVIDER_UNSPECIFIED),
            connection_id=self.connection_id,
            provider_status=self.status,
            provider_reason=self.reason,
            outcome=push_options_pb2.DeliveryOutcome.ValueType(self.outcome),
            action=PROTO_ACTIONS[self.action],
        )
        out.start_time.CopyFrom(_timestamp(self.start_time))
        out.latency.CopyFrom(_duration(self.latency_ms / 1000))
        if self.provider == "apns":
            out.apns_id = self.provider_id
        elif self.provider == "fcm":
            out.fcm_message_name = self.provider_id
        else:
            out.web_push_location = self.provider_id
        if self.retry_after_seconds is not None:
            out.retry_after.CopyFrom(_duration(self.retry_after_seconds))
        if self.next_retry_delay_seconds is not None:
            out.next_attempt_time.CopyFrom(
                _timestamp(self.start_time + self.latency_ms / 1000 + self.next_retry_delay_seconds)
            )
        return out


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    # Microseconds, as a datetime would keep them, without building one (hot path).
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(round(seconds * 1_000_000))
    return stamp


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out
