"""ImportDevices: bulk registration for teams migrating from another provider.

The fast path handles a whole message at once: validate every device, read their
records with one pipelined HMGET per shard, read the owners of their tokens, claim the
free tokens (pipelined scripts), add the user index entries, then write the records
with one compare-and-set script call per shard (pipelined). Whatever does not fit the
fast path (a token held by another device, a device twice in one message, a record
that changed meanwhile) goes through the same per-device path as RegisterDevice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from services.core.errors import FieldViolation, InvalidArgument, Validator
from services.registration import changes, record
from services.registration.apps import AppDirectory
from services.registration.changes import Mutation
from services.registration.domain import Devices, now_ms
from services.registration.invalidation import ItemProblem, batch_too_large
from services.registration.model import DeviceRecord, Token
from services.registration.store import CONFIRMED, pending_token_values
from services.registration.tokens import token_digest
from services.registration.validation import DeviceInput, check_device, check_id, violations_reason

MAX_DEVICES_PER_MESSAGE = 5000
MAX_LAST_SEEN_AHEAD_MS = 3_600_000
MAX_REPORTED_ERRORS = 1000
SKIP_EXISTING = 2


@dataclass(frozen=True)
class ImportedDevice:
    device: DeviceInput
    last_seen_ms: int = 0


@dataclass(frozen=True)
class ImportMessage:
    app_id: str
    mode: int
    devices: list[ImportedDevice]


@dataclass
class ImportFailure:
    index: int
    device_id: str
    problem: ItemProblem


@dataclass
class ImportSummary:
    received: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[ImportFailure] = field(default_factory=list)
    errors_truncated: bool = False

    def fail(self, index: int, device_id: str, violations: list[FieldViolation]) -> None:
        self.failed += 1
        if len(self.errors) >= MAX_REPORTED_ERRORS:
            self.errors_truncated = True
            return
        problem = ItemProblem(
            grpc.StatusCode.INVALID_ARGUMENT.value[0],
            violations_reason(violations),
            "the device has invalid fields",
            violations,
        )
        self.errors.append(ImportFailure(index, device_id, problem))

    def count(self, old: DeviceRecord | None, mutation: Mutation) -> None:
        if mutation.created:
            self.created += 1
        elif old is not None and mutation.write:
            self.updated += 1
        else:
            self.skipped += 1


def _registration(
    old: DeviceRecord | None, item: ImportedDevice, token: Token | None, now: int, mode: int
) -> Mutation:
    if old is not None and mode == SKIP_EXISTING:
        return Mutation(old, write=False)
    # A migrated device's history is the previous provider's: a REGISTERED entry dated
    # from the import would say nothing, and it costs ~40 bytes per device (a fifth of
    # a record) at millions of devices. The user log still gets BOUND.
    mutation = changes.register(old, item.device, token, now, log_new_device=False)
    new = mutation.new
    assert new is not None
    if old is not None and not mutation.entries and new.update_ms == old.update_ms:
        return Mutation(old, write=False)  # identical: an import does not touch last_seen
    if item.last_seen_ms:
        new.last_seen_ms = item.last_seen_ms
    return mutation


def _leaves_index_entries(old: DeviceRecord | None, mutation: Mutation) -> bool:
    """Whether the write makes an index entry of the old record stale (token or user)."""
    if old is None or not mutation.write or mutation.new is None:
        return False
    new = mutation.new
    token_leaves = old.token is not None and (
        new.token is None or new.token.value != old.token.value
    )
    user_leaves = bool(old.user_id) and new.user_id != old.user_id
    return token_leaves or user_leaves


@dataclass
class _Pending:
    index: int
    item: ImportedDevice
    token: Token | None
    raw: bytes | None = None
    old: DeviceRecord | None = None
    mutation: Mutation | None = None


class Importer:
    def __init__(self, devices: Devices, apps: AppDirectory) -> None:
        self.devices = devices
        self.store = devices.store
        self.apps = apps

    async def run(self, messages: AsyncIterator[ImportMessage]) -> ImportSummary:
        summary = ImportSummary()
        app_id = ""
        mode = 0
        async for message in messages:
            if not app_id:
                check = Validator()
                check_id(check, "app_id", message.app_id)
                check.raise_if_any("the first message must name the app")
                app_id, mode = message.app_id, message.mode
                await self.apps.require_app(app_id)
                await self.store.remember_app(app_id)
            elif message.app_id and message.app_id != app_id:
                raise InvalidArgument(
                    "every message of an import must name the same app",
                    [FieldViolation("app_id", f"must be empty or {app_id!r}")],
                )
            if not 1 <= len(message.devices) <= MAX_DEVICES_PER_MESSAGE:
                raise batch_too_large("devices", len(message.devices), MAX_DEVICES_PER_MESSAGE)
            await self._message(app_id, mode, message.devices, summary)
        if not app_id:
            raise InvalidArgument(
                "an import needs at least one message", [FieldViolation("app_id", "is required")]
            )
        return summary

    async def _message(
        self, app_id: str, mode: int, items: list[ImportedDevice], summary: ImportSummary
    ) -> None:
        now = now_ms()
        fast: list[_Pending] = []
        slow: list[_Pending] = []
        seen_devices: set[str] = set()
        for item in items:
            index = summary.received
            summary.received += 1
            check = Validator()
            token = check_device(check, "", item.device)
            if not 0 <= item.last_seen_ms <= now + MAX_LAST_SEEN_AHEAD_MS:
                # Checked with the rest, before any write: the record stores unsigned
                # milliseconds, and a time in the future would make the device look
                # active forever to "seen after" audiences.
                check.add("last_seen_time", "must be after 1970 and at most one hour in the future")
            if check.violations:
                summary.fail(index, item.device.device_id, check.violations)
                continue
            pending = _Pending(index, item, token)
            if item.device.device_id in seen_devices:
                slow.append(pending)  # the same device twice: apply in order, one by one
            else:
                seen_devices.add(item.device.device_id)
                fast.append(pending)

        raws = await self.store.get_many(app_id, [p.item.device.device_id for p in fast])
        kept: list[_Pending] = []
        for pending, raw in zip(fast, raws, strict=True):
            pending.raw = raw
            pending.old = record.unpack(raw) if raw else None
            pending.mutation = _registration(pending.old, pending.item, pending.token, now, mode)
            if _leaves_index_entries(pending.old, pending.mutation):
                # An existing device losing its token or user: the one-by-one path
                # reads the entries to release before its write (domain.mutate).
                slow.append(pending)
            else:
                kept.append(pending)
        fast = kept

        ready, claims = await self._claim_tokens(app_id, fast, slow)
        await self.store.add_user_devices(
            (p.mutation.new.user_id, app_id, p.item.device.device_id)
            for p in ready
            if p.mutation
            and p.mutation.new
            and p.mutation.new.user_id
            and p.mutation.new.user_id != (p.old.user_id if p.old else "")
        )
        writes = [p for p in ready if p.mutation and p.mutation.write]
        conflicted = set(
            await self.store.compare_and_set_many(
                app_id,
                [
                    (p.item.device.device_id, p.raw, record.pack(p.mutation.new))  # type: ignore[union-attr, arg-type]
                    for p in writes
                ],
            )
        )
        written = [p for position, p in enumerate(writes) if position not in conflicted]
        slow += [p for position, p in enumerate(writes) if position in conflicted]
        # Confirm the claims of the records that were written (see domain.mutate); a
        # claim another device took meanwhile makes this device give the token up.
        confirmations = [(p, claims[id(p)]) for p in written if id(p) in claims]
        lost = await self.store.set_token_entries(
            app_id,
            [
                (digest, value, bytes([CONFIRMED]) + value[1:])
                for _, (digest, value) in confirmations
            ],
        )
        logs: list[tuple[str, bytes]] = []
        for pending in written:
            assert pending.mutation is not None
            summary.count(pending.old, pending.mutation)
            device_id = pending.item.device.device_id
            logs += [
                (user, record.pack_user_entry(app_id, device_id, entry))
                for entry in pending.mutation.entries
                for user in dict.fromkeys((entry.from_user, entry.to_user))
                if user
            ]
        for pending in ready:
            if pending.mutation is not None and not pending.mutation.write:
                summary.skipped += 1
        await self.store.append_user_logs(logs)
        for position in sorted(lost):
            pending, _ = confirmations[position]
            assert pending.token is not None
            await self.devices.strip_token(
                app_id,
                pending.item.device.device_id,
                pending.token.value,
                "registered_on_another_device",
            )
        for pending in sorted(slow, key=lambda p: p.index):
            await self._one_by_one(app_id, mode, pending, now, summary)

    async def _claim_tokens(
        self, app_id: str, fast: list[_Pending], slow: list[_Pending]
    ) -> tuple[list[_Pending], dict[int, tuple[bytes, bytes]]]:
        """Claims the tokens the fast path writes; hands contested ones to the slow path.
        Returns the ready devices and, by id() of each, the (digest, pending value) of
        the claim it made."""
        claims: list[tuple[_Pending, bytes, bytes]] = []
        ready: list[_Pending] = []
        seen_tokens: set[bytes] = set()
        for pending in fast:
            new = pending.mutation.new if pending.mutation else None
            old_token = pending.old.token if pending.old else None
            if (
                pending.mutation is None
                or not pending.mutation.write
                or new is None
                or new.token is None
                or (old_token is not None and old_token.value == new.token.value)
            ):
                ready.append(pending)
                continue
            digest = token_digest(app_id, new.token.value)
            if digest in seen_tokens:
                slow.append(pending)  # two devices of this message share a token
                continue
            seen_tokens.add(digest)
            claims.append((pending, digest, b""))
        values = pending_token_values([p.item.device.device_id for p, _, _ in claims])
        claims = [(p, digest, value) for (p, digest, _), value in zip(claims, values, strict=True)]
        contested = await self.store.claim_free_tokens(
            app_id, [(digest, value) for _, digest, value in claims]
        )
        made: dict[int, tuple[bytes, bytes]] = {}
        for position, (pending, digest, value) in enumerate(claims):
            # Held by another device: the slow path strips it there, then claims it.
            if position in contested:
                slow.append(pending)
            else:
                ready.append(pending)
                made[id(pending)] = (digest, value)
        return ready, made

    async def _one_by_one(
        self, app_id: str, mode: int, pending: _Pending, now: int, summary: ImportSummary
    ) -> None:
        old, mutation = await self.devices.mutate(
            app_id,
            pending.item.device.device_id,
            lambda old: _registration(old, pending.item, pending.token, now, mode),
        )
        summary.count(old, mutation)
