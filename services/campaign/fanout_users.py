"""The users of a fan-out's devices: read from Identity in batches, each at most once
per fan-out, and kept as bytes.

A user is kept serialized without its external id: with the read mask Campaign sends
(only the attributes the templates read, and the time zone when the schedule needs
it) those bytes are exactly what rendering depends on, so they are also the fan-out's
render cache key (services/campaign/wire.py), and a user with several devices costs
one BatchGetUsers entry and one serialization, not one per device.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from herald.identity.v1 import user_pb2
from herald.registration.v1 import device_pb2

# Remembered for a user Identity does not know. Tag 0 is invalid in protobuf, so no
# serialized user starts with a zero byte.
UNKNOWN = b"\x00"


def user_of(user_id: str, stored: bytes) -> user_pb2.User:
    user = user_pb2.User.FromString(stored)
    user.external_id = user_id
    return user


class FanoutUsers:
    def __init__(self, identity: Any, paths: list[str] | None, remember: int) -> None:
        """`paths`: the read mask (None: every field, [] no user needed); `remember`:
        at most this many users kept for the fan-out (only with a read mask, which
        keeps them small: ~150 bytes each)."""
        self.identity = identity
        self.paths = paths
        self.needed = paths is None or bool(paths)
        self.limit = remember
        self.known: dict[str, bytes] | None = {} if paths and remember else None

    async def fetch(
        self, devices: Iterable[device_pb2.AudienceDevice], remembered: bool = True
    ) -> dict[str, bytes]:
        """The devices' known users by external id; `remembered`: from earlier batches
        where possible (recipients held for hours are read afresh)."""
        if not self.needed:
            return {}
        wanted = dict.fromkeys(d.user_id for d in devices if d.user_id)
        found: dict[str, bytes] = {}
        known = self.known if remembered else None
        if known is not None:
            for user_id in list(wanted):
                stored = known.get(user_id)
                if stored is not None:
                    del wanted[user_id]
                    if stored is not UNKNOWN:
                        found[user_id] = stored
        ids = list(wanted)
        # BatchGetUsers takes 1,000 ids a call: the calls of one batch go concurrently.
        for part in await asyncio.gather(
            *(
                self.identity.user_messages(ids[start : start + 1000], self.paths or ())
                for start in range(0, len(ids), 1000)
            )
        ):
            for user_id, user in part.items():
                user.ClearField("external_id")
                found[user_id] = user.SerializeToString()
        if known is not None and len(known) < self.limit:
            for user_id in ids:
                known[user_id] = found.get(user_id, UNKNOWN)
        return found
