"""VAPID (RFC 8292) Authorization headers, cached per push-service origin.

The JWT's `aud` is the origin of the endpoint, so one token serves every subscription
at that push service. Tokens live 12 hours (the limit is 24) and are re-signed an hour
before they expire.
"""

from __future__ import annotations

import time

import jwt

LIFETIME = 12 * 3600
RENEW_BEFORE = 3600


class VapidSigner:
    def __init__(self, private_key_pem: str, public_key: str, subject: str) -> None:
        self._key = private_key_pem
        self._public_key = public_key
        self._subject = subject
        self._cache: dict[str, tuple[float, str]] = {}

    def authorization(self, origin: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        cached = self._cache.get(origin)
        if cached is not None and cached[0] - now > RENEW_BEFORE:
            return cached[1]
        exp = int(now) + LIFETIME
        token = jwt.encode(
            {"aud": origin, "exp": exp, "sub": self._subject}, self._key, algorithm="ES256"
        )
        header = f"vapid t={token}, k={self._public_key}"
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[origin] = (exp, header)
        return header
