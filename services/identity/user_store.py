"""Redis access for users, their shard indexes and the e-mail / phone reservations.

A user record and the shard index listing it share the hash tag `{users:<shard>}`, so
creating or deleting a user is one script. E-mail and phone reservations are single
keys elsewhere; each holds "<external id>|<reserved at, us>" and is only a hint: the
user record is the source of truth (see users.py for how stale ones are repaired).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.core.redis import RedisClient, load_script
from services.core.script_batches import run_scripts
from services.identity import attributes, keys
from services.identity.user_model import User

SCRIPTS = "services.identity.scripts"


class Unique(enum.Enum):
    EMAIL = "email"
    PHONE = "phone"


@dataclass(frozen=True)
class Reservation:
    owner: str
    reserved_us: int

    def encoded(self) -> str:
        return f"{self.owner}|{self.reserved_us}"


def _text(raw: Any) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _reservation(raw: Any) -> Reservation | None:
    if raw is None:
        return None
    owner, _, reserved = _text(raw).rpartition("|")
    return Reservation(owner, int(reserved or 0))


def _reservation_key(kind: Unique, value: str) -> str:
    return keys.email_owner(value) if kind is Unique.EMAIL else keys.phone_owner(value)


# The fields of a user record (see _fields_of) by the User attribute they hold. Batch
# reads HMGET only the fields a read mask needs (plus the version, which every record
# has): a plain list answer, and few arguments, since redis-py encodes each in Python.
# Listed in the order of the User message's field numbers, which user_wire.py writes in.
RECORD_FIELD_OF = {
    "email": "e",
    "phone": "p",
    "attributes": "a",
    "time_zone": "tz",
    "locale": "lc",
    "create_us": "ct",
    "update_us": "ut",
}
VERSION_FIELD = "v"


def _user_from_values(external_id: str, wanted: Sequence[str], values: Sequence[Any]) -> User:
    """A user from HMGET of the fields of `wanted` (then the version) of a record that
    exists; fields not wanted keep their defaults."""
    found: dict[str, Any] = {"version": int(values[-1])}
    for name, value in zip(wanted, values, strict=False):
        if value is None:
            continue
        if name == "attributes":
            found[name] = attributes.deserialise(_text(value))
        elif name in ("create_us", "update_us"):
            found[name] = int(value)
        else:
            found[name] = _text(value)
    return User(external_id=external_id, **found)


def _user_from(external_id: str, raw: Mapping[Any, Any]) -> User:
    fields = {_text(key): _text(value) for key, value in raw.items()}
    return User(
        external_id=external_id,
        email=fields.get("e", ""),
        phone=fields.get("p", ""),
        attributes=attributes.deserialise(fields.get("a", "")),
        time_zone=fields.get("tz", ""),
        locale=fields.get("lc", ""),
        create_us=int(fields.get("ct") or 0),
        update_us=int(fields.get("ut") or 0),
        version=int(fields.get("v") or 0),
    )


def _fields_of(user: User) -> list[str | int]:
    # Empty fields are left out: most users have few, and 1M records add up.
    fields: dict[str, str | int] = {"ct": user.create_us, "ut": user.update_us}
    for name, value in (
        ("e", user.email),
        ("p", user.phone),
        ("tz", user.time_zone),
        ("lc", user.locale),
        ("a", attributes.serialise(user.attributes) if user.attributes else ""),
    ):
        if value:
            fields[name] = value
    return [item for pair in fields.items() for item in pair]


class UserStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._write = load_script(redis, SCRIPTS, "write_user.lua")
        self._delete = load_script(redis, SCRIPTS, "delete_user.lua")
        self._compare_and_set = load_script(redis, SCRIPTS, "compare_and_set.lua")
        self._compare_and_delete = load_script(redis, SCRIPTS, "compare_and_delete.lua")
        self._read_users = load_script(redis, SCRIPTS, "read_users.lua")

    async def get(self, external_id: str) -> User | None:
        raw = await self.redis.hgetall(keys.user(external_id))
        return _user_from(external_id, raw) if raw else None

    async def get_many(
        self, external_ids: Sequence[str], wanted: Sequence[str] = tuple(RECORD_FIELD_OF)
    ) -> list[User | None]:
        """Users in request order (None where missing), in one round trip.

        Only the User attributes in `wanted` are read (names of RECORD_FIELD_OF); the
        others keep their defaults."""
        records = await self.read_records(external_ids, wanted)
        return [
            None if values is None else _user_from_values(external_id, wanted, values)
            for external_id, values in zip(external_ids, records, strict=True)
        ]

    async def read_records(
        self, external_ids: Sequence[str], wanted: Sequence[str]
    ) -> list[list[bytes | None] | None]:
        """The stored values of the fields of `wanted` (names of RECORD_FIELD_OF) of each
        user, as Redis returns them, then the version; None where the user does not
        exist. In request order, in one round trip.

        BatchGetUsers encodes these values straight into its answer (user_wire.py),
        so their format is the record's: see `_fields_of`."""
        if not external_ids:
            return []
        fields = [RECORD_FIELD_OF[name] for name in wanted] + [VERSION_FIELD]
        # One script call per user shard (its records share a slot) rather than one
        # command per user: redis-py's cost is per command and per reply.
        by_shard: dict[int, tuple[list[int], list[bytes]]] = {}
        for position, external_id in enumerate(external_ids):
            shard, key = keys.user_shard_and_key(external_id)
            group = by_shard.get(shard)
            if group is None:
                group = by_shard[shard] = ([], [])
            group[0].append(position)
            group[1].append(key)
        groups = list(by_shard.values())
        answers = await run_scripts(
            self.redis, [(self._read_users, shard_keys, fields) for _, shard_keys in groups]
        )
        found: list[list[bytes | None] | None] = [None] * len(external_ids)
        for (positions, _), shard_answers in zip(groups, answers, strict=True):
            for position, values in zip(positions, shard_answers, strict=True):
                if values[-1] is not None:  # every write sets the version (write_user.lua)
                    found[position] = values
        return found

    async def write(self, user: User, expected_version: int) -> int:
        """Writes the whole record if it is still at `expected_version` (0 = absent).

        Returns the new version, or 0 when someone else wrote it meanwhile."""
        answer = await self._write(
            keys=[keys.user(user.external_id), keys.user_index(keys.user_shard(user.external_id))],
            args=[user.external_id, expected_version, *_fields_of(user)],
        )
        return int(answer)

    async def delete(self, external_id: str) -> bool:
        answer = await self._delete(
            keys=[keys.user(external_id), keys.user_index(keys.user_shard(external_id))],
            args=[external_id],
        )
        return bool(answer)

    async def ids_in_shard(self, shard: int, after: str, limit: int) -> list[str]:
        start = f"({after}" if after else "-"
        raw = await self.redis.zrangebylex(keys.user_index(shard), start, "+", 0, limit)
        return [_text(member) for member in raw]

    async def ids_in_every_shard(self, after: str, limit: int) -> list[list[str]]:
        """The next `limit` ids after `after` of each shard (one pipelined round trip)."""
        start = f"({after}" if after else "-"
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in range(keys.USER_SHARDS):
                pipe.zrangebylex(keys.user_index(shard), start, "+", 0, limit)
            answers = await pipe.execute()
        return [[_text(member) for member in members] for members in answers]

    # --- e-mail and phone reservations ----------------------------------------------

    async def reservation(self, kind: Unique, value: str) -> Reservation | None:
        return _reservation(await self.redis.get(_reservation_key(kind, value)))

    async def reserve(self, kind: Unique, value: str, claim: Reservation) -> Reservation | None:
        """Reserves `value` for the claim (SET NX); returns the holder if it is taken."""
        key = _reservation_key(kind, value)
        if await self.redis.set(key, claim.encoded(), nx=True):
            return None
        holder = _reservation(await self.redis.get(key))
        # Released between our SET NX and GET: one more try settles it.
        if holder is None and await self.redis.set(key, claim.encoded(), nx=True):
            return None
        return holder or Reservation("", 0)

    async def take_over(
        self, kind: Unique, value: str, stale: Reservation, claim: Reservation
    ) -> bool:
        answer = await self._compare_and_set(
            keys=[_reservation_key(kind, value)], args=[stale.encoded(), claim.encoded()]
        )
        return bool(answer)

    async def release(self, kind: Unique, value: str, held: Reservation) -> None:
        await self._compare_and_delete(keys=[_reservation_key(kind, value)], args=[held.encoded()])
