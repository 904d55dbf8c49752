"""GetNotification, ListNotifications and CancelNotifications over the queue's records.

Lists read one index (campaign, else device, else user, else the whole app) from every
shard and merge them newest first; page tokens carry the last position (create time,
id) and a digest of the filters, so a token only works with the query that issued it.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import time
from typing import Any

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.type.v1 import push_options_pb2
from services.core.errors import FieldViolation, InvalidArgument, NotFound, Validator
from services.delivery import queue_keys as keys
from services.delivery import records
from services.delivery.queue_store import QueueStore

DS = delivery_service_pb2
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CANCEL_CHUNK = 500
MAX_CANCEL_IDS = 1000


class NotificationRecords:
    def __init__(self, store: QueueStore) -> None:
        self.store = store

    async def get(self, notification_id: str) -> notification_pb2.Notification:
        check = Validator()
        check.require(0 < len(notification_id) <= 64, "notification_id", "is required")
        check.raise_if_any()
        shard = keys.shard_for(notification_id, self.store.shards)
        found = records.notification_view(
            await self.store.record(shard, notification_id), full=True
        )
        if found is None:
            raise NotFound(
                "NOTIFICATION_NOT_FOUND",
                f"notification {notification_id} does not exist or its record has expired",
                {"notification_id": notification_id},
            )
        return found

    # -- list ---------------------------------------------------------------------------
    async def list_page(self, request: DS.ListNotificationsRequest) -> DS.ListNotificationsResponse:
        check = Validator()
        check.require(bool(request.app_id), "app_id", "is required")
        check.require(
            0 <= request.page_size <= MAX_PAGE_SIZE, "page_size", f"must be 0 to {MAX_PAGE_SIZE}"
        )
        check.raise_if_any()
        size = request.page_size or DEFAULT_PAGE_SIZE
        full = request.view == notification_pb2.NOTIFICATION_VIEW_FULL
        digest = _filter_digest(request)
        position = _read_page_token(request.page_token, digest)
        kind, value = _chosen_index(request)
        index = [keys.index(s, kind, request.app_id, value) for s in range(self.store.shards)]
        wanted = set(request.outcomes)

        page: list[notification_pb2.Notification] = []
        more = False
        while len(page) < size:
            need = size - len(page) + 1
            batch = await self._newest(index, position, need)
            if not batch:
                break
            for ms, nid, shard in batch:
                if len(page) == size:
                    more = True
                    break
                position = (ms, nid)
                view = records.notification_view(await self.store.record(shard, nid), full)
                if view is None or not _matches(view, request, wanted):
                    continue
                page.append(view)
            if more or len(batch) < need:
                break
        next_token = _page_token(digest, position) if more and position else ""
        return DS.ListNotificationsResponse(notifications=page, next_page_token=next_token)

    async def _newest(
        self, index: list[str], before: tuple[int, str] | None, count: int
    ) -> list[tuple[int, str, int]]:
        per_shard = []
        for shard, key in enumerate(index):
            rows = await self.store.index_page(shard, key, before, count)
            per_shard.append([(ms, nid, shard) for nid, ms in rows])
        merged = heapq.merge(*per_shard, key=lambda row: (row[0], row[1]), reverse=True)
        return [row for _, row in zip(range(count), merged, strict=False)]

    # -- cancel -------------------------------------------------------------------------
    async def cancel(
        self, request: DS.CancelNotificationsRequest
    ) -> DS.CancelNotificationsResponse:
        ids = list(request.notification_ids)
        check = Validator()
        check.require(bool(request.app_id), "app_id", "is required")
        check.require(
            bool(request.campaign_id) or bool(ids),
            "campaign_id",
            "is required (or notification_ids)",
        )
        check.require(len(ids) <= MAX_CANCEL_IDS, "notification_ids", "at most 1000 ids")
        check.raise_if_any()
        targets: dict[int, list[str]] = {}
        if request.campaign_id:
            for shard in range(self.store.shards):
                members = await self.store.index_members(
                    keys.index(shard, "campaign", request.app_id, request.campaign_id)
                )
                targets.setdefault(shard, []).extend(members)
        for nid in ids:
            targets.setdefault(keys.shard_for(nid, self.store.shards), []).append(nid)
        cancelled = 0
        for shard, nids in targets.items():
            for start in range(0, len(nids), CANCEL_CHUNK):
                cancelled += await self._cancel_chunk(
                    shard, nids[start : start + CANCEL_CHUNK], request.app_id
                )
        return DS.CancelNotificationsResponse(cancelled_count=cancelled)

    async def _cancel_chunk(self, shard: int, nids: list[str], app_id: str) -> int:
        now_ms = int(time.time() * 1000)
        rows = await self.store.records(shard, nids, ["n", "o"])
        items: list[tuple[str, bytes, str, str]] = []
        for nid, (payload, outcome) in zip(nids, rows, strict=True):
            if not payload or outcome not in (b"1", b"4"):
                continue
            notification = notification_pb2.Notification.FromString(payload)
            if notification.app_id != app_id:
                continue  # another app's notification: not this caller's to cancel
            event = records.outcome_event(
                notification,
                push_options_pb2.DELIVERY_OUTCOME_CANCELLED,
                "CANCELLED",
                event_ms=now_ms,
            )
            items.append((nid, event.SerializeToString(), app_id, notification.campaign_id))
        return await self.store.cancel(shard, items, now_ms)


def _chosen_index(request: DS.ListNotificationsRequest) -> tuple[str, str]:
    if request.campaign_id:
        return "campaign", request.campaign_id
    if request.device_id:
        return "device", request.device_id
    if request.user_id:
        return "user", request.user_id
    return "app", ""


def _matches(
    view: notification_pb2.Notification, request: DS.ListNotificationsRequest, wanted: set[Any]
) -> bool:
    if request.device_id and view.device_id != request.device_id:
        return False
    if request.user_id and view.user_id != request.user_id:
        return False
    if request.campaign_id and view.campaign_id != request.campaign_id:
        return False
    return not wanted or view.outcome in wanted


def _filter_digest(request: DS.ListNotificationsRequest) -> str:
    parts = [request.app_id, request.device_id, request.user_id, request.campaign_id]
    parts += [str(o) for o in sorted(request.outcomes)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _page_token(digest: str, position: tuple[int, str]) -> str:
    raw = json.dumps({"f": digest, "t": position[0], "i": position[1]})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _read_page_token(token: str, digest: str) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if data["f"] == digest:
            return int(data["t"]), str(data["i"])
    except (ValueError, KeyError, TypeError):
        pass
    raise InvalidArgument(
        "the page token was not issued for this request",
        [FieldViolation("page_token", "was not issued by ListNotifications for these filters")],
        reason="INVALID_PAGE_TOKEN",
    )
