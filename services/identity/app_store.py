"""Redis access for apps, their client secret digests and their API keys.

Everything here lives under the `{apps}` hash tag (see keys.py), so each multi-key
change is one Lua script. Timestamps are integer microseconds.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.core.redis import RedisClient, load_script
from services.identity import keys
from services.identity.app_model import ApiKey, ApiKeyScope, App, AppSecrets, LogoutPolicy

SCRIPTS = "services.identity.scripts"

# Field names in the app hash: short, since every VerifyClientSecret reads three.
_NAME, _POLICY, _TIME_ZONE = "name", "policy", "tz"
_CREATE, _UPDATE, _SECRET_CREATE = "ct", "ut", "sct"
_SECRET, _PREVIOUS_SECRET, _PREVIOUS_EXPIRE = "sh", "psh", "pse"
_REQUEST_ID = "rid"


class CreateOutcome(enum.Enum):
    CREATED = "created"
    REPLAY = "replay"
    REQUEST_ID_MISMATCH = "mismatch"
    ALREADY_EXISTS = "exists"


@dataclass(frozen=True)
class NewApp:
    app: App
    secret_digest: str
    request_id: str
    request_fingerprint: str


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode() if isinstance(raw, bytes) else raw


def _int(raw: bytes | str | None) -> int:
    text = _text(raw)
    return int(text) if text else 0


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(key): _text(value) for key, value in raw.items()}


def _app_from(app_id: str, fields: dict[str, str]) -> App:
    return App(
        app_id=app_id,
        display_name=fields.get(_NAME, ""),
        logout_policy=LogoutPolicy(fields.get(_POLICY) or LogoutPolicy.UNREGISTER),
        default_time_zone=fields.get(_TIME_ZONE, "UTC"),
        create_us=_int(fields.get(_CREATE)),
        update_us=_int(fields.get(_UPDATE)),
        secret_create_us=_int(fields.get(_SECRET_CREATE)),
        previous_secret_expire_us=_int(fields.get(_PREVIOUS_EXPIRE)),
    )


class AppStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._create = load_script(redis, SCRIPTS, "create_app.lua")
        self._rotate = load_script(redis, SCRIPTS, "rotate_client_secret.lua")
        self._hset_if_exists = load_script(redis, SCRIPTS, "hset_if_exists.lua")
        self._delete = load_script(redis, SCRIPTS, "delete_app.lua")
        self._create_key = load_script(redis, SCRIPTS, "create_api_key.lua")

    # --- apps -----------------------------------------------------------------------

    async def create(self, new: NewApp) -> tuple[CreateOutcome, str]:
        app = new.app
        fields = {
            _NAME: app.display_name,
            _POLICY: app.logout_policy.value,
            _TIME_ZONE: app.default_time_zone,
            _CREATE: app.create_us,
            _UPDATE: app.update_us,
            _SECRET_CREATE: app.secret_create_us,
            _SECRET: new.secret_digest,
            _REQUEST_ID: new.request_id,
        }
        flat = [item for pair in fields.items() for item in pair]
        outcome, app_id = await self._create(
            keys=[keys.app(app.app_id), keys.app_index(), keys.create_app_request(new.request_id)],
            args=[app.app_id, new.request_fingerprint, *flat],
        )
        return CreateOutcome(_text(outcome)), _text(app_id)

    async def get(self, app_id: str) -> App | None:
        raw = await self.redis.hgetall(keys.app(app_id))
        return _app_from(app_id, _decode(raw)) if raw else None

    async def get_many(self, app_ids: Sequence[str]) -> dict[str, App]:
        """The apps that exist among `app_ids`, by id (one pipelined round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for app_id in app_ids:
                pipe.hgetall(keys.app(app_id))
            answers = await pipe.execute()
        return {
            app_id: _app_from(app_id, _decode(raw))
            for app_id, raw in zip(app_ids, answers, strict=True)
            if raw
        }

    async def secrets(self, app_id: str) -> AppSecrets | None:
        """The digests only: VerifyClientSecret's whole read is this one HMGET."""
        current, previous, expire = await self.redis.hmget(
            keys.app(app_id), [_SECRET, _PREVIOUS_SECRET, _PREVIOUS_EXPIRE]
        )
        if current is None:
            return None
        return AppSecrets(_text(current), _text(previous), _int(expire))

    async def list_ids(self, after: str, limit: int) -> list[str]:
        start = f"({after}" if after else "-"
        raw = await self.redis.zrangebylex(keys.app_index(), start, "+", 0, limit)
        return [_text(member) for member in raw]

    async def update(
        self,
        app_id: str,
        *,
        update_us: int,
        display_name: str | None = None,
        logout_policy: LogoutPolicy | None = None,
        default_time_zone: str | None = None,
    ) -> bool:
        fields: dict[str, str | int] = {_UPDATE: update_us}
        if display_name is not None:
            fields[_NAME] = display_name
        if logout_policy is not None:
            fields[_POLICY] = logout_policy.value
        if default_time_zone is not None:
            fields[_TIME_ZONE] = default_time_zone
        flat = [item for pair in fields.items() for item in pair]
        return bool(await self._hset_if_exists(keys=[keys.app(app_id)], args=flat))

    async def rotate_secret(
        self, app_id: str, new_digest: str, now_us: int, previous_expire_us: int
    ) -> bool:
        answer = await self._rotate(
            keys=[keys.app(app_id)], args=[new_digest, now_us, previous_expire_us]
        )
        return bool(answer)

    async def delete(self, app_id: str) -> bool:
        app_key = keys.app(app_id)
        request_id = _text(await self.redis.hget(app_key, _REQUEST_ID))
        members = await self.redis.zrange(keys.app_api_keys(app_id), 0, -1)
        key_ids = [_text(member).rsplit(":", 1)[-1] for member in members]  # type: ignore[arg-type]
        digests = []
        for key_id in key_ids:
            digest = _text(await self.redis.hget(keys.api_key(key_id), _KEY_DIGEST))
            if digest:
                digests.append(keys.api_key_digest(digest))
        request_key = keys.create_app_request(request_id) if request_id else app_key
        answer = await self._delete(
            keys=[
                app_key,
                keys.app_index(),
                request_key,
                keys.app_api_keys(app_id),
                *(keys.api_key(key_id) for key_id in key_ids),
                *digests,
            ],
            args=[app_id],
        )
        return bool(answer)

    # --- API keys -------------------------------------------------------------------

    async def create_api_key(self, key: ApiKey, digest: str) -> bool:
        fields = {
            _KEY_APP: key.app_id,
            _KEY_NAME: key.display_name,
            _KEY_SCOPE: key.scope.value,
            _KEY_EXPIRE: key.expire_us,
            _KEY_PREFIX: key.key_prefix,
            _KEY_CREATE: key.create_us,
            _KEY_DIGEST: digest,
        }
        flat = [item for pair in fields.items() for item in pair]
        answer = await self._create_key(
            keys=[
                keys.app(key.app_id),
                keys.api_key(key.api_key_id),
                keys.api_key_digest(digest),
                keys.app_api_keys(key.app_id),
            ],
            args=[key.api_key_id, api_key_list_member(key), *flat],
        )
        return bool(answer)

    async def get_api_key(self, api_key_id: str) -> ApiKey | None:
        raw = await self.redis.hgetall(keys.api_key(api_key_id))
        return _api_key_from(api_key_id, _decode(raw)) if raw else None

    async def api_key_id_by_digest(self, digest: str) -> str:
        return _text(await self.redis.get(keys.api_key_digest(digest)))

    async def api_key_digest_of(self, api_key_id: str) -> str:
        return _text(await self.redis.hget(keys.api_key(api_key_id), _KEY_DIGEST))

    async def list_api_key_members(self, app_id: str, after: str, limit: int) -> list[str]:
        start = f"({after}" if after else "-"
        raw = await self.redis.zrangebylex(keys.app_api_keys(app_id), start, "+", 0, limit)
        return [_text(member) for member in raw]

    async def revoke_api_key(self, api_key_id: str, revoke_us: int) -> bool:
        return bool(
            await self._hset_if_exists(
                keys=[keys.api_key(api_key_id)], args=[_KEY_REVOKE, revoke_us]
            )
        )

    async def touch_api_key(self, api_key_id: str, use_us: int) -> None:
        await self._hset_if_exists(keys=[keys.api_key(api_key_id)], args=[_KEY_LAST_USE, use_us])


_KEY_APP, _KEY_NAME, _KEY_SCOPE, _KEY_EXPIRE = "app", "name", "scope", "exp"
_KEY_PREFIX, _KEY_CREATE, _KEY_REVOKE, _KEY_LAST_USE = "prefix", "ct", "rt", "lut"
_KEY_DIGEST = "h"

# Members of an app's key list sort newest first by name alone (ZRANGEBYLEX pages).
_MAX_US = 10**17


def api_key_list_member(key: ApiKey) -> str:
    return f"{_MAX_US - key.create_us:017d}:{key.api_key_id}"


def _api_key_from(api_key_id: str, fields: dict[str, str]) -> ApiKey:
    return ApiKey(
        api_key_id=api_key_id,
        app_id=fields.get(_KEY_APP, ""),
        display_name=fields.get(_KEY_NAME, ""),
        scope=ApiKeyScope(fields.get(_KEY_SCOPE) or ApiKeyScope.REGISTER),
        expire_us=_int(fields.get(_KEY_EXPIRE)),
        key_prefix=fields.get(_KEY_PREFIX, ""),
        create_us=_int(fields.get(_KEY_CREATE)),
        revoke_us=_int(fields.get(_KEY_REVOKE)),
        last_use_us=_int(fields.get(_KEY_LAST_USE)),
    )
