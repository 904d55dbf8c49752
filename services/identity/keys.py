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

import zlib

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
    return f"{PREFIX}:{_users_tag(user_shard(external_id))}:user:{external_id}"


_USER_KEY_PREFIXES = [
    f"{PREFIX}:{_users_tag(shard)}:user:".encode() for shard in range(USER_SHARDS)
]


def user_shard_and_key(external_id: str) -> tuple[int, bytes]:
    """`user_shard(external_id)` and `user(external_id)` as bytes from one encoding of
    the id: BatchGetUsers computes them for every user it reads. The shard is
    shard_of's (crc32 of the UTF-8 id); tests/unit/identity/test_keys.py checks both."""
    raw = external_id.encode()
    shard = zlib.crc32(raw) % USER_SHARDS
    return shard, _USER_KEY_PREFIXES[shard] + raw


def user_index(shard: int) -> str:
    return f"{PREFIX}:{_users_tag(shard)}:index"


def email_owner(email: str) -> str:
    return f"{PREFIX}:email:{email}"


def phone_owner(phone: str) -> str:
    return f"{PREFIX}:phone:{phone}"
