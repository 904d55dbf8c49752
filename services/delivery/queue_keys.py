"""Names of the queue's Redis keys (docs/keys/delivery.md).

Everything about one notification lives in the shard its id hashes to, and every key of
a shard carries the shard's hash tag, so the scripts that record an attempt, schedule a
retry, emit the outcome and acknowledge the stream entry run on one Cluster slot.
"""

from __future__ import annotations

import hashlib

from services.core.redis import hash_tag, shard_of

GROUP = "dlv-workers"
INDEX_KINDS = ("app", "device", "user", "campaign")


def shard_for(notification_id: str, shards: int) -> int:
    return shard_of(notification_id, shards)


def tag(shard: int) -> str:
    return hash_tag(f"dlvq{shard}")


def stream(shard: int) -> str:
    return f"dlv:q:{tag(shard)}"


def retries(shard: int) -> str:
    return f"dlv:retry:{tag(shard)}"


def outcomes(shard: int) -> str:
    return f"dlv:out:{tag(shard)}"


def outcomes_watermark(shard: int) -> str:
    """The newest outcome id the trim of `outcomes(shard)` has deleted (a cursor position
    older than it has lost outcomes it had not read)."""
    return f"dlv:outwm:{tag(shard)}"


def record(shard: int, notification_id: str) -> str:
    return f"dlv:n:{tag(shard)}:{notification_id}"


def index(shard: int, kind: str, app_id: str, value: str = "") -> str:
    """A sorted set of notification ids by create time (ms): all of an app (`value`
    empty), or one device, user or campaign of it. One per shard."""
    suffix = f":{value}" if value else ""
    return f"dlv:idx:{tag(shard)}:{kind}:{app_id}{suffix}"


def idempotency(idempotency_key: str, canonical_token: str) -> str:
    """At most one notification per (idempotency key, token): holds the first one's id."""
    digest = hashlib.sha256(f"{idempotency_key}\x00{canonical_token}".encode()).hexdigest()[:40]
    return f"dlv:idem:{hash_tag(digest[:8])}:{digest}"


def enqueue_request(request_id: str) -> str:
    return f"dlv:enq:{hash_tag(request_id)}"


def rate(app_id: str, provider: str) -> str:
    return f"dlv:rate:{hash_tag(app_id)}:{provider}"
