"""Who is logged in on which device: ChangeUser (login), Logout, and unbinding a
deleted user's devices.

Identity checks the app's client secret and decides; Registration owns the binding and
moves it atomically (AssignDeviceUser, logged BOUND / MOVED / UNBOUND). A wrong secret
stops the call before anything is asked of Registration, so it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.core.errors import (
    FailedPrecondition,
    HeraldError,
    PermissionDenied,
    Unauthenticated,
    Validator,
)
from services.identity.app_model import App, LogoutPolicy, SecretMatch
from services.identity.apps import Apps
from services.identity.identifiers import external_id_problem
from services.identity.registration_client import Registration
from services.identity.users import Users, user_not_found

MAX_DEVICE_ID = 128
DEVICE_USER_MISMATCH = "DEVICE_USER_MISMATCH"


@dataclass(frozen=True)
class Login:
    previous_external_id: str
    external_id: str
    changed: bool


@dataclass(frozen=True)
class LogoutOutcome:
    previous_external_id: str
    applied_policy: LogoutPolicy
    changed: bool


def _mismatch(app_id: str, device_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        DEVICE_USER_MISMATCH,
        "another user is bound to this device; this logout is stale",
        {"app_id": app_id, "device_id": device_id},
    )


class Sessions:
    def __init__(self, apps: Apps, users: Users, registration: Registration) -> None:
        self.apps = apps
        self.users = users
        self.registration = registration

    async def _authorise(
        self, check: Validator, app_id: str, device_id: str, client_secret: str
    ) -> App:
        check.require(bool(app_id), "app_id", "is required")
        check.require(bool(device_id), "device_id", "is required")
        check.require(
            len(device_id) <= MAX_DEVICE_ID,
            "device_id",
            f"must be at most {MAX_DEVICE_ID} characters",
        )
        check.raise_if_any()
        if not client_secret:
            raise Unauthenticated(
                "CLIENT_SECRET_REQUIRED", "binding a device to a user needs the app's client secret"
            )
        app = await self.apps.get(app_id)
        if await self.apps.verify_client_secret(app_id, client_secret) is SecretMatch.NONE:
            raise PermissionDenied(
                "CLIENT_SECRET_INVALID", "the client secret is wrong or no longer accepted"
            )
        return app

    async def change_user(
        self,
        app_id: str,
        device_id: str,
        external_id: str,
        client_secret: str,
        create_user: bool,
    ) -> Login:
        check = Validator()
        problem = external_id_problem(external_id)
        if problem:
            check.add("external_id", problem)
        await self._authorise(check, app_id, device_id, client_secret)
        known = await self.users.store.get(external_id) is not None
        if not known and not create_user:
            raise user_not_found("this external id")
        assignment = await self.registration.assign(app_id, device_id, external_id, reason="login")
        # Created only once the device accepted the binding, so a login on an unknown
        # device (DEVICE_NOT_FOUND) leaves no user behind.
        if not known:
            await self.users.ensure(external_id)
        return Login(assignment.previous_user_id, external_id, assignment.changed)

    async def logout(
        self, app_id: str, device_id: str, client_secret: str, external_id: str
    ) -> LogoutOutcome:
        app = await self._authorise(Validator(), app_id, device_id, client_secret)
        policy = app.logout_policy
        if policy is LogoutPolicy.KEEP_WITH_LAST_USER:
            device = await self.registration.get_device(app_id, device_id)
            if external_id and device.user_id and device.user_id != external_id:
                raise _mismatch(app_id, device_id)
            return LogoutOutcome(device.user_id, policy, changed=False)
        if not external_id:
            assignment = await self.registration.assign(app_id, device_id, "", reason="logout")
            return LogoutOutcome(assignment.previous_user_id, policy, assignment.changed)
        try:
            # Compare-and-set: a logout that arrives after the next user logged in must
            # not unbind that next user.
            assignment = await self.registration.assign(
                app_id, device_id, "", reason="logout", expected_user_id=external_id
            )
        except HeraldError as error:
            if error.reason != DEVICE_USER_MISMATCH:
                raise
            device = await self.registration.get_device(app_id, device_id)
            if device.user_id:
                raise _mismatch(app_id, device_id) from None
            return LogoutOutcome("", policy, changed=False)  # already logged out
        return LogoutOutcome(assignment.previous_user_id, policy, assignment.changed)

    async def unbind_all(self, external_id: str) -> int:
        """Unbinds every device of a user (DeleteUser); returns how many changed."""
        devices = await self.registration.user_devices(external_id)
        unbound = 0
        for device in devices.devices:
            try:
                assignment = await self.registration.assign(
                    device.app_id,
                    device.device_id,
                    "",
                    reason="user_deleted",
                    expected_user_id=external_id,
                )
            except HeraldError as error:
                # Moved to someone else or unregistered meanwhile: nothing to undo.
                if error.reason in (DEVICE_USER_MISMATCH, "DEVICE_NOT_FOUND"):
                    continue
                raise
            unbound += int(assignment.changed)
        return unbound
