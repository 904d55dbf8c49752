"""Redis access for Registration. Every key is described in docs/keys/registration.md.

The device record (one field of its shard's hash) is the source of truth. The token
index, the user index and the user log live in other slots; they are written so that
a crash between two writes leaves at worst a stale index entry, which readers verify
against the record and ignore (and remove when they meet it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from services.core.redis import RedisClient, hash_tag, load_script, shard_of

SCRIPTS = "services.registration.scripts"

# Fixed per deployment: changing it moves every device to another key. 256 keeps a
# shard near 4,000 devices for a 1M-device app (40,000 at 10M: still a small key),
# spreads one app over every node of a cluster, and lets a 5,000-device import message
# land as ~20 devices per shard, so one script call per shard writes a whole batch.
DEVICE_SHARDS = 256
TOKEN_SHARDS = 256
USER_LOG_CAP = 1000
APPS_KEY = "reg:apps"


def device_shard(device_id: str) -> int:
    return shard_of(device_id, DEVICE_SHARDS)


def devices_key(app_id: str, shard: int) -> str:
    return f"reg:{hash_tag(f'{app_id}:{shard}')}:dev"


def token_key(app_id: str, digest: bytes) -> str:
    shard = int.from_bytes(digest[12:14], "big") % TOKEN_SHARDS
    return f"reg:{hash_tag(f'tok:{app_id}:{shard}')}:idx"


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


def _as_bytes(raw: bytes | str | None) -> bytes | None:
    return raw.encode() if isinstance(raw, str) else raw


def _text(raw: bytes | str | None) -> str:
    if not raw:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


class RegistrationStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._cas = load_script(redis, SCRIPTS, "cas_devices.lua")
        self._claim = load_script(redis, SCRIPTS, "token_claim.lua")
        self._release = load_script(redis, SCRIPTS, "token_release.lua")
        self._claim_free = load_script(redis, SCRIPTS, "token_claim_free.lua")
        self._known_apps: set[str] = set()

    # -- device records -------------------------------------------------------------

    async def get(self, app_id: str, device_id: str) -> bytes | None:
        raw = await self.redis.hget(devices_key(app_id, device_shard(device_id)), device_id)
        return _as_bytes(raw)

    async def get_many(self, app_id: str, device_ids: Sequence[str]) -> list[bytes | None]:
        """Records of several devices of one app, in the order asked (None if absent)."""
        by_shard: dict[int, list[int]] = {}
        for position, device_id in enumerate(device_ids):
            by_shard.setdefault(device_shard(device_id), []).append(position)
        found: list[bytes | None] = [None] * len(device_ids)
        pipe = self.redis.pipeline(transaction=False)
        for shard, positions in by_shard.items():
            pipe.hmget(devices_key(app_id, shard), [device_ids[p] for p in positions])
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
            args=[device_id, expected or b"", new or b""],
        )
        return not conflicts

    async def compare_and_set_many(
        self, app_id: str, changes: Sequence[tuple[str, bytes | None, bytes]]
    ) -> list[int]:
        """Batch form for imports: one script call per shard, pipelined. Returns the
        positions (in `changes`) that conflicted with a concurrent write."""
        by_shard: dict[int, list[int]] = {}
        for position, (device_id, _, _) in enumerate(changes):
            by_shard.setdefault(device_shard(device_id), []).append(position)
        pipe = self.redis.pipeline(transaction=False)
        for shard, positions in by_shard.items():
            args: list[Any] = []
            for position in positions:
                device_id, expected, new = changes[position]
                args += [device_id, expected or b"", new]
            await self._cas(keys=[devices_key(app_id, shard)], args=args, client=pipe)  # type: ignore[arg-type]
        conflicted: list[int] = []
        for positions, result in zip(by_shard.values(), await pipe.execute(), strict=True):
            conflicted += [positions[number - 1] for number in result]
        return conflicted

    async def shard_records(self, app_ids_and_shards: Sequence[tuple[str, int]]) -> list[dict]:
        """The whole device hash of each (app, shard), pipelined."""
        pipe = self.redis.pipeline(transaction=False)
        for app_id, shard in app_ids_and_shards:
            pipe.hgetall(devices_key(app_id, shard))
        result: list[dict] = await pipe.execute()
        return result

    async def shard_device_ids(self, app_id: str) -> list[list[bytes]]:
        """The device ids of every shard of an app (for ListDevices' global order)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(DEVICE_SHARDS):
            pipe.hkeys(devices_key(app_id, shard))
        result: list[list[bytes]] = await pipe.execute()
        return result

    # -- apps with devices ----------------------------------------------------------

    async def remember_app(self, app_id: str) -> None:
        """Adds the app to the set "every app" audiences iterate (once per process)."""
        if app_id not in self._known_apps:
            await self.redis.sadd(APPS_KEY, app_id)
            self._known_apps.add(app_id)

    async def apps_with_devices(self) -> list[str]:
        members = await self.redis.smembers(APPS_KEY)
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    # -- token index ----------------------------------------------------------------

    async def token_owner(self, app_id: str, digest: bytes) -> str:
        return _text(await self.redis.hget(token_key(app_id, digest), token_field(digest)))

    async def claim_token(
        self, app_id: str, digest: bytes, expected: str, device_id: str
    ) -> tuple[bool, str]:
        """Points the token at `device_id` if its owner is still `expected` ("" = none).

        Returns (claimed, the owner found instead when not claimed)."""
        result = await self._claim(
            keys=[token_key(app_id, digest)], args=[token_field(digest), expected, device_id]
        )
        if result == 1:
            return True, ""
        return False, result.decode() if isinstance(result, bytes) else str(result)

    async def claim_free_tokens(self, app_id: str, claims: Sequence[tuple[bytes, str]]) -> set[int]:
        """Import form of claim_token: each token goes to its device unless another device
        holds it. One script call per token shard, pipelined. Returns the positions (in
        `claims`) of the contested tokens."""
        by_key: dict[str, list[int]] = {}
        for position, (digest, _) in enumerate(claims):
            by_key.setdefault(token_key(app_id, digest), []).append(position)
        pipe = self.redis.pipeline(transaction=False)
        for key, positions in by_key.items():
            args: list[Any] = []
            for position in positions:
                digest, device_id = claims[position]
                args += [token_field(digest), device_id]
            await self._claim_free(keys=[key], args=args, client=pipe)  # type: ignore[arg-type]
        contested: set[int] = set()
        for positions, result in zip(by_key.values(), await pipe.execute(), strict=True):
            contested.update(positions[number - 1] for number in result)
        return contested

    async def release_token(self, app_id: str, digest: bytes, device_id: str) -> None:
        await self._release(keys=[token_key(app_id, digest)], args=[token_field(digest), device_id])

    # -- user index and user log ----------------------------------------------------

    async def add_user_device(self, user_id: str, app_id: str, device_id: str) -> None:
        await self.redis.sadd(user_devices_key(user_id), user_member(app_id, device_id))

    async def add_user_devices(self, members: Iterable[tuple[str, str, str]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for user_id, app_id, device_id in members:
            pipe.sadd(user_devices_key(user_id), user_member(app_id, device_id))
        await pipe.execute()

    async def remove_user_device(self, user_id: str, app_id: str, device_id: str) -> None:
        await self.redis.srem(user_devices_key(user_id), user_member(app_id, device_id))

    async def user_devices(self, user_id: str) -> list[tuple[str, str]]:
        members = await self.redis.smembers(user_devices_key(user_id))
        return [split_user_member(_as_bytes(m) or b"") for m in members]

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
