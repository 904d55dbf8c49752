"""Keys a script or a MULTI/EXEC touches together share one Cluster slot."""

from __future__ import annotations

import uuid

from redis.crc import key_slot

from services.delivery import credential_store
from services.delivery import queue_keys as keys
from services.delivery.credentials import Slot


def _one_slot(*names: str) -> bool:
    return len({key_slot(name.encode()) for name in names}) == 1


def test_a_shards_keys_share_its_slot():
    for shard in range(16):
        nid = str(uuid.uuid4())
        assert _one_slot(
            keys.record(shard, nid),
            keys.stream(shard),
            keys.retries(shard),
            keys.outcomes(shard),
            keys.outcomes_watermark(shard),
            keys.index(shard, "app", "shop"),
            keys.index(shard, "device", "shop", "d1"),
            keys.index(shard, "user", "shop", "u1"),
            keys.index(shard, "campaign", "shop", "c1"),
        )
    assert not _one_slot(*(keys.stream(shard) for shard in range(16)))  # shards spread


def test_an_apps_credential_keys_share_its_slot():
    slot = Slot("shop", "apns", "production")
    assert _one_slot(
        credential_store.slot_key(slot),
        credential_store.index_key("shop"),
        credential_store.version_key("shop"),
    )
