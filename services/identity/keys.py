"""Every Redis key the Identity service writes, named in one place.

docs/keys/identity.md explains each one. Two families:

- Tenant data (apps, their secrets, API keys, create-request ids) shares the hash tag
  `{apps}`: it is small (one record per app and per key), and one slot lets a single
  script create or delete an app with its index and keys atomically.
- User data is spread over `USER_SHARDS` tags `{users:<shard>}`: a user's record lives
  in the same slot as the shard index that lists it, so creating or deleting a user and
  its index entry is one script, and no key ever holds all users.

E-mail and phone indexes sit in their own slots (one key per address); they are only
hints, verified against the user record, which is the source of truth.
"""

from __future__ import annotations

from services.core.redis import hash_tag, shard_of

PREFIX = "idn"
APPS_TAG = hash_tag("apps")

# 64 shards keep each index near 16k members at 1M users while a sorted merge over all
# shards (ListUsers) stays one pipelined round trip. Changing it needs a re-index.
USER_SHARDS = 64


def app(app_id: str) -> str:
    return f"{PREFIX}:{APPS_TAG}:app:{app_id}"


def app_index() -> str:
    return f"{PREFIX}:{APPS_TAG}:apps"


def create_app_request(request_id: str) -> str:
    return f"{PREFIX}:{APPS_TAG}:create-app-request:{request_id}"


def api_key(api_key_id: str) -> str:
    return f"{PREFIX}:{APPS_TAG}:api-key:{api_key_id}"


def api_key_digest(digest: str) -> str:
    return f"{PREFIX}:{APPS_TAG}:api-key-digest:{digest}"


def app_api_keys(app_id: str) -> str:
    return f"{PREFIX}:{APPS_TAG}:app-api-keys:{app_id}"


def user_shard(external_id: str) -> int:
    return shard_of(external_id, USER_SHARDS)


def _users_tag(shard: int) -> str:
    return hash_tag(f"users:{shard}")


def user(external_id: str) -> str:
    return user_in_shard(user_shard(external_id), external_id)


def user_in_shard(shard: int, external_id: str) -> str:
    """`user(external_id)` when its shard is already known (batch reads group by it)."""
    return f"{PREFIX}:{_users_tag(shard)}:user:{external_id}"


def user_index(shard: int) -> str:
    return f"{PREFIX}:{_users_tag(shard)}:index"


def email_owner(email: str) -> str:
    return f"{PREFIX}:email:{email}"


def phone_owner(phone: str) -> str:
    return f"{PREFIX}:phone:{phone}"
