"""An in-process view of the stored credentials that notices replacements.

Senders must not read Redis for every send, yet a credential replaced through another
Delivery process must take effect quickly. Each cached entry is trusted for
`refresh_seconds`; after that one HMGET of the slot's version decides whether the
cached material is still current. PutCredentials in this process invalidates at once.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from services.delivery.credential_store import CredentialStore
from services.delivery.credentials import Credential, Slot


@dataclass
class _Entry:
    credential: Credential | None
    checked: float


class CredentialCache:
    def __init__(self, store: CredentialStore, refresh_seconds: float = 1.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._entries: dict[Slot, _Entry] = {}

    async def get(self, slot: Slot) -> Credential | None:
        now = time.monotonic()
        entry = self._entries.get(slot)
        if entry is not None and now - entry.checked < self.refresh_seconds:
            return entry.credential
        if entry is not None and entry.credential is not None:
            version, until, error, when = await self.store.version(slot)
            if version == entry.credential.version:
                # Same material; only the health fields may have moved (another process
                # opened the circuit).
                entry.credential = dataclasses.replace(
                    entry.credential, circuit_until=until, last_error=error, last_error_time=when
                )
                entry.checked = now
                return entry.credential
        credential = await self.store.get(slot)
        self._entries[slot] = _Entry(credential, now)
        return credential

    def invalidate(self, slot: Slot) -> None:
        self._entries.pop(slot, None)
