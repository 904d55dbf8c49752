"""Client secrets and API keys: minted from `secrets`, stored only as digests.

Both are 32 random bytes from the OS CSPRNG, so nobody can guess one or brute-force it
from its digest; a slow password hash (bcrypt, argon2) would only slow down
VerifyClientSecret, which Registration calls on every user-bound registration. A
server-side pepper (HMAC) would add a secret every replica must share and rotate
without protecting against anything a 256-bit preimage does not already resist. So the
digest is plain SHA-256 with a domain label (a client secret digest can never be
mistaken for an API key digest), compared with hmac.compare_digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "hk_live_"
# How much of a key ListApiKeys shows ("hk_live_ab12"): enough to recognise it.
API_KEY_VISIBLE_CHARS = len(API_KEY_PREFIX) + 4

_CLIENT_SECRET_LABEL = b"herald.client-secret.v1:"
_API_KEY_LABEL = b"herald.api-key.v1:"


def new_client_secret() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def client_secret_digest(secret: str) -> str:
    return hashlib.sha256(_CLIENT_SECRET_LABEL + secret.encode()).hexdigest()


def api_key_digest(key: str) -> str:
    return hashlib.sha256(_API_KEY_LABEL + key.encode()).hexdigest()


def digests_match(presented_digest: str, stored_digest: str) -> bool:
    """Constant-time comparison, so timing never tells how much of a digest matched."""
    if not stored_digest:
        # Still spend the comparison: an absent secret answers like a wrong one.
        hmac.compare_digest(presented_digest, presented_digest)
        return False
    return hmac.compare_digest(presented_digest, stored_digest)
