"""The rules for apps (tenants) and their client secrets.

A client secret is shown once (CreateApp, RotateClientSecret) and kept only as a
digest (see credentials.py). Rotation keeps the previous secret for an overlap window so
deployed apps can be updated; the one before it stops working at once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    HeraldError,
    InvalidArgument,
    NotFound,
    Validator,
)
from services.identity import credentials, pagination
from services.identity.app_model import App, LogoutPolicy, SecretMatch
from services.identity.app_store import AppStore, CreateOutcome, NewApp
from services.identity.clock import MICROS_PER_SECOND, now_us
from services.identity.validation import check_update_mask, is_app_id, is_time_zone

log = logging.getLogger("herald.identity.apps")

DEFAULT_OVERLAP_US = 24 * 3600 * MICROS_PER_SECOND
MAX_OVERLAP_US = 30 * 24 * 3600 * MICROS_PER_SECOND
UPDATABLE_FIELDS = ("display_name", "logout_policy", "default_time_zone")
_LIST_KIND = "apps"


def app_not_found(app_id: str) -> NotFound:
    return NotFound("APP_NOT_FOUND", f"app {app_id!r} does not exist", {"app_id": app_id})


@dataclass(frozen=True)
class AppDraft:
    """What a caller may set on an app; None means "not given" (use the default)."""

    display_name: str
    logout_policy: LogoutPolicy | None
    default_time_zone: str


@dataclass(frozen=True)
class CreatedApp:
    app: App
    client_secret: str  # empty on a replay
    replayed: bool


def _check_draft(check: Validator, draft: AppDraft, prefix: str, masked: Sequence[str]) -> None:
    if "display_name" in masked:
        check.require(bool(draft.display_name.strip()), f"{prefix}display_name", "is required")
        check.require(
            len(draft.display_name) <= 100,
            f"{prefix}display_name",
            "must be at most 100 characters",
        )
    if "default_time_zone" in masked and draft.default_time_zone:
        check.require(
            is_time_zone(draft.default_time_zone),
            f"{prefix}default_time_zone",
            "must be an IANA time zone such as 'Europe/Paris'",
        )


class Apps:
    def __init__(self, store: AppStore) -> None:
        self.store = store

    async def create(self, draft: AppDraft, app_id: str, request_id: str) -> CreatedApp:
        check = Validator()
        if app_id:
            check.require(
                is_app_id(app_id),
                "app_id",
                "must be 3 to 63 lowercase letters, digits or '-'",
            )
        check.require(bool(request_id), "request_id", "is required (a UUID; reuse it on retry)")
        check.require(len(request_id) <= 128, "request_id", "must be at most 128 characters")
        _check_draft(check, draft, "app.", UPDATABLE_FIELDS)
        check.raise_if_any()

        policy = draft.logout_policy or LogoutPolicy.UNREGISTER
        fingerprint = pagination.fingerprint(
            app_id, draft.display_name, policy.value, draft.default_time_zone
        )
        chosen_id = app_id or f"app-{secrets.token_hex(6)}"
        now = now_us()
        app = App(
            app_id=chosen_id,
            display_name=draft.display_name,
            logout_policy=policy,
            default_time_zone=draft.default_time_zone or "UTC",
            create_us=now,
            update_us=now,
            secret_create_us=now,
            previous_secret_expire_us=0,
        )
        secret = credentials.new_client_secret()
        outcome, stored_id = await self.store.create(
            NewApp(app, credentials.client_secret_digest(secret), request_id, fingerprint)
        )
        if outcome is CreateOutcome.CREATED:
            return CreatedApp(app, secret, replayed=False)
        if outcome is CreateOutcome.REPLAY:
            return CreatedApp(await self.get(stored_id), "", replayed=True)
        if outcome is CreateOutcome.REQUEST_ID_MISMATCH:
            raise InvalidArgument(
                "request_id was already used for a different CreateApp request",
                reason="REQUEST_ID_MISMATCH",
            )
        raise AlreadyExists(
            "APP_ALREADY_EXISTS", f"app {chosen_id!r} already exists", {"app_id": chosen_id}
        )

    async def get(self, app_id: str) -> App:
        check = Validator()
        check.require(bool(app_id), "app_id", "is required")
        check.raise_if_any()
        app = await self.store.get(app_id)
        if app is None:
            raise app_not_found(app_id)
        return app

    async def get_many(self, app_ids: Sequence[str]) -> dict[str, App]:
        return await self.store.get_many(list(dict.fromkeys(app_ids)))

    async def list_page(self, page_size: int, page_token: str) -> tuple[list[App], str]:
        size = pagination.page_size(page_size)
        after = pagination.decode(page_token, _LIST_KIND, "") if page_token else ""
        ids = await self.store.list_ids(str(after), size + 1)
        page_ids, more = ids[:size], len(ids) > size
        found = await self.store.get_many(page_ids)
        # An index entry without a record is a crash leftover; skip it.
        apps = [found[app_id] for app_id in page_ids if app_id in found]
        token = pagination.encode(_LIST_KIND, "", page_ids[-1]) if more and page_ids else ""
        return apps, token

    async def update(self, app_id: str, draft: AppDraft, mask: Sequence[str]) -> App:
        check = Validator()
        check.require(bool(app_id), "app.app_id", "is required")
        check.raise_if_any()
        check_update_mask(mask, UPDATABLE_FIELDS)
        _check_draft(check, draft, "app.", mask)
        check.raise_if_any()
        updated = await self.store.update(
            app_id,
            update_us=now_us(),
            display_name=draft.display_name if "display_name" in mask else None,
            logout_policy=(draft.logout_policy or LogoutPolicy.UNREGISTER)
            if "logout_policy" in mask
            else None,
            default_time_zone=(draft.default_time_zone or "UTC")
            if "default_time_zone" in mask
            else None,
        )
        if not updated:
            raise app_not_found(app_id)
        return await self.get(app_id)

    async def delete(
        self,
        app_id: str,
        force: bool,
        has_devices: Callable[[str], Awaitable[bool]],
        purge_devices: Callable[[str], Awaitable[int]],
        purge_credentials: Callable[[str], Awaitable[int]],
    ) -> int:
        await self.get(app_id)
        if not force and await has_devices(app_id):
            raise FailedPrecondition(
                "APP_HAS_DEVICES",
                f"app {app_id!r} still has devices; pass force to delete it anyway",
                {"app_id": app_id},
            )
        # The app's devices must not keep streaming in "every app" audiences nor come
        # back if the id is reused. Purged before the app record goes (Registration
        # down: the call fails with the app intact, to be retried) and once more after
        # it, for a registration accepted in between by a replica that still had the
        # app cached.
        await purge_devices(app_id)
        # Delivery keeps credentials by app id: an app created again with this id must
        # not send with the old one's keys. Before the record goes (Delivery down: the
        # call fails with the app intact, to be retried), and once more after it, for a
        # PutCredentials accepted in between (a replica's key cache still trusts the
        # app's keys for a few seconds).
        await purge_credentials(app_id)
        if not await self.store.delete(app_id):
            raise app_not_found(app_id)
        await purge_devices(app_id)
        try:
            await purge_credentials(app_id)
        except HeraldError as error:
            # The app is gone and the first purge ran: report success, and say what a
            # late put may have left.
            log.warning(
                "deleted app's credentials not checked again",
                extra={"app_id": app_id, "reason": error.reason},
            )
        return now_us()

    async def rotate_client_secret(self, app_id: str, overlap_us: int | None) -> tuple[str, App]:
        check = Validator()
        check.require(bool(app_id), "app_id", "is required")
        if overlap_us is not None:
            check.require(overlap_us >= 0, "overlap", "must not be negative")
            check.require(overlap_us <= MAX_OVERLAP_US, "overlap", "must be at most 30 days")
        check.raise_if_any()
        overlap = DEFAULT_OVERLAP_US if overlap_us is None else overlap_us
        secret = credentials.new_client_secret()
        now = now_us()
        rotated = await self.store.rotate_secret(
            app_id, credentials.client_secret_digest(secret), now, now + overlap if overlap else 0
        )
        if not rotated:
            raise app_not_found(app_id)
        return secret, await self.get(app_id)

    async def verify_client_secret(self, app_id: str, secret: str) -> SecretMatch:
        """Which secret matched; both digests are always compared (constant time)."""
        check = Validator()
        check.require(bool(app_id), "app_id", "is required")
        check.raise_if_any()
        stored = await self.store.secrets(app_id)
        if stored is None:
            raise app_not_found(app_id)
        if not secret:
            return SecretMatch.NONE
        presented = credentials.client_secret_digest(secret)
        current = credentials.digests_match(presented, stored.current_digest)
        previous = credentials.digests_match(presented, stored.previous_digest)
        if current:
            return SecretMatch.CURRENT
        if previous and now_us() < stored.previous_expire_us:
            return SecretMatch.PREVIOUS
        return SecretMatch.NONE
