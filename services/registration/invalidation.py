"""InvalidateTokens: remove tokens a provider reported dead, unless re-registered since.

The token is found by its canonical string through the token index; the device_id
hint is only a second candidate, and both are verified against the device record.
The decision (is the token still this device's, was it confirmed before the
provider's timestamp?) and the removal are one compare-and-set of the record: a
registration that lands between the read and the write changes the record, the
compare fails, and the item is decided again on the fresh record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from herald.registration.v1 import registration_service_pb2
from services.core.errors import Aborted, FieldViolation, InvalidArgument, Validator
from services.registration import changes
from services.registration.changes import Mutation
from services.registration.domain import Devices, now_ms
from services.registration.model import PROVIDER_OF_KIND, DeviceRecord
from services.registration.record import clip_utf8
from services.registration.tokens import (
    TOKEN_PLATFORM_MISMATCH,
    TokenInput,
    check_token,
    token_digest,
)
from services.registration.validation import (
    MAX_REASON,
    check_id,
    utf8_length,
    violations_reason,
)

MAX_INVALIDATIONS = 1000
MAX_PROVIDER_TIME_AHEAD_MS = 3_600_000
REMOVED = registration_service_pb2.INVALIDATION_OUTCOME_REMOVED
KEPT = registration_service_pb2.INVALIDATION_OUTCOME_KEPT_REREGISTERED
NOT_FOUND = registration_service_pb2.INVALIDATION_OUTCOME_NOT_FOUND
ERROR = registration_service_pb2.INVALIDATION_OUTCOME_ERROR


@dataclass(frozen=True)
class Invalidation:
    app_id: str
    token: TokenInput | None
    provider: int
    provider_reason: str
    provider_ms: int  # 0 when provider_time is unset
    device_id: str = ""
    notification_id: str = ""


@dataclass
class ItemProblem:
    code: int
    reason: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)


@dataclass
class InvalidationResult:
    outcome: int
    device_id: str = ""
    user_id: str = ""
    problem: ItemProblem | None = None


def batch_too_large(field_path: str, count: int, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"a batch holds 1 to {limit} items, got {count}",
        [FieldViolation(field_path, f"must hold 1 to {limit} items", "BATCH_TOO_LARGE")],
        "BATCH_TOO_LARGE",
        {"limit": str(limit)},
    )


def _problem(check: Validator) -> ItemProblem:
    return ItemProblem(
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        violations_reason(check.violations),
        "the invalidation has invalid fields",
        list(check.violations),
    )


class Invalidator:
    def __init__(self, devices: Devices) -> None:
        self.devices = devices
        self.store = devices.store

    async def invalidate(self, items: list[Invalidation]) -> list[InvalidationResult]:
        if not 1 <= len(items) <= MAX_INVALIDATIONS:
            raise batch_too_large("invalidations", len(items), MAX_INVALIDATIONS)
        results: list[InvalidationResult] = []
        for item in items:
            try:
                results.append(await self._one(item))
            except Aborted as error:
                # Items are independent: one that fails (a device that kept changing:
                # CONCURRENT_MODIFICATION) is reported on its own, the others stand.
                results.append(
                    InvalidationResult(
                        ERROR,
                        problem=ItemProblem(error.code.value[0], error.reason, error.message),
                    )
                )
        return results

    async def _one(self, item: Invalidation) -> InvalidationResult:
        check = Validator()
        check_id(check, "app_id", item.app_id)
        token = check_token(check, "token", item.token) if item.token else None
        if item.token is None:
            check.add("token", "is required")
        if item.provider not in PROVIDER_OF_KIND.values():
            check.add("provider", "must be PROVIDER_APNS, PROVIDER_FCM or PROVIDER_WEB_PUSH")
        elif token is not None and PROVIDER_OF_KIND[token.kind] != item.provider:
            check.add("provider", "does not serve this kind of token", TOKEN_PLATFORM_MISMATCH)
        if not item.provider_reason or utf8_length(item.provider_reason) > MAX_REASON:
            check.add("provider_reason", f"is required, at most {MAX_REASON} bytes in UTF-8")
        if item.provider_ms == 0:
            check.add("provider_time", "is required")
        elif not 0 < item.provider_ms <= now_ms() + MAX_PROVIDER_TIME_AHEAD_MS:
            # A provider time far in the future would beat every re-registration and
            # remove a token registered a second ago; an hour covers clock skew.
            check.add(
                "provider_time",
                "must be after 1970 and at most one hour in the future",
            )
        if check.violations or token is None:
            return InvalidationResult(ERROR, problem=_problem(check))

        digest = token_digest(item.app_id, token.value)
        entry = await self.store.token_entry(item.app_id, digest)
        owner = entry.device_id if entry else ""
        candidates = [owner] if owner else []
        if item.device_id and item.device_id != owner:
            # A device that still holds the token without the index pointing at it
            # (two devices registering one token in the same milliseconds, the loser
            # interrupted before it gave the token up) is found through the hint.
            candidates.append(item.device_id)
        for device_id in candidates:
            result = await self._decide(item, token.value, device_id)
            if result is not None:
                return result
        if entry is not None and entry.stale(now_ms()):
            # The entry names a device that does not hold the token. Removed only when
            # old enough that no registration can still be between its claim and its
            # record write, and only if it is still the very value read here.
            await self.store.set_token_entries(item.app_id, [(digest, entry.raw, b"")])
        return InvalidationResult(NOT_FOUND)

    async def _decide(
        self, item: Invalidation, canonical: str, device_id: str
    ) -> InvalidationResult | None:
        now = now_ms()
        decided: list[InvalidationResult] = []

        def change(old: DeviceRecord | None) -> Mutation:
            decided.clear()
            if old is None or old.token is None or old.token.value != canonical:
                return Mutation(old, write=False)
            if old.token_confirm_ms >= item.provider_ms:
                decided.append(InvalidationResult(KEPT, device_id, old.user_id))
                return Mutation(old, write=False)
            decided.append(InvalidationResult(REMOVED, device_id, old.user_id))
            reason = item.provider_reason
            if item.notification_id:
                reason = clip_utf8(f"{reason} (notification {item.notification_id})", MAX_REASON)
            return changes.invalidate(old, reason, item.provider, item.provider_ms, now)

        await self.devices.mutate(item.app_id, device_id, change)
        return decided[0] if decided else None
