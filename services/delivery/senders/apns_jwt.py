"""APNs provider tokens: minted once per window and shared by every connection.

APNs refuses a new token on a connection sooner than 20 minutes after the previous one
(429 TooManyProviderTokenUpdates) and an `iat` older than 60 minutes (403
ExpiredProviderToken). One token per credential, re-minted after `refresh_seconds`
(40 minutes: mid-window), satisfies both on every connection of the pool, however many
there are. A connection that must get a fresh token out of turn is retired instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

REFRESH_SECONDS = 40 * 60


class ApnsTokenSigner:
    def __init__(
        self,
        private_key_pem: str,
        key_id: str,
        team_id: str,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._key = private_key_pem
        self._key_id = key_id
        self._team_id = team_id
        self.refresh_seconds = refresh_seconds
        self._header = ""
        self._minted_at = 0.0
        self.mints = 0  # how many tokens were minted (tests, metrics)
        self.on_mint: Callable[[], None] | None = None

    def authorization(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if not self._header or now - self._minted_at >= self.refresh_seconds:
            token = jwt.encode(
                {"iss": self._team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._header = f"bearer {token}"
            self._minted_at = now
            self.mints += 1
            if self.on_mint is not None:
                self.on_mint()
        return self._header

    def expire(self) -> None:
        """APNs said the token is too old (clock skew?): mint a new one next time."""
        self._header = ""
