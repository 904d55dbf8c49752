"""Credentials in Redis, sealed. docs/keys/delivery.md lists the keys.

Every key of one app carries the hash tag `{<app_id>}`, so the Lua scripts that touch a
slot, the app's slot index and its version counter run on one Cluster slot.
"""

from __future__ import annotations

import json
import time
from typing import Any

from services.core.errors import FailedPrecondition
from services.core.redis import RedisClient, hash_tag, load_script
from services.delivery.credentials import Credential, NewCredential, Slot
from services.delivery.sealing import Sealer, SealError, slot_aad

SCRIPTS = "services.delivery.scripts"


def slot_key(slot: Slot) -> str:
    return f"dlv:cred:{hash_tag(slot.app_id)}:{slot.name}"


def index_key(app_id: str) -> str:
    return f"dlv:creds:{hash_tag(app_id)}"


def version_key(app_id: str) -> str:
    return f"dlv:credver:{hash_tag(app_id)}"


def _slot_from_name(app_id: str, name: str) -> Slot:
    provider, _, environment = name.partition(":")
    return Slot(app_id, provider, environment)


class CredentialStore:
    def __init__(self, redis: RedisClient, sealer: Sealer) -> None:
        self.redis = redis
        self.sealer = sealer
        self._put = load_script(redis, SCRIPTS, "put_credentials.lua")
        self._delete = load_script(redis, SCRIPTS, "delete_credentials.lua")
        self._record_error = load_script(redis, SCRIPTS, "record_credential_error.lua")

    def _aad(self, slot: Slot) -> bytes:
        return slot_aad(slot.app_id, slot.provider, slot.environment)

    async def put(self, new: NewCredential) -> tuple[Credential, bool]:
        """Store (or replace) a credential; returns it and whether one was replaced."""
        slot = new.slot
        sealed = self.sealer.seal(json.dumps(new.secret).encode(), self._aad(slot))
        now = time.time()
        version, replaced, created = await self._put(
            keys=[slot_key(slot), index_key(slot.app_id), version_key(slot.app_id)],
            args=[slot.name, sealed, new.kind, json.dumps(new.public), repr(now)],
        )
        cred = Credential(slot, new.kind, new.secret, new.public, int(version), float(created), now)
        return cred, bool(replaced)

    async def get(self, slot: Slot) -> Credential | None:
        fields: dict[Any, Any] = await self.redis.hgetall(slot_key(slot))
        if not fields:
            return None
        return self._decode(slot, fields)

    async def version(self, slot: Slot) -> tuple[int, float, str, float]:
        """(version, circuit_until, last_error, last_error_time): the cheap freshness check."""
        values: list[Any] = await self.redis.hmget(
            slot_key(slot), ["version", "circuit_until", "last_error", "last_error_time"]
        )
        version, until, error, when = values
        return (
            int(version or 0),
            float(until or 0),
            (error or b"").decode(),
            float(when or 0),
        )

    async def list(self, app_id: str) -> list[Credential]:
        members: set[Any] = await self.redis.smembers(index_key(app_id))
        names = sorted(m.decode() for m in members)
        found = []
        for name in names:
            cred = await self.get(_slot_from_name(app_id, name))
            if cred is not None:
                found.append(cred)
        return found

    async def delete(self, slot: Slot) -> bool:
        removed = await self._delete(
            keys=[slot_key(slot), index_key(slot.app_id), version_key(slot.app_id)],
            args=[slot.name],
        )
        return bool(removed)

    async def record_error(
        self, slot: Slot, version: int, reason: str, circuit_until: float
    ) -> None:
        await self._record_error(
            keys=[slot_key(slot)],
            args=[str(version), reason, repr(time.time()), repr(circuit_until)],
        )

    def _decode(self, slot: Slot, fields: dict[Any, Any]) -> Credential:
        try:
            secret = json.loads(self.sealer.open(fields[b"sealed"], self._aad(slot)))
        except SealError:
            # Another HERALD_CREDENTIALS_KEY sealed them (or the blob was moved): say so
            # plainly instead of failing as INTERNAL on every send.
            raise FailedPrecondition(
                "CREDENTIALS_UNREADABLE",
                f"the stored {slot.name} credentials of app {slot.app_id} do not open with the "
                "configured HERALD_CREDENTIALS_KEY; put them again",
                {"app_id": slot.app_id, "provider": slot.name},
            ) from None
        return Credential(
            slot=slot,
            kind=fields[b"kind"].decode(),
            secret=secret,
            public=json.loads(fields[b"public"]),
            version=int(fields[b"version"]),
            create_time=float(fields[b"create_time"]),
            update_time=float(fields[b"update_time"]),
            last_error=fields.get(b"last_error", b"").decode(),
            last_error_time=float(fields.get(b"last_error_time", b"0")),
            circuit_until=float(fields.get(b"circuit_until", b"0")),
        )
