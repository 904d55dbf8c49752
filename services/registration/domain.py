"""Registration's use cases for single devices: read, compute (changes.py), write.

Every write is: read the record, compute the next one, make the cross-slot indexes
ready for it (token index claimed, user index entry added), compare-and-set the record
(retrying on a concurrent change), then clean up what the change made stale (old
token index entry, old user index entry) and append the user log. A crash at any
step leaves at worst an index entry that points at a record which does not confirm
it; readers verify and ignore such entries (docs/keys/registration.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from services.core.errors import Aborted, FailedPrecondition, NotFound, Validator
from services.registration import changes, record
from services.registration.apps import AppDirectory
from services.registration.changes import Mutation
from services.registration.model import IOS, UNREGISTERED, WEB, DeviceRecord, Token
from services.registration.store import (
    CONFIRMED,
    IndexEntry,
    RegistrationStore,
    token_value,
    user_member,
)
from services.registration.tokens import TokenInput, token_digest
from services.registration.validation import (
    MAX_APP_ID,
    MAX_REASON,
    MAX_SECRET,
    DeviceInput,
    check_device,
    check_id,
    check_optional_text,
    check_permission_change,
    fail,
)

MAX_ATTEMPTS = 8


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def device_not_found(app_id: str, device_id: str) -> NotFound:
    return NotFound(
        "DEVICE_NOT_FOUND",
        f"device {device_id!r} is not registered in app {app_id!r}",
        {"app_id": app_id, "device_id": device_id},
    )


def _concurrent(app_id: str, device_id: str) -> Aborted:
    return Aborted(
        "CONCURRENT_MODIFICATION",
        "the device kept changing under this call; retry",
        {"app_id": app_id, "device_id": device_id},
    )


class _Unread:
    """Marks "the caller has not read the record" (None means "read: absent")."""


UNREAD = _Unread()


class _SecretNeeded(Exception):
    """Raised inside a change function: the stored record turned out to need the secret."""


def stores_new_token_on_bound_device(old: DeviceRecord | None, token: Token | None) -> bool:
    """A call that would store a token other than the current one on a device already
    bound to a user must carry the app's client secret (anti-hijack rule)."""
    return (
        old is not None
        and bool(old.user_id)
        and token is not None
        and (old.token is None or old.token != token)
    )


@dataclass(frozen=True)
class RegisterResult:
    record: DeviceRecord
    created: bool
    token_update: int
    previous_user_id: str


class Devices:
    def __init__(self, store: RegistrationStore, apps: AppDirectory) -> None:
        self.store = store
        self.apps = apps

    # -- the write engine -----------------------------------------------------------

    async def mutate(
        self,
        app_id: str,
        device_id: str,
        change: Callable[[DeviceRecord | None], Mutation],
        first_read: bytes | _Unread | None = UNREAD,
    ) -> tuple[DeviceRecord | None, Mutation]:
        """Applies `change` to the stored record with compare-and-set; returns (old, result).

        Order (docs/keys/registration.md, "Cross-slot indexes"): 1. claim the new token
        (pending) and add the new user's index member, 2. read the index values this
        write makes stale, 3. compare-and-set the record, 4. confirm the token claim
        (a failed confirm means another device claimed the token meanwhile: this device
        gives it up), 5. release exactly the values read in 2.

        `first_read` is the stored record when the caller just read it (the flush
        script returns it), saving the first read."""
        for attempt in range(MAX_ATTEMPTS):
            if attempt == 0 and not isinstance(first_read, _Unread):
                raw = first_read
            else:
                raw = await self.store.get(app_id, device_id)
            old = record.unpack(raw) if raw else None
            mutation = change(old)
            if not mutation.write or (old is None and mutation.new is None):
                return old, mutation
            new = mutation.new
            old_token = old.token if old else None
            old_user = old.user_id if old else ""
            claim: tuple[bytes, bytes] | None = None
            if (
                new is not None
                and new.token is not None
                and (old_token is None or old_token.value != new.token.value)
            ):
                claim = await self._claim_token(app_id, device_id, new.token)
            if new is not None and new.user_id and new.user_id != old_user:
                await self.store.add_user_device(new.user_id, app_id, device_id)
            if old is None:
                await self.store.remember_app(app_id)
            leaving_token = (
                old_token
                if old_token is not None
                and (new is None or new.token is None or new.token.value != old_token.value)
                else None
            )
            leaving_user = old_user if old_user and (new is None or new.user_id != old_user) else ""
            release = await self.store.release_values(
                app_id,
                device_id,
                token_digest(app_id, leaving_token.value) if leaving_token else None,
                leaving_user,
            )
            packed = record.pack(new) if new is not None else None
            if await self.store.compare_and_set(app_id, device_id, raw, packed):
                await self.after_write(app_id, device_id, old, mutation, claim, release)
                return old, mutation
        raise _concurrent(app_id, device_id)

    async def after_write(
        self,
        app_id: str,
        device_id: str,
        old: DeviceRecord | None,
        mutation: Mutation,
        claim: tuple[bytes, bytes] | None,
        release: tuple[IndexEntry | None, IndexEntry | None],
    ) -> None:
        token_entry, user_entry = release
        index_changes: list[tuple[bytes, bytes, bytes]] = []
        if claim is not None:
            digest, pending = claim
            index_changes.append((digest, pending, bytes([CONFIRMED]) + pending[1:]))
        if token_entry is not None and old is not None and old.token is not None:
            index_changes.append((token_digest(app_id, old.token.value), token_entry.raw, b""))
        lost = await self.store.set_token_entries(app_id, index_changes) if index_changes else set()
        if user_entry is not None and old is not None:
            await self.store.remove_user_entries(
                [(old.user_id, user_member(app_id, device_id), user_entry.raw)]
            )
        await self.store.append_user_logs(
            [
                (user, record.pack_user_entry(app_id, device_id, entry))
                for entry in mutation.entries
                for user in dict.fromkeys((entry.from_user, entry.to_user))
                if user
            ]
        )
        if claim is not None and 0 in lost and mutation.new is not None:
            # Another device claimed this token between our claim and our confirm: the
            # newest claim owns it, so this device gives it up (the other device's
            # strip may have run before our record held the token).
            assert mutation.new.token is not None
            await self.strip_token(
                app_id, device_id, mutation.new.token.value, "registered_on_another_device"
            )

    async def _claim_token(self, app_id: str, device_id: str, token: Token) -> tuple[bytes, bytes]:
        """Makes `device_id` the token's only holder (the newest registration owns it);
        returns (digest, the pending value written), confirmed after the record write."""
        digest = token_digest(app_id, token.value)
        # Optimistic: most claims are of a token no device holds, and the claim script
        # answers with the entry it found instead, so no read comes first.
        entry: IndexEntry | None = None
        for _ in range(MAX_ATTEMPTS):
            if entry is not None and entry.device_id != device_id:
                await self.strip_token(
                    app_id, entry.device_id, token.value, "registered_on_another_device"
                )
            # Even when the entry already names this device, a fresh value is written:
            # a release or cleanup that read the old value must not remove this claim.
            pending = token_value(device_id)
            claimed, entry = await self.store.claim_token(
                app_id, digest, entry.raw if entry else b"", pending
            )
            if claimed:
                return digest, pending
        raise _concurrent(app_id, device_id)

    async def strip_token(self, app_id: str, device_id: str, canonical: str, reason: str) -> None:
        """Removes the token from a device that still holds it (it moved elsewhere)."""
        now = now_ms()

        def change(old: DeviceRecord | None) -> Mutation:
            if old is None or old.token is None or old.token.value != canonical:
                return Mutation(old, write=False)
            return changes.remove_token(old, UNREGISTERED, reason, now)

        await self.mutate(app_id, device_id, change)

    # -- RPCs -----------------------------------------------------------------------

    async def register(self, app_id: str, given: DeviceInput, client_secret: str) -> RegisterResult:
        check = Validator()
        check_id(check, "app_id", app_id)
        token = check_device(check, "", given)
        check_optional_text(check, "client_secret", client_secret, MAX_SECRET)
        fail(check)
        await self.apps.require_app(app_id)
        verified = False
        if given.user_id:
            await self.apps.require_client_secret(app_id, client_secret)
            verified = True
        now = now_ms()
        flushed, stored = await self._flush(app_id, given, token, now)
        if flushed is not None:
            return flushed

        def change(old: DeviceRecord | None) -> Mutation:
            if not verified and stores_new_token_on_bound_device(old, token):
                raise _SecretNeeded
            return changes.register(old, given, token, now)

        try:
            _, mutation = await self.mutate(app_id, given.device_id, change, stored)
        except _SecretNeeded:
            # The device is bound to a user and this call would put another token on
            # it: without the secret anyone knowing the device id could redirect that
            # user's notifications to their own token (docs/registration.md).
            await self.apps.require_client_secret(app_id, client_secret)
            verified = True
            _, mutation = await self.mutate(app_id, given.device_id, change)
        assert mutation.new is not None  # registration never deletes
        return RegisterResult(
            mutation.new, mutation.created, mutation.token_update, mutation.previous_user_id
        )

    async def _flush(
        self, app_id: str, given: DeviceInput, token: Token | None, now: int
    ) -> tuple[RegisterResult | None, bytes | _Unread | None]:
        """A session-start flush that changes nothing but last_seen (and the token's
        confirm time), in one script call: (its result, None) when it was one, else
        (None, the stored record the script returned, for `mutate`).

        The script applies exactly what changes.register does when the stored record
        already says everything the call says: same platform and token (and APNs
        environment), no other status, no other text, no other user. Web devices take
        the general path (a Web denial ends the subscription, see changes.py)."""
        if given.platform == WEB:
            return None, UNREAD
        written, stored = await self.store.flush(
            app_id,
            given.device_id,
            record.flush_arguments(
                given.platform,
                given.authorization_status,
                given.apns_environment if given.platform == IOS and token is not None else 0,
                (given.os_version, given.app_version, given.locale, given.time_zone, given.user_id),
                token,
                now,
            ),
        )
        if written is None:
            return None, stored
        new = record.unpack(written)
        update = changes.TOKEN_UNCHANGED if new.token is not None else changes.TOKEN_ABSENT
        return RegisterResult(new, False, update, ""), None

    async def update_permission(
        self,
        app_id: str,
        device_id: str,
        status: int,
        token: TokenInput | None,
        environment: int,
        client_secret: str = "",
    ) -> tuple[DeviceRecord, int]:
        check = Validator()
        check_id(check, "app_id", app_id)
        check_id(check, "device_id", device_id)
        check_optional_text(check, "client_secret", client_secret, MAX_SECRET)
        if status not in range(1, 5):
            check.add("authorization_status", "must be a known status other than UNSPECIFIED")
        if environment not in range(0, 3):
            check.add("apns_environment", "is not a known ApnsEnvironment")
        fail(check)
        now = now_ms()
        verified = False

        def change(old: DeviceRecord | None) -> Mutation:
            if old is None:
                raise device_not_found(app_id, device_id)
            token_check = Validator()
            valid = check_permission_change(token_check, old.platform, status, token, environment)
            fail(token_check)
            if not verified and stores_new_token_on_bound_device(old, valid):
                raise _SecretNeeded
            return changes.update_permission(old, status, valid, environment, now)

        try:
            _, mutation = await self.mutate(app_id, device_id, change)
        except _SecretNeeded:
            await self.apps.require_client_secret(app_id, client_secret)
            verified = True
            _, mutation = await self.mutate(app_id, device_id, change)
        assert mutation.new is not None
        return mutation.new, mutation.previous_capability

    async def unregister(
        self, app_id: str, device_id: str, reason: str, allow_missing: bool
    ) -> tuple[bool, str]:
        check = Validator()
        check_id(check, "app_id", app_id)
        check_id(check, "device_id", device_id)
        check_optional_text(check, "reason", reason, MAX_REASON)
        fail(check)
        now = now_ms()

        def change(old: DeviceRecord | None) -> Mutation:
            if old is None:
                if allow_missing:
                    return Mutation(None, write=False)
                raise device_not_found(app_id, device_id)
            return changes.unregister(old, reason, now)

        old, mutation = await self.mutate(app_id, device_id, change)
        return old is not None, mutation.previous_user_id

    async def purge_app(self, app_id: str) -> int:
        """PurgeAppDevices: Identity deleted the app; its devices go with it."""
        check = Validator()
        check_id(check, "app_id", app_id, MAX_APP_ID)
        fail(check)
        self.apps.forget_app(app_id)
        return await self.store.purge_app(app_id)

    async def get(self, app_id: str, device_id: str) -> DeviceRecord:
        check = Validator()
        check_id(check, "app_id", app_id)
        check_id(check, "device_id", device_id)
        fail(check)
        raw = await self.store.get(app_id, device_id)
        if raw is None:
            raise device_not_found(app_id, device_id)
        return record.unpack(raw)

    async def assign_user(
        self,
        app_id: str,
        device_id: str,
        user_id: str,
        expected_user_id: str,
        expect_unbound: bool,
        reason: str,
    ) -> tuple[DeviceRecord, str, bool]:
        check = Validator()
        check_id(check, "app_id", app_id)
        check_id(check, "device_id", device_id)
        if user_id:
            check_optional_text(check, "user_id", user_id, 255)
        check_optional_text(check, "reason", reason, MAX_REASON)
        if expected_user_id and expect_unbound:
            check.add("expect_unbound", "cannot be combined with expected_user_id")
        fail(check)
        now = now_ms()

        def change(old: DeviceRecord | None) -> Mutation:
            if old is None:
                raise device_not_found(app_id, device_id)
            if (expected_user_id and old.user_id != expected_user_id) or (
                expect_unbound and old.user_id
            ):
                raise FailedPrecondition(
                    "DEVICE_USER_MISMATCH",
                    "the device is bound to another user than expected",
                    {"app_id": app_id, "device_id": device_id},
                )
            return changes.assign_user(old, user_id, reason, now)

        _, mutation = await self.mutate(app_id, device_id, change)
        assert mutation.new is not None
        return mutation.new, mutation.previous_user_id, mutation.write
