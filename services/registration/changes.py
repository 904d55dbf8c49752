"""Pure functions that compute a device's next record and the change log entries.

No I/O here: domain.py reads the record, calls one of these, and writes the result
with a compare-and-set, so every rule can be unit-tested on plain values.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from herald.registration.v1 import registration_service_pb2
from services.registration import rules
from services.registration.model import (
    AUTHORIZED,
    BOUND,
    INVALIDATED,
    IOS,
    KIND_OF_PLATFORM,
    MOVED,
    PERMISSION_CHANGED,
    REGISTERED,
    ROTATED,
    UNBOUND,
    UNREGISTERED,
    WEB,
    ChangeEntry,
    DeviceRecord,
    Token,
)
from services.registration.tokens import redact_token
from services.registration.validation import DeviceInput

TOKEN_UNCHANGED = registration_service_pb2.TOKEN_UPDATE_UNCHANGED
TOKEN_NEW = registration_service_pb2.TOKEN_UPDATE_NEW
TOKEN_ROTATED = registration_service_pb2.TOKEN_UPDATE_ROTATED
TOKEN_ABSENT = registration_service_pb2.TOKEN_UPDATE_ABSENT


class ChangeLog:
    """Entries of one call: same timestamp, consecutive nonces (so ids stay unique)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.entries: list[ChangeEntry] = []
        self._nonce = random.getrandbits(16)

    def add(self, kind: int, **fields: object) -> None:
        self._nonce = (self._nonce + 1) & 0xFFFF
        self.entries.append(
            ChangeEntry(kind=kind, change_ms=self.now_ms, nonce=self._nonce, **fields)  # type: ignore[arg-type]
        )


@dataclass
class Mutation:
    """What a change does to one device: the next record (None deletes it) and the log."""

    new: DeviceRecord | None
    entries: list[ChangeEntry] = field(default_factory=list)
    write: bool = True
    created: bool = False
    token_update: int = 0
    previous_user_id: str = ""
    previous_capability: int = 0


def _same_token(a: Token | None, b: Token | None) -> bool:
    return a == b


def _with_log(record: DeviceRecord, log: ChangeLog) -> DeviceRecord:
    record.log = [*record.log, *log.entries]
    return record


def register(
    old: DeviceRecord | None,
    given: DeviceInput,
    token: Token | None,
    now: int,
    log_new_device: bool = True,
) -> Mutation:
    """RegisterDevice and one imported device: an idempotent upsert.

    `log_new_device=False` (imports) leaves out the REGISTERED entry of a new device:
    a migrated device's history is the previous provider's (importer.py)."""
    log = ChangeLog(now)
    if old is None:
        status = given.authorization_status or rules.default_authorization(
            given.platform, given.os_version, token is not None
        )
        new = DeviceRecord(
            platform=given.platform,
            os_version=given.os_version,
            authorization_status=status,
            create_ms=now,
            update_ms=now,
            last_seen_ms=now,
            app_version=given.app_version,
            locale=given.locale,
            time_zone=given.time_zone,
            user_id=given.user_id,
            apns_environment=given.apns_environment if given.platform == IOS else 0,
            token=token,
            token_update_ms=now if token else 0,
            token_confirm_ms=now if token else 0,
        )
        redacted = redact_token(token)
        if token is not None and log_new_device:
            log.add(
                REGISTERED, to_user=given.user_id, from_user=given.user_id, redacted_token=redacted
            )
        if given.user_id:
            log.add(BOUND, to_user=given.user_id, redacted_token=redacted, reason="login")
        return Mutation(
            _with_log(new, log),
            log.entries,
            created=True,
            token_update=TOKEN_NEW if token else TOKEN_ABSENT,
        )

    new = replace(old, log=list(old.log))
    changed = False
    if given.platform != old.platform:
        new.platform = given.platform
        changed = True
        if (
            token is None
            and old.token is not None
            and old.token.kind != KIND_OF_PLATFORM[given.platform]
        ):
            new.token = None
            log.add(
                UNREGISTERED,
                from_user=old.user_id,
                to_user=old.user_id,
                redacted_token=redact_token(old.token),
                reason="platform_changed",
            )
    # Empty optional fields keep the stored value: a flush from an older SDK that does
    # not send them must not erase what a newer one reported.
    for name in ("os_version", "app_version", "locale", "time_zone"):
        value = getattr(given, name)
        if value and value != getattr(new, name):
            setattr(new, name, value)
            changed = True
    status = given.authorization_status
    if token is not None and new.platform == WEB and not status:
        status = AUTHORIZED  # a subscription is the proof of the opt-in
    if status and status != new.authorization_status:
        new.authorization_status = status
        changed = True
        log.add(
            PERMISSION_CHANGED,
            from_user=new.user_id,
            to_user=new.user_id,
            redacted_token=redact_token(token or new.token),
            authorization_status=status,
        )
    token_update = _apply_token(new, token, given.apns_environment, log, now)
    changed = changed or token_update in (TOKEN_NEW, TOKEN_ROTATED)
    changed = _web_opt_out(new, log, now) or changed
    previous_user = ""
    if given.user_id and given.user_id != new.user_id:
        previous_user = new.user_id
        log.add(
            MOVED if previous_user else BOUND,
            from_user=previous_user,
            to_user=given.user_id,
            redacted_token=redact_token(new.token),
            reason="login",
        )
        new.user_id = given.user_id
        changed = True
    new.last_seen_ms = now
    if changed:
        new.update_ms = now
    return Mutation(
        _with_log(new, log), log.entries, token_update=token_update, previous_user_id=previous_user
    )


def _apply_token(
    new: DeviceRecord, token: Token | None, environment: int, log: ChangeLog, now: int
) -> int:
    """Stores a token carried by a call; returns the TokenUpdate."""
    if token is None:
        return TOKEN_UNCHANGED if new.token is not None else TOKEN_ABSENT
    if new.platform == IOS and environment and environment != new.apns_environment:
        new.apns_environment = environment
        if _same_token(new.token, token):
            new.update_ms = now
    if _same_token(new.token, token):
        new.token_confirm_ms = now
        return TOKEN_UNCHANGED
    previous = new.token
    new.token = token
    new.token_update_ms = now
    new.token_confirm_ms = now
    if previous is None:
        log.add(
            REGISTERED,
            from_user=new.user_id,
            to_user=new.user_id,
            redacted_token=redact_token(token),
        )
        return TOKEN_NEW
    log.add(
        ROTATED,
        from_user=new.user_id,
        to_user=new.user_id,
        redacted_token=redact_token(token),
        previous_redacted_token=redact_token(previous),
    )
    return TOKEN_ROTATED


def update_permission(
    old: DeviceRecord, status: int, token: Token | None, environment: int, now: int
) -> Mutation:
    log = ChangeLog(now)
    previous_capability, _ = rules.capability(old)
    new = replace(old, log=list(old.log))
    changed = False
    if status != new.authorization_status:
        new.authorization_status = status
        changed = True
        log.add(
            PERMISSION_CHANGED,
            from_user=new.user_id,
            to_user=new.user_id,
            redacted_token=redact_token(token or new.token),
            authorization_status=status,
        )
    token_update = _apply_token(new, token, environment, log, now)
    changed = changed or token_update in (TOKEN_NEW, TOKEN_ROTATED)
    changed = _web_opt_out(new, log, now) or changed
    if changed:
        new.update_ms = now
    return Mutation(
        _with_log(new, log),
        log.entries,
        write=changed,
        token_update=token_update,
        previous_capability=previous_capability,
    )


def _web_opt_out(new: DeviceRecord, log: ChangeLog, now: int) -> bool:
    """Web has no background channel: a denial (through RegisterDevice or
    UpdatePermission alike) ends the subscription itself. Returns whether it did."""
    if not (
        rules.web_opt_out_removes_subscription(new.platform, new.authorization_status)
        and new.token is not None
    ):
        return False
    log.add(
        UNREGISTERED,
        from_user=new.user_id,
        to_user=new.user_id,
        redacted_token=redact_token(new.token),
        reason="opt_out",
    )
    new.token = None
    new.token_update_ms = now
    return True


def assign_user(old: DeviceRecord, user_id: str, reason: str, now: int) -> Mutation:
    if user_id == old.user_id:
        return Mutation(old, write=False, previous_user_id=old.user_id)
    log = ChangeLog(now)
    kind = UNBOUND if not user_id else (MOVED if old.user_id else BOUND)
    log.add(
        kind,
        from_user=old.user_id,
        to_user=user_id,
        redacted_token=redact_token(old.token),
        reason=reason or ("logout" if not user_id else "login"),
    )
    new = replace(old, log=list(old.log), user_id=user_id, update_ms=now)
    return Mutation(_with_log(new, log), log.entries, previous_user_id=old.user_id)


def remove_token(
    old: DeviceRecord,
    kind: int,
    reason: str,
    now: int,
    provider: int = 0,
    provider_ms: int = 0,
) -> Mutation:
    """The token leaves the device (invalidation, or another device registered it)."""
    log = ChangeLog(now)
    log.add(
        kind,
        from_user=old.user_id,
        to_user=old.user_id,
        redacted_token=redact_token(old.token),
        reason=reason,
        provider=provider,
        provider_ms=provider_ms,
    )
    new = replace(old, log=list(old.log), token=None, token_update_ms=now, update_ms=now)
    return Mutation(_with_log(new, log), log.entries)


def invalidate(
    old: DeviceRecord, reason: str, provider: int, provider_ms: int, now: int
) -> Mutation:
    return remove_token(old, INVALIDATED, reason, now, provider, provider_ms)


def unregister(old: DeviceRecord, reason: str, now: int) -> Mutation:
    log = ChangeLog(now)
    log.add(
        UNREGISTERED,
        from_user=old.user_id,
        redacted_token=redact_token(old.token),
        reason=reason or "unregistered",
    )
    return Mutation(None, log.entries, previous_user_id=old.user_id)
