"""Credentials in Redis, sealed. docs/keys/delivery.md lists the keys.

Every key of one app carries the hash tag `{<app_id>}`, so the Lua scripts that touch a
slot, the app's slot index and its version counter run on one Cluster slot.

The expiry index (`dlv:credexp`, every app's credentials that expire: APNs certificates)
spans apps, so it cannot share their slots and is written in separate steps around the
scripts. It is only a list of where to look: `expiring()` reads each listed credential's
own expire time and prunes members whose credential is gone or no longer expires. So a
member may be stale for a moment (harmless: it is checked) but must never be missing;
hence a put adds it before its script (a crash after the script still leaves it
listed) and again after (a prune running meanwhile may have removed the first), and a
prune looks again after removing (a put that landed meanwhile is put back).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.core.errors import FailedPrecondition
from services.core.redis import RedisClient, hash_tag, load_script
from services.delivery.credentials import Credential, NewCredential, Slot, expire_time
from services.delivery.queue_store import execute
from services.delivery.sealing import Sealer, SealError, slot_aad

SCRIPTS = "services.delivery.scripts"
# Members `<app_id>|<slot name>`, scored by expire time (epoch s): public metadata only.
EXPIRY_INDEX = "dlv:credexp"


def slot_key(slot: Slot) -> str:
    return f"dlv:cred:{hash_tag(slot.app_id)}:{slot.name}"


def index_key(app_id: str) -> str:
    return f"dlv:creds:{hash_tag(app_id)}"


def version_key(app_id: str) -> str:
    return f"dlv:credver:{hash_tag(app_id)}"


def _slot_from_name(app_id: str, name: str) -> Slot:
    provider, _, environment = name.partition(":")
    return Slot(app_id, provider, environment)


def expiry_member(slot: Slot) -> str:
    return f"{slot.app_id}|{slot.name}"  # app ids never hold "|" (credentials.APP_ID_RE)


def _slot_from_member(member: str) -> Slot:
    app_id, _, name = member.partition("|")
    return _slot_from_name(app_id, name)


@dataclass(frozen=True)
class Expiry:
    slot: Slot
    expire_time: float  # epoch seconds


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
        expire = expire_time(new.public)
        if expire:
            await self._list_expiry(slot, expire)
        now = time.time()
        version, replaced, created = await self._put(
            keys=[slot_key(slot), index_key(slot.app_id), version_key(slot.app_id)],
            args=[slot.name, sealed, new.kind, json.dumps(new.public), repr(now)],
        )
        if expire:
            await self._list_expiry(slot, expire)
        else:  # a certificate replaced by a token key no longer expires
            await self.redis.zrem(EXPIRY_INDEX, expiry_member(slot))
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
        if removed:
            await self.redis.zrem(EXPIRY_INDEX, expiry_member(slot))
        return bool(removed)

    async def expiring(self) -> Sequence[Expiry]:
        """Every stored credential that expires, of every app: the index's members,
        each checked against its credential (one pipelined read); stale ones pruned."""
        members: list[Any] = await self.redis.zrange(EXPIRY_INDEX, 0, -1)
        slots = [_slot_from_member(m.decode()) for m in members]
        found = await self._expire_times(slots)
        stale = [slot for slot in slots if slot not in found]
        if stale:
            await self.redis.zrem(EXPIRY_INDEX, *(expiry_member(s) for s in stale))
            for slot, expire in (await self._expire_times(stale)).items():
                await self._list_expiry(slot, expire)  # put again meanwhile: keep it
                found[slot] = expire
        return [Expiry(slot, expire) for slot, expire in found.items()]

    async def _expire_times(self, slots: Sequence[Slot]) -> dict[Slot, float]:
        """The expire time each slot's stored credential has (absent: none, or no credential)."""
        if not slots:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for slot in slots:
            pipe.hget(slot_key(slot), "public")
        found: dict[Slot, float] = {}
        for slot, public in zip(slots, await execute(pipe), strict=True):
            expire = expire_time(json.loads(public)) if public else 0.0
            if expire:
                found[slot] = expire
        return found

    async def _list_expiry(self, slot: Slot, expire: float) -> None:
        await self.redis.zadd(EXPIRY_INDEX, {expiry_member(slot): expire})

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
