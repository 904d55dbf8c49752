"""ListDevices, ListUserDevices and ListTokenChanges: paginated reads.

Cross-slot indexes (user → devices) are verified against the device records; an
entry the record does not confirm is skipped and removed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from services.core.errors import Validator
from services.registration import pagination, record, rules
from services.registration.apps import AppDirectory
from services.registration.invalidation import batch_too_large
from services.registration.model import FOREGROUND, PLATFORMS, ChangeEntry, DeviceRecord
from services.registration.store import (
    DEVICE_SHARDS,
    IndexEntry,
    RegistrationStore,
    device_shard,
    now_ms,
    user_member,
)
from services.registration.validation import MAX_USER_ID, check_id, check_optional_text, fail

CAPABILITIES = range(0, 4)
MAX_BATCH_USERS = 1000
SHARDS_PER_PAGE_READ = 16


@dataclass(frozen=True)
class ListedDevice:
    app_id: str
    device_id: str
    record: DeviceRecord


@dataclass(frozen=True)
class ListedChange:
    app_id: str
    device_id: str
    entry: ChangeEntry


def _check_page(check: Validator, page_size: int) -> None:
    if page_size < 0:
        check.add("page_size", "must not be negative")


class Listings:
    def __init__(self, store: RegistrationStore, apps: AppDirectory) -> None:
        self.store = store
        self.apps = apps

    async def list_devices(
        self,
        app_id: str,
        page_size: int,
        page_token: str,
        platforms: list[int],
        capability: int,
        user_id: str,
        view: int,
    ) -> tuple[list[ListedDevice], str]:
        check = Validator()
        check_id(check, "app_id", app_id)
        _check_page(check, page_size)
        for i, platform in enumerate(platforms):
            if platform not in PLATFORMS:
                check.add(f"platforms[{i}]", "is not a known platform")
        if capability not in CAPABILITIES:
            check.add("capability", "is not a known PushCapability")
        check_optional_text(check, "user_id", user_id, MAX_USER_ID)
        fail(check)
        query = pagination.fingerprint(
            "ListDevices", app_id, sorted(platforms), capability, user_id, view
        )
        after = pagination.decode(page_token, query)
        if after is not None and not (
            isinstance(after, list)
            and len(after) == 2
            and isinstance(after[0], int)
            and isinstance(after[1], str)
            and 0 <= after[0] < DEVICE_SHARDS
        ):
            raise pagination.bad_token()
        size = pagination.page_size(page_size)
        await self.apps.require_app(app_id)

        def keep(rec: DeviceRecord) -> bool:
            if platforms and rec.platform not in platforms:
                return False
            if capability and rules.capability(rec)[0] != capability:
                return False
            return not user_id or rec.user_id == user_id

        if user_id:
            return await self._user_page(app_id, user_id, query, after, size, keep)
        # Shard by shard, device ids sorted within a shard: only one read of
        # SHARDS_PER_PAGE_READ shards' ids is in memory (never the app's millions), and
        # the position (shard, device id) is stable whatever is added or removed.
        shard, last = (int(after[0]), str(after[1])) if after else (0, "")
        page: list[ListedDevice] = []
        while shard < DEVICE_SHARDS and len(page) <= size:
            shards = list(range(shard, min(shard + SHARDS_PER_PAGE_READ, DEVICE_SHARDS)))
            for current, ids in zip(
                shards, await self.store.shard_device_ids(app_id, shards), strict=True
            ):
                names = sorted(d.decode() for d in ids)
                if current == shard and last:
                    names = [d for d in names if d > last]
                for start in range(0, len(names), size + 1):
                    chunk = names[start : start + size + 1]
                    raws = await self.store.get_many(app_id, chunk)
                    for device_id, raw in zip(chunk, raws, strict=True):
                        rec = record.unpack(raw, with_log=False) if raw else None
                        if rec is not None and keep(rec):
                            page.append(ListedDevice(app_id, device_id, rec))
                            if len(page) > size:
                                break
                    if len(page) > size:
                        break
                if len(page) > size:
                    break
            shard = shards[-1] + 1
            last = ""
        more = len(page) > size
        page = page[:size]
        if not more:
            return page, ""
        tail = page[-1]
        return page, pagination.encode(query, [device_shard(tail.device_id), tail.device_id])

    async def _user_page(
        self,
        app_id: str,
        user_id: str,
        query: str,
        after: list | None,
        size: int,
        keep: Callable[[DeviceRecord], bool],
    ) -> tuple[list[ListedDevice], str]:
        """The same (shard, device id) order, from the user index (a handful of ids)."""
        query_after = (int(after[0]), str(after[1])) if after else (-1, "")
        candidates = sorted(
            (device_shard(d), d)
            for a, d, _ in await self.store.user_devices(user_id)
            if a == app_id and (device_shard(d), d) > query_after
        )
        page: list[ListedDevice] = []
        names = [d for _, d in candidates]
        for device_id, raw in zip(names, await self.store.get_many(app_id, names), strict=True):
            rec = record.unpack(raw, with_log=False) if raw else None
            if rec is not None and keep(rec):
                page.append(ListedDevice(app_id, device_id, rec))
        more = len(page) > size
        page = page[:size]
        if not more:
            return page, ""
        tail = page[-1]
        return page, pagination.encode(query, [device_shard(tail.device_id), tail.device_id])

    async def verified_user_devices(
        self, user_id: str, members: list[tuple[str, str, IndexEntry]]
    ) -> list[ListedDevice]:
        """The members whose record names the user, ordered by (app, device).

        A member the record does not confirm is skipped. It is removed only when it is
        older than STALE_AFTER_MS (a younger one may be a registration between "index
        made ready" and "record written") and still exactly the value read here
        (compare-and-delete), so a concurrent re-binding is never undone."""
        by_app: dict[str, list[tuple[str, IndexEntry]]] = {}
        for member_app, device_id, entry in members:
            by_app.setdefault(member_app, []).append((device_id, entry))
        verified: list[ListedDevice] = []
        stale: list[tuple[str, bytes, bytes]] = []
        now = now_ms()
        for member_app, found in by_app.items():
            raws = await self.store.get_many(member_app, [d for d, _ in found])
            for (device_id, entry), raw in zip(found, raws, strict=True):
                rec = record.unpack(raw, with_log=False) if raw else None
                if rec is None or rec.user_id != user_id:
                    if entry.stale(now):
                        stale.append((user_id, user_member(member_app, device_id), entry.raw))
                    continue
                verified.append(ListedDevice(member_app, device_id, rec))
        if stale:
            await self.store.remove_user_entries(stale)
        verified.sort(key=lambda d: (d.app_id, d.device_id))
        return verified

    async def batch_list_user_devices(
        self, user_ids: list[str], app_id: str
    ) -> list[tuple[list[ListedDevice], bool]]:
        """Every device of each user (one pipelined index read for all of them)."""
        if not 1 <= len(user_ids) <= MAX_BATCH_USERS:
            raise batch_too_large("user_ids", len(user_ids), MAX_BATCH_USERS)
        check = Validator()
        for index, user_id in enumerate(user_ids):
            check_id(check, f"user_ids[{index}]", user_id, MAX_USER_ID)
        if app_id:
            check_id(check, "app_id", app_id)
        fail(check)
        answers = []
        for user_id, members in zip(
            user_ids, await self.store.users_devices(user_ids), strict=True
        ):
            verified = await self.verified_user_devices(user_id, members)
            any_app = any(rules.capability(d.record)[0] == FOREGROUND for d in verified)
            answers.append(([d for d in verified if not app_id or d.app_id == app_id], any_app))
        return answers

    async def list_user_devices(
        self,
        user_id: str,
        app_id: str,
        page_size: int,
        page_token: str,
        view: int,
        caller_app: str = "",
    ) -> tuple[list[ListedDevice], str, bool]:
        """A page of the user's devices (of `app_id`, or of every app), and whether push
        is enabled for any app: for an app's key (`caller_app`) that is read over its own
        app's devices, so another app's push state does not reach it."""
        check = Validator()
        check_id(check, "user_id", user_id, MAX_USER_ID)
        if app_id:
            check_id(check, "app_id", app_id)
        _check_page(check, page_size)
        fail(check)
        query = pagination.fingerprint("ListUserDevices", user_id, app_id, view)
        after = tuple(pagination.decode(page_token, query) or ("", ""))
        size = pagination.page_size(page_size)
        verified = await self.verified_user_devices(user_id, await self.store.user_devices(user_id))
        push_enabled_any_app = any(
            rules.capability(d.record)[0] == FOREGROUND
            for d in verified
            if not caller_app or d.app_id == caller_app
        )
        chosen = heapq.nsmallest(
            size + 1,
            (
                d
                for d in verified
                if (not app_id or d.app_id == app_id) and (d.app_id, d.device_id) > after
            ),
            key=lambda d: (d.app_id, d.device_id),
        )
        more = len(chosen) > size
        chosen = chosen[:size]
        token = pagination.encode(query, [chosen[-1].app_id, chosen[-1].device_id]) if more else ""
        return chosen, token, push_enabled_any_app

    async def list_token_changes(
        self,
        app_id: str,
        device_id: str,
        user_id: str,
        kinds: list[int],
        page_size: int,
        page_token: str,
    ) -> tuple[list[ListedChange], str]:
        check = Validator()
        by_device = bool(device_id)
        if by_device == bool(user_id):
            check.add("user_id", "set exactly one selector: app_id with device_id, or user_id")
        if by_device:
            check_id(check, "app_id", app_id)
            check_id(check, "device_id", device_id)
        elif user_id:
            check_id(check, "user_id", user_id, MAX_USER_ID)
        _check_page(check, page_size)
        fail(check)
        query = pagination.fingerprint(
            "ListTokenChanges", app_id, device_id, user_id, sorted(kinds)
        )
        after = pagination.decode(page_token, query)
        size = pagination.page_size(page_size)

        entries: list[ListedChange]
        if by_device:
            raw = await self.store.get(app_id, device_id)
            log = record.unpack(raw).log if raw else []
            entries = [ListedChange(app_id, device_id, e) for e in reversed(log)]
        else:
            entries = []
            for packed in await self.store.user_log(user_id):
                entry_app, entry_device, entry = record.unpack_user_entry(packed)
                if not app_id or entry_app == app_id:
                    entries.append(ListedChange(entry_app, entry_device, entry))
        if kinds:
            entries = [c for c in entries if c.entry.kind in kinds]
        start = 0
        if after is not None:
            # Entries are immutable and only ever prepended (newest first), so the
            # page continues right after the last entry returned, wherever it now is.
            ids = [c.entry.change_id + c.device_id for c in entries]
            start = ids.index(after) + 1 if after in ids else len(entries)
        page = entries[start : start + size]
        more = start + size < len(entries)
        token = (
            pagination.encode(query, page[-1].entry.change_id + page[-1].device_id) if more else ""
        )
        return page, token
