"""The rules for API keys: created with a scope, shown once, stored as a digest.

Only storage and verification live here; enforcing keys on RPCs is the auth
interceptor's job (issue 7), which calls VerifyApiKey and caches the answer.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from services.core.errors import NotFound, Unauthenticated, Validator
from services.identity import credentials, pagination
from services.identity.app_model import ApiKey, ApiKeyScope
from services.identity.app_store import AppStore
from services.identity.apps import app_not_found
from services.identity.clock import MICROS_PER_SECOND, now_us

# last_use_time is written at most this often, so a busy key costs no write per call.
LAST_USE_RESOLUTION_US = 60 * MICROS_PER_SECOND
_LIST_KIND = "api-keys"


def _key_not_found(app_id: str, api_key_id: str) -> NotFound:
    return NotFound(
        "API_KEY_NOT_FOUND",
        f"app {app_id!r} has no API key {api_key_id!r}",
        {"app_id": app_id, "api_key_id": api_key_id},
    )


class ApiKeys:
    def __init__(self, store: AppStore) -> None:
        self.store = store

    async def create(
        self, app_id: str, display_name: str, scope: ApiKeyScope | None, expire_us: int
    ) -> tuple[ApiKey, str]:
        check = Validator()
        check.require(bool(app_id), "app_id", "is required")
        check.require(bool(display_name.strip()), "api_key.display_name", "is required")
        check.require(
            len(display_name) <= 100, "api_key.display_name", "must be at most 100 characters"
        )
        check.require(scope is not None, "api_key.scope", "must be REGISTER or FULL")
        check.require(
            expire_us == 0 or expire_us > now_us(), "api_key.expire_time", "must be in the future"
        )
        check.raise_if_any()
        assert scope is not None
        key = credentials.new_api_key()
        record = ApiKey(
            api_key_id=f"key-{secrets.token_hex(8)}",
            app_id=app_id,
            display_name=display_name,
            scope=scope,
            expire_us=expire_us,
            key_prefix=key[: credentials.API_KEY_VISIBLE_CHARS],
            create_us=now_us(),
            revoke_us=0,
            last_use_us=0,
        )
        if not await self.store.create_api_key(record, credentials.api_key_digest(key)):
            raise app_not_found(app_id)
        return record, key

    async def list_page(
        self, app_id: str, page_size: int, page_token: str, show_revoked: bool
    ) -> tuple[list[ApiKey], str]:
        if await self.store.get(app_id) is None:
            raise app_not_found(app_id)
        size = pagination.page_size(page_size)
        query = pagination.fingerprint(app_id, str(show_revoked))
        after = str(pagination.decode(page_token, _LIST_KIND, query)) if page_token else ""
        found: list[ApiKey] = []
        last = after
        while len(found) < size:
            members = await self.store.list_api_key_members(app_id, last, size)
            if not members:
                return found, ""
            for member in members:
                last = member
                key = await self.store.get_api_key(member.rsplit(":", 1)[-1])
                if key is not None and (show_revoked or not key.revoke_us):
                    found.append(key)
                    if len(found) == size:
                        break
        more = bool(await self.store.list_api_key_members(app_id, last, 1))
        return found, pagination.encode(_LIST_KIND, query, last) if more else ""

    async def revoke(self, app_id: str, api_key_id: str) -> ApiKey:
        check = Validator()
        check.require(bool(app_id), "app_id", "is required")
        check.require(bool(api_key_id), "api_key_id", "is required")
        check.raise_if_any()
        key = await self.store.get_api_key(api_key_id)
        if key is None or key.app_id != app_id:
            raise _key_not_found(app_id, api_key_id)
        if not key.revoke_us:
            await self.store.revoke_api_key(api_key_id, now_us())
            key = await self.store.get_api_key(api_key_id)
            if key is None:
                raise _key_not_found(app_id, api_key_id)
        return key

    async def verify(self, presented: str) -> ApiKey:
        if not presented:
            raise Unauthenticated("API_KEY_MISSING", "no API key was presented")
        digest = credentials.api_key_digest(presented)
        api_key_id = await self.store.api_key_id_by_digest(digest)
        key = await self.store.get_api_key(api_key_id) if api_key_id else None
        stored_digest = await self.store.api_key_digest_of(api_key_id) if key else ""
        if key is None or not credentials.digests_match(digest, stored_digest):
            raise Unauthenticated("API_KEY_INVALID", "the API key is not valid")
        now = now_us()
        if key.revoke_us:
            raise Unauthenticated("API_KEY_REVOKED", "the API key was revoked")
        if key.expire_us and key.expire_us <= now:
            raise Unauthenticated("API_KEY_EXPIRED", "the API key has expired")
        if now - key.last_use_us >= LAST_USE_RESOLUTION_US:
            await self.store.touch_api_key(api_key_id, now)
            key = replace(key, last_use_us=now)
        return key
