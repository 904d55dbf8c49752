"""ExportUsers: users with their push tokens, streamed in batches with a resumable
cursor, never holding the whole selection in memory.

By identifiers: the list (at most 10,000) is resolved a batch at a time; the cursor is
the index of the next identifier. By segment: the sharded user index is walked shard by
shard in external-id order, a chunk of records at a time; the cursor is the (shard,
external id) of the last user sent, so memory stays at about two batches whatever the
number of users. Devices come from Registration's BatchListUserDevices, one call per
1,000 users of a chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from herald.type.v1 import platform_pb2
from services.core.errors import FieldViolation, HeraldError, InvalidArgument, Validator
from services.identity import keys, pagination, segments
from services.identity.app_model import App
from services.identity.apps import Apps
from services.identity.identifiers import Identifier, IdentifierKind
from services.identity.registration_client import DeviceSnapshot, Registration
from services.identity.user_model import User
from services.identity.users import Users, identifier_from

DEFAULT_BATCH = 500
MAX_BATCH = 5000
MAX_IDENTIFIERS = 10_000
_CURSOR_KIND = "export"


@dataclass(frozen=True)
class RawIdentifier:
    kind: IdentifierKind | None
    value: str


@dataclass(frozen=True)
class ExportQuery:
    """Exactly one of identifiers / segment is set (the servicer passes what it got)."""

    identifiers: tuple[RawIdentifier, ...] | None
    segment: segments.Segment | None
    app_ids: tuple[str, ...] = ()
    full_tokens: bool = False
    batch_size: int = 0
    cursor: str = ""


@dataclass(frozen=True)
class ExportedToken:
    device: DeviceSnapshot
    app_name: str


@dataclass(frozen=True)
class ExportedUser:
    user: User
    tokens: list[ExportedToken]


@dataclass
class ExportBatch:
    users: list[ExportedUser] = field(default_factory=list)
    not_found: list[Identifier] = field(default_factory=list)
    cursor: str = ""


def _query_fingerprint(query: ExportQuery) -> str:
    return pagination.fingerprint(
        repr(query.identifiers), repr(query.segment), ",".join(sorted(query.app_ids))
    )


class Exporter:
    def __init__(self, apps: Apps, users: Users, registration: Registration) -> None:
        self.apps = apps
        self.users = users
        self.registration = registration

    def _validate(self, query: ExportQuery) -> tuple[list[Identifier], int]:
        check = Validator()
        resolved: list[Identifier] = []
        if (query.identifiers is None) == (query.segment is None):
            check.add("selector", "set exactly one of identifiers or segment")
        if query.identifiers is not None:
            if not 1 <= len(query.identifiers) <= MAX_IDENTIFIERS:
                check.add(
                    "selector.identifiers.identifiers",
                    f"must hold 1 to {MAX_IDENTIFIERS} identifiers",
                )
            for index, raw in enumerate(query.identifiers):
                try:
                    resolved.append(
                        identifier_from(
                            raw.kind, raw.value, f"selector.identifiers.identifiers[{index}]"
                        )
                    )
                except InvalidArgument as error:
                    check.violations.extend(error.violations)
        if query.segment is not None:
            segments.validate(query.segment, check, "selector.segment")
        if not 0 <= query.batch_size <= MAX_BATCH:
            check.add("batch_size", f"must be between 1 and {MAX_BATCH} (0 for {DEFAULT_BATCH})")
        for index, app_id in enumerate(query.app_ids):
            check.require(bool(app_id), f"app_ids[{index}]", "must not be empty")
        check.raise_if_any()
        return resolved, query.batch_size or DEFAULT_BATCH

    async def stream(self, query: ExportQuery) -> AsyncIterator[ExportBatch]:
        identifiers, batch_size = self._validate(query)
        fingerprint = _query_fingerprint(query)
        position = (
            pagination.decode(query.cursor, _CURSOR_KIND, fingerprint, "cursor", "INVALID_CURSOR")
            if query.cursor
            else None
        )
        if query.segment is not None:
            batches = self._by_segment(query, query.segment, batch_size, position, fingerprint)
        else:
            batches = self._by_identifiers(query, identifiers, batch_size, position, fingerprint)
        async for batch in batches:
            yield batch

    async def _by_identifiers(
        self,
        query: ExportQuery,
        identifiers: list[Identifier],
        batch_size: int,
        position: object,
        fingerprint: str,
    ) -> AsyncIterator[ExportBatch]:
        start = position if isinstance(position, int) else 0
        if position is not None and not (
            isinstance(position, int) and 0 <= start <= len(identifiers)
        ):
            raise _bad_cursor()
        apps: dict[str, App | None] = {}
        for offset in range(start, len(identifiers), batch_size):
            chunk = identifiers[offset : offset + batch_size]
            found = await self.users.find_many(chunk)
            users = [user for user in found if user is not None]
            exported = await self._with_tokens(users, query, apps)
            yield ExportBatch(
                users=exported,
                not_found=[
                    identifier
                    for identifier, user in zip(chunk, found, strict=True)
                    if user is None
                ],
                cursor=pagination.encode(_CURSOR_KIND, fingerprint, offset + len(chunk)),
            )

    async def _by_segment(
        self,
        query: ExportQuery,
        segment: segments.Segment,
        batch_size: int,
        position: object,
        fingerprint: str,
    ) -> AsyncIterator[ExportBatch]:
        shard, after = 0, ""
        if position is not None:
            if not (
                isinstance(position, list)
                and len(position) == 2
                and isinstance(position[0], int)
                and isinstance(position[1], str)
                and 0 <= position[0] <= keys.USER_SHARDS
            ):
                raise _bad_cursor()
            shard, after = position
        apps: dict[str, App | None] = {}
        pending: list[tuple[ExportedUser, list[int | str]]] = []
        sent_any = False
        while shard < keys.USER_SHARDS:
            ids = await self.users.store.ids_in_shard(shard, after, batch_size)
            if not ids:
                shard, after = shard + 1, ""
                continue
            after = ids[-1]
            candidates = [
                user
                for user in await self.users.store.get_many(ids)
                if user is not None and segments.attributes_match(segment, user)
            ]
            exported = await self._with_tokens(candidates, query, apps, segment.push_enabled)
            pending.extend((user, [shard, user.user.external_id]) for user in exported)
            while len(pending) >= batch_size:
                sent, pending = pending[:batch_size], pending[batch_size:]
                sent_any = True
                yield ExportBatch(
                    users=[user for user, _ in sent],
                    cursor=pagination.encode(_CURSOR_KIND, fingerprint, sent[-1][1]),
                )
        if pending or not sent_any:
            yield ExportBatch(
                users=[user for user, _ in pending],
                cursor=pagination.encode(_CURSOR_KIND, fingerprint, [keys.USER_SHARDS, ""]),
            )

    async def _with_tokens(
        self,
        users: Sequence[User],
        query: ExportQuery,
        apps: dict[str, App | None],
        push_condition: segments.PushCondition | None = None,
    ) -> list[ExportedUser]:
        """The users (in order) with their token-holding devices, keeping only those
        that satisfy the push condition."""
        all_devices = [
            found.devices
            for found in await self.registration.users_devices(
                [user.external_id for user in users], full_tokens=query.full_tokens
            )
        ]
        unknown = {device.app_id for devices in all_devices for device in devices} - apps.keys()
        if unknown:
            found_apps = await self.apps.get_many(sorted(unknown))
            apps.update({app_id: found_apps.get(app_id) for app_id in unknown})
        wanted_apps = set(query.app_ids)
        exported: list[ExportedUser] = []
        for user, devices in zip(users, all_devices, strict=True):
            if not segments.push_matches(push_condition, devices):
                continue
            tokens = []
            for device in devices:
                if device.capability == platform_pb2.PUSH_CAPABILITY_NONE:
                    continue
                if wanted_apps and device.app_id not in wanted_apps:
                    continue
                app = apps.get(device.app_id)
                tokens.append(ExportedToken(device, app.display_name if app else ""))
            exported.append(ExportedUser(user, tokens))
        return exported


def _bad_cursor() -> HeraldError:
    return InvalidArgument(
        "cursor was not issued by this export",
        [FieldViolation("cursor", "is not a cursor of this export")],
        reason="INVALID_CURSOR",
    )
