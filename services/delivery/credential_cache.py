"""An in-process view of the stored credentials that notices replacements.

Senders must not read Redis for every send, yet a credential replaced through another
Delivery process must take effect quickly. Each cached entry is trusted for
`refresh_seconds`; after that one HMGET of the slot's version decides whether the
cached material is still current. PutCredentials in this process invalidates at once.
"""

from __future__ import annotations

import asyncio
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
        self._loading: dict[Slot, asyncio.Future[Credential | None]] = {}
        self._generations: dict[Slot, int] = {}

    async def get(self, slot: Slot) -> Credential | None:
        entry = self._entries.get(slot)
        if entry is not None and time.monotonic() - entry.checked < self.refresh_seconds:
            return entry.credential
        # One Redis read per slot at a time: a burst of sends after a replacement must
        # not become a burst of HGETALLs.
        pending = self._loading.get(slot)
        if pending is None:
            pending = asyncio.ensure_future(self._load(slot))
            self._loading[slot] = pending
            pending.add_done_callback(lambda done: self._forget_load(slot, done))
        return await asyncio.shield(pending)

    async def _load(self, slot: Slot) -> Credential | None:
        generation = self._generations.get(slot, 0)
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
        if self._generations.get(slot, 0) == generation:  # not invalidated meanwhile
            self._entries[slot] = _Entry(credential, now)
        return credential

    def _forget_load(self, slot: Slot, done: asyncio.Future[Credential | None]) -> None:
        if self._loading.get(slot) is done:
            del self._loading[slot]

    def invalidate(self, slot: Slot) -> None:
        """Forget the slot now (a load already running may be stale: it is dropped too)."""
        self._entries.pop(slot, None)
        self._loading.pop(slot, None)
        self._generations[slot] = self._generations.get(slot, 0) + 1
