"""ListDevices, ListUserDevices and ListTokenChanges: paginated reads.

Cross-slot indexes (user → devices) are verified against the device records; an
entry the record does not confirm is skipped and removed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from services.core.errors import Validator
from services.registration import pagination, record, rules
from services.registration.apps import AppDirectory
from services.registration.model import FOREGROUND, PLATFORMS, ChangeEntry, DeviceRecord
from services.registration.store import RegistrationStore
from services.registration.validation import MAX_USER_ID, check_id, check_optional_text, fail

CAPABILITIES = range(0, 4)


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
        after = pagination.decode(page_token, query) or ""
        size = pagination.page_size(page_size)
        await self.apps.require_app(app_id)

        def keep(rec: DeviceRecord) -> bool:
            if platforms and rec.platform not in platforms:
                return False
            if capability and rules.capability(rec)[0] != capability:
                return False
            return not user_id or rec.user_id == user_id

        if user_id:
            candidates = sorted(
                d for a, d in await self.store.user_devices(user_id) if a == app_id and d > after
            )
        else:
            # Ordered by device id across every shard: a merge of the shards' ids. Each
            # page reads the app's ids (not its records); ListDevices is an admin read,
            # StreamAudience is the bulk path.
            ids = [
                device.decode()
                for shard in await self.store.shard_device_ids(app_id)
                for device in shard
            ]
            candidates = sorted(d for d in ids if d > after)
        page: list[ListedDevice] = []
        position = 0
        while position < len(candidates) and len(page) <= size:
            chunk = candidates[position : position + size * 2]
            position += len(chunk)
            for device_id, raw in zip(chunk, await self.store.get_many(app_id, chunk), strict=True):
                if raw is None:
                    continue
                rec = record.unpack(raw, with_log=False)
                if keep(rec):
                    page.append(ListedDevice(app_id, device_id, rec))
                    if len(page) > size:
                        break
        more = len(page) > size
        page = page[:size]
        return page, pagination.encode(query, page[-1].device_id) if more else ""

    async def list_user_devices(
        self, user_id: str, app_id: str, page_size: int, page_token: str, view: int
    ) -> tuple[list[ListedDevice], str, bool]:
        check = Validator()
        check_id(check, "user_id", user_id, MAX_USER_ID)
        if app_id:
            check_id(check, "app_id", app_id)
        _check_page(check, page_size)
        fail(check)
        query = pagination.fingerprint("ListUserDevices", user_id, app_id, view)
        after = tuple(pagination.decode(page_token, query) or ("", ""))
        size = pagination.page_size(page_size)
        members = await self.store.user_devices(user_id)
        by_app: dict[str, list[str]] = {}
        for member_app, device_id in members:
            by_app.setdefault(member_app, []).append(device_id)
        verified: list[ListedDevice] = []
        for member_app, device_ids in by_app.items():
            raws = await self.store.get_many(member_app, device_ids)
            for device_id, raw in zip(device_ids, raws, strict=True):
                rec = record.unpack(raw, with_log=False) if raw else None
                if rec is None or rec.user_id != user_id:
                    await self.store.remove_user_device(user_id, member_app, device_id)
                    continue
                verified.append(ListedDevice(member_app, device_id, rec))
        push_enabled_any_app = any(rules.capability(d.record)[0] == FOREGROUND for d in verified)
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
