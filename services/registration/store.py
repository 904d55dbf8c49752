"""Redis access for Registration. Every key is described in docs/keys/registration.md.

The device record (one field of its shard's hash) is the source of truth. The token
index, the user index and the user log live in other slots; they are written so that
a crash between two writes leaves at worst a stale index entry, which readers verify
against the record and ignore. Every index value starts with a claim stamp (state,
claim time, nonce), so that a reader removes only an entry that is older than
STALE_AFTER_MS and still exactly the value it read (compare-and-delete), and a writer
releases only the very entry it saw before its record write.
"""

from __future__ import annotations

import asyncio
import functools
import os
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster

from services.core.redis import RedisClient, hash_tag, load_script, shard_of
from services.core.script_batches import run_scripts
from services.registration.compact import (
    UUID_LOWER,
    UUID_UPPER,
    pack_device_id,
    unpack_device_id,
    unpack_device_id_bytes,
)

SCRIPTS = "services.registration.scripts"

# Fixed per deployment: changing it moves every device to another key. 256 keeps a
# shard near 4,000 devices for a 1M-device app (40,000 at 10M: still a small key),
# spreads one app over every node of a cluster, and lets a 5,000-device import message
# land as ~20 devices per shard, so one script call per shard writes a whole batch.
# (Records are longer than the 64 bytes a compact listpack/ziplist hash allows under
# Redis' default hash-max-listpack-value, so device shards are hash tables whatever
# their size.)
DEVICE_SHARDS = 256
# The token index: 256 hash tags (slots) of 64 parts each, 16,384 hashes per app. Its
# values (claim stamp + compact device id) fit the default hash-max-listpack-value (64
# bytes), so a part stays a compact listpack (ziplist on Redis 6) while it has at most
# hash-max-listpack-entries (default 512) entries: ~61 per part at 1M devices, ~50
# bytes per token instead of ~105 in a hash table; past ~6M devices in one app parts
# turn into hash tables one by one (same behaviour, today's memory). The parts of one
# tag share a slot, so one script call still covers all of a message's tokens of that
# tag: as many calls per import message as with 256 single hashes.
TOKEN_GROUPS = 256
TOKEN_PARTS = 64
USER_LOG_CAP = 1000
APPS_KEY = "reg:apps"

# A write takes milliseconds between "index made ready" and "record written" (and a
# call is cut at its deadline long before a minute); an index entry younger than this
# may belong to a write still in flight, so readers never remove it.
STALE_AFTER_MS = 60_000
STAMP_BYTES = 10  # u8 state, u48 claim time (ms), 3 random bytes
PENDING, CONFIRMED = 0, 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def stamp(state: int = PENDING, at_ms: int | None = None) -> bytes:
    """A fresh claim stamp: two claims never produce the same value (the nonce), so a
    compare-and-delete of a value read earlier cannot remove a newer claim."""
    at = now_ms() if at_ms is None else at_ms
    return bytes([state]) + at.to_bytes(6, "big") + os.urandom(3)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One index value: its claim stamp and (token index only) the device it names."""

    raw: bytes
    device_id: str
    claim_ms: int
    confirmed: bool

    @classmethod
    def parse(cls, raw: bytes | str | None) -> IndexEntry | None:
        data = _as_bytes(raw)
        if not data:
            return None
        return cls(
            data,
            unpack_device_id(data[STAMP_BYTES:]),
            int.from_bytes(data[1:7], "big"),
            data[0] == CONFIRMED,
        )

    def stale(self, now: int) -> bool:
        return now - self.claim_ms > STALE_AFTER_MS

    def confirmed_form(self) -> bytes:
        return bytes([CONFIRMED]) + self.raw[1:]


def token_value(device_id: str, state: int = PENDING) -> bytes:
    """A token index value: claim stamp, then the device's compact id (compact.py)."""
    return stamp(state) + pack_device_id(device_id)


def pending_token_values(device_ids: Sequence[str]) -> list[bytes]:
    """token_value(device_id) of many devices at once (imports): one clock read and one
    call for the random bytes of all their stamps."""
    head = bytes([PENDING]) + now_ms().to_bytes(6, "big")
    nonces = os.urandom(3 * len(device_ids))
    return [
        head + nonces[3 * i : 3 * i + 3] + pack_device_id(device_id)
        for i, device_id in enumerate(device_ids)
    ]


def device_shard(device_id: str) -> int:
    return shard_of(device_id, DEVICE_SHARDS)


def devices_key(app_id: str, shard: int) -> str:
    return f"reg:{hash_tag(f'{app_id}:{shard}')}:dev"


# A device's field in its shard hash: its compact id (compact.py). An alias, not a
# wrapper: imports compute it several times for each of their devices.
device_field = pack_device_id


def device_id_bytes(field: bytes) -> bytes:
    """The UTF-8 device id of a device hash field (compact.py)."""
    return unpack_device_id_bytes(field)


def token_group(digest: bytes) -> int:
    return int.from_bytes(digest[12:14], "big") % TOKEN_GROUPS


def token_key(app_id: str, digest: bytes) -> bytes:
    return token_part_key(app_id, token_group(digest), digest[14] % TOKEN_PARTS)


@functools.lru_cache(maxsize=4 * TOKEN_GROUPS * TOKEN_PARTS)
def token_part_key(app_id: str, group: int, part: int) -> bytes:
    # Memoised, and bytes (what redis-py sends as is): imports name ~5,000 of these
    # per message (16,384 per app in all), one key argument each.
    return f"reg:{hash_tag(f'tok:{app_id}:{group}')}:idx:{part}".encode()


def token_field(digest: bytes) -> bytes:
    return digest[:12]


def user_devices_key(user_id: str) -> str:
    return f"reg:{hash_tag('u:' + user_id)}:dev"


def user_log_key(user_id: str) -> str:
    return f"reg:{hash_tag('u:' + user_id)}:log"


def user_member(app_id: str, device_id: str) -> bytes:
    return f"{app_id}\n{device_id}".encode()


def split_user_member(member: bytes) -> tuple[str, str]:
    app_id, _, device_id = member.decode().partition("\n")
    return app_id, device_id


def packed_items(items: Iterable[bytes | str]) -> bytes:
    """The one argument of the batch scripts: each item as a u32 big-endian length and
    its bytes. redis-py encodes every argument of a command on its own, in Python; one
    argument for a whole shard's batch instead of three per device is what keeps an
    import message's script calls cheap to send."""
    parts = []
    for item in items:
        raw = item.encode() if isinstance(item, str) else item
        parts.append(len(raw).to_bytes(4, "big"))
        parts.append(raw)
    return b"".join(parts)


# A key number as packed_items packs it (u32 length 1, the number): batch items are
# packed as they are added, with these prebuilt, since imports add ~15,000 per message.
_KEY_NUMBERS = [b"\x00\x00\x00\x01" + bytes([n]) for n in range(256)]
_U32 = struct.Struct(">I").pack


class _Batch:
    """The argument of one batch script call (compare_and_set.lua, token_claim_free.lua):
    the keys of one slot, numbered, and the items (packed_items' form), each led by its
    key's number."""

    __slots__ = ("keys", "numbers", "packed", "positions")

    def __init__(self) -> None:
        self.keys: list[str | bytes] = []
        self.numbers: dict[str | bytes, bytes] = {}
        self.packed = bytearray()
        self.positions: list[int] = []

    def number(self, key: str | bytes, position: int) -> bytes:
        """The key's number (packed), the item at `position` of the caller's list."""
        number = self.numbers.get(key)
        if number is None:
            self.keys.append(key)
            number = self.numbers[key] = _KEY_NUMBERS[len(self.keys)]
        self.positions.append(position)
        return number

    def add(self, key: str | bytes, position: int, first: bytes, second: bytes) -> None:
        packed = self.packed
        packed += self.number(key, position)
        packed += _U32(len(first))
        packed += first
        packed += _U32(len(second))
        packed += second

    def add3(
        self, key: str | bytes, position: int, first: bytes, second: bytes, third: bytes
    ) -> None:
        self.add(key, position, first, second)
        packed = self.packed
        packed += _U32(len(third))
        packed += third


def _as_bytes(raw: bytes | str | None) -> bytes | None:
    return raw.encode() if isinstance(raw, str) else raw


def _text(raw: bytes | str | None) -> str:
    if not raw:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


class RegistrationStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._cas = load_script(redis, SCRIPTS, "compare_and_set.lua")
        self._flush = load_script(redis, SCRIPTS, "flush_device.lua")
        self._claim = load_script(redis, SCRIPTS, "token_claim.lua")
        self._claim_free = load_script(redis, SCRIPTS, "token_claim_free.lua")
        self._known_apps: set[str] = set()

    async def _batches(self, script: Any, batches: Iterable[_Batch]) -> set[int]:
        """Runs one call of a batch script per batch, in one round trip
        (services/core/script_batches.py); returns the positions of the items the
        scripts answered with (conflicts, contested tokens)."""
        batches = list(batches)
        if not batches:
            return set()
        results = await run_scripts(
            self.redis, [(script, b.keys, [bytes(b.packed)]) for b in batches]
        )
        found: set[int] = set()
        for batch, numbers in zip(batches, results, strict=True):
            found.update(batch.positions[number - 1] for number in numbers)
        return found

    # -- device records -------------------------------------------------------------

    async def get(self, app_id: str, device_id: str) -> bytes | None:
        raw = await self.redis.hget(
            devices_key(app_id, device_shard(device_id)), device_field(device_id)
        )
        return _as_bytes(raw)

    async def flush(
        self, app_id: str, device_id: str, arguments: Sequence[bytes | str | int]
    ) -> tuple[bytes | None, bytes | None]:
        """The one-round-trip flush (scripts/flush_device.lua, arguments from
        record.flush_arguments): (the record written, None) when the stored record
        already said what the call says, else (None, the stored record or None)."""
        wrote, raw = await self._flush(
            keys=[devices_key(app_id, device_shard(device_id))],
            args=[device_field(device_id), *arguments],
        )
        data = _as_bytes(raw) or None
        return (data, None) if wrote else (None, data)

    async def get_many(self, app_id: str, device_ids: Sequence[str]) -> list[bytes | None]:
        """Records of several devices of one app, in the order asked (None if absent)."""
        by_shard: dict[int, list[int]] = {}
        for position, device_id in enumerate(device_ids):
            by_shard.setdefault(device_shard(device_id), []).append(position)
        found: list[bytes | None] = [None] * len(device_ids)
        pipe = self.redis.pipeline(transaction=False)
        for shard, positions in by_shard.items():
            pipe.hmget(devices_key(app_id, shard), [device_field(device_ids[p]) for p in positions])
        for positions, values in zip(by_shard.values(), await pipe.execute(), strict=True):
            for position, value in zip(positions, values, strict=True):
                found[position] = value
        return found

    async def compare_and_set(
        self, app_id: str, device_id: str, expected: bytes | None, new: bytes | None
    ) -> bool:
        """Writes `new` (None deletes) if the stored record is still `expected`."""
        conflicts = await self._cas(
            keys=[devices_key(app_id, device_shard(device_id))],
            args=[packed_items((b"\x01", device_field(device_id), expected or b"", new or b""))],
        )
        return not conflicts

    async def compare_and_set_many(
        self, app_id: str, changes: Sequence[tuple[str, bytes | None, bytes]]
    ) -> list[int]:
        """Batch form for imports: one script call per shard, pipelined. Returns the
        positions (in `changes`) that conflicted with a concurrent write."""
        by_shard: dict[int, tuple[str, _Batch]] = {}
        for position, (device_id, expected, new) in enumerate(changes):
            shard = device_shard(device_id)
            found = by_shard.get(shard)
            if found is None:
                found = by_shard[shard] = (devices_key(app_id, shard), _Batch())
            key, batch = found
            batch.add3(key, position, device_field(device_id), expected or b"", new)
        return sorted(await self._batches(self._cas, (b for _, b in by_shard.values())))

    async def shard_sizes(self, app_ids: Sequence[str]) -> dict[str, list[int]]:
        """Devices per shard of each app (HLEN, pipelined: 256 cheap commands per app)."""
        pipe = self.redis.pipeline(transaction=False)
        for app_id in app_ids:
            for shard in range(DEVICE_SHARDS):
                pipe.hlen(devices_key(app_id, shard))
        sizes = [int(n) for n in await pipe.execute()]
        return {
            app_id: sizes[i * DEVICE_SHARDS : (i + 1) * DEVICE_SHARDS]
            for i, app_id in enumerate(app_ids)
        }

    async def shard_records(
        self, app_ids_and_shards: Sequence[tuple[str, int]]
    ) -> list[dict[bytes, bytes]]:
        """The whole device hash of each (app, shard), pipelined: {UTF-8 device id: record}."""
        pipe = self.redis.pipeline(transaction=False)
        for app_id, shard in app_ids_and_shards:
            pipe.hgetall(devices_key(app_id, shard))
        return [
            # Only compact fields are decoded (a tag byte first): audiences read
            # every device of an app through here.
            {
                (
                    unpack_device_id_bytes(field) if UUID_LOWER <= field[0] <= UUID_UPPER else field
                ): value
                for field, value in content.items()
            }
            for content in await pipe.execute()
        ]

    async def shard_device_ids(self, app_id: str, shards: Sequence[int]) -> list[list[bytes]]:
        """The device ids of some shards of an app (ListDevices pages shard by shard, so
        it never holds more than a few shards' ids)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in shards:
            pipe.hkeys(devices_key(app_id, shard))
        return [[device_id_bytes(field) for field in fields] for fields in await pipe.execute()]

    # -- apps with devices ----------------------------------------------------------

    async def remember_app(self, app_id: str) -> None:
        """Adds the app to the set "every app" audiences iterate (once per process)."""
        if app_id not in self._known_apps:
            await self.redis.sadd(APPS_KEY, app_id)
            self._known_apps.add(app_id)

    async def apps_with_devices(self) -> list[str]:
        members = await self.redis.smembers(APPS_KEY)
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def purge_app(self, app_id: str) -> int:
        """Deletes every device record and token index part of an app and forgets the
        app; returns how many devices there were. Each command's keys share a slot (a
        device shard, or the parts of one token tag). User index members and user log entries of the purged
        devices stay until a reader finds them stale (their record is gone)."""
        self._known_apps.discard(app_id)
        await self.redis.srem(APPS_KEY, app_id)
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(DEVICE_SHARDS):
            pipe.hlen(devices_key(app_id, shard))
        count = sum(await pipe.execute())
        # One UNLINK per slot: a device shard, or the 64 token index parts of one tag.
        unlinks: list[list[str | bytes]] = [[devices_key(app_id, s)] for s in range(DEVICE_SHARDS)]
        unlinks += [
            [token_part_key(app_id, group, part) for part in range(TOKEN_PARTS)]
            for group in range(TOKEN_GROUPS)
        ]
        if isinstance(self.redis, RedisCluster):
            # A cluster pipeline cannot queue UNLINK; each command's keys share a slot.
            for start in range(0, len(unlinks), 64):
                await asyncio.gather(*(self.redis.unlink(*k) for k in unlinks[start : start + 64]))
        else:
            pipe = self.redis.pipeline(transaction=False)
            for keys in unlinks:
                pipe.unlink(*keys)
            await pipe.execute()
        return int(count)

    # -- token index ----------------------------------------------------------------

    async def token_entry(self, app_id: str, digest: bytes) -> IndexEntry | None:
        return IndexEntry.parse(
            await self.redis.hget(token_key(app_id, digest), token_field(digest))
        )

    async def claim_token(
        self, app_id: str, digest: bytes, expected: bytes, new: bytes
    ) -> tuple[bool, IndexEntry | None]:
        """Sets the entry to `new` if it is still exactly `expected` (b"" = absent).

        Returns (claimed, the entry found instead when not claimed)."""
        result = await self._claim(
            keys=[token_key(app_id, digest)], args=[token_field(digest), expected, new]
        )
        if result == 1:
            return True, None
        return False, IndexEntry.parse(result)

    async def claim_free_tokens(
        self, app_id: str, claims: Sequence[tuple[bytes, bytes]]
    ) -> set[int]:
        """Import form of claim_token: each (digest, value) goes to its device unless
        another device holds the token. One script call per token shard, pipelined.
        Returns the positions (in `claims`) of the contested tokens."""
        by_group: defaultdict[int, _Batch] = defaultdict(_Batch)
        for position, (digest, value) in enumerate(claims):
            group = token_group(digest)
            key = token_part_key(app_id, group, digest[14] % TOKEN_PARTS)
            by_group[group].add(key, position, token_field(digest), value)
        return await self._batches(self._claim_free, by_group.values())

    async def set_token_entries(
        self, app_id: str, changes: Sequence[tuple[bytes, bytes, bytes]]
    ) -> set[int]:
        """Compare-and-set of token index entries: (digest, expected, new or b"" to
        delete). Confirms claims and releases tokens; pipelined, one script call per
        token shard. Returns the positions that did not apply (the entry changed)."""
        by_group: defaultdict[int, _Batch] = defaultdict(_Batch)
        for position, (digest, expected, new) in enumerate(changes):
            group = token_group(digest)
            key = token_part_key(app_id, group, digest[14] % TOKEN_PARTS)
            by_group[group].add3(key, position, token_field(digest), expected, new)
        return await self._batches(self._cas, by_group.values())

    async def release_values(
        self, app_id: str, device_id: str, digest: bytes | None, user_id: str
    ) -> tuple[IndexEntry | None, IndexEntry | None]:
        """The token index entry (if it names this device) and the user index entry that
        a write is about to make stale, read before the record write: after it, only
        these exact values are deleted, so a claim made meanwhile survives."""
        pipe = self.redis.pipeline(transaction=False)
        if digest is not None:
            pipe.hget(token_key(app_id, digest), token_field(digest))
        if user_id:
            pipe.hget(user_devices_key(user_id), user_member(app_id, device_id))
        found = list(await pipe.execute()) if digest is not None or user_id else []
        token_entry = IndexEntry.parse(found.pop(0)) if digest is not None else None
        if token_entry is not None and token_entry.device_id != device_id:
            token_entry = None
        user_entry = IndexEntry.parse(found.pop(0)) if user_id else None
        return token_entry, user_entry

    # -- user index and user log ----------------------------------------------------

    async def add_user_device(self, user_id: str, app_id: str, device_id: str) -> None:
        await self.add_user_devices([(user_id, app_id, device_id)])

    async def add_user_devices(self, members: Iterable[tuple[str, str, str]]) -> None:
        """Each member gets a fresh stamp (a re-add changes the value on purpose)."""
        pipe = self.redis.pipeline(transaction=False)
        queued = False
        for user_id, app_id, device_id in members:
            pipe.hset(user_devices_key(user_id), user_member(app_id, device_id), stamp())
            queued = True
        if queued:
            await pipe.execute()

    async def remove_user_entries(self, entries: Sequence[tuple[str, bytes, bytes]]) -> None:
        """Compare-and-delete of user index members: (user_id, member, value read)."""
        by_user: defaultdict[str, _Batch] = defaultdict(_Batch)
        for position, (user_id, member, value) in enumerate(entries):
            key = user_devices_key(user_id)
            by_user[key].add3(key, position, member, value, b"")
        await self._batches(self._cas, by_user.values())

    async def user_devices(self, user_id: str) -> list[tuple[str, str, IndexEntry]]:
        """(app, device, entry) of every member of the user's index."""
        return _user_members(await self.redis.hgetall(user_devices_key(user_id)))

    async def users_devices(
        self, user_ids: Sequence[str]
    ) -> list[list[tuple[str, str, IndexEntry]]]:
        """user_devices of several users, pipelined."""
        pipe = self.redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hgetall(user_devices_key(user_id))
        return [_user_members(members) for members in await pipe.execute()]

    async def append_user_logs(self, entries: Sequence[tuple[str, bytes]]) -> None:
        """LPUSH + LTRIM per user (one key each, so one MULTI per user is cluster-safe)."""
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        for user_id, packed in entries:
            key = user_log_key(user_id)
            pipe.lpush(key, packed)
            pipe.ltrim(key, 0, USER_LOG_CAP - 1)
        await pipe.execute()

    async def user_log(self, user_id: str) -> list[bytes]:
        """The user's log, newest first (capped at USER_LOG_CAP entries)."""
        entries = await self.redis.lrange(user_log_key(user_id), 0, -1)
        return [_as_bytes(e) or b"" for e in entries]


def _user_members(members: dict) -> list[tuple[str, str, IndexEntry]]:
    """(app, device, entry) of a user index hash's members."""
    found = []
    for member, value in members.items():
        entry = IndexEntry.parse(value)
        if entry is not None:
            app_id, device_id = split_user_member(_as_bytes(member) or b"")
            found.append((app_id, device_id, entry))
    return found
