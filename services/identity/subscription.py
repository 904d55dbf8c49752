"""Subscription state: each device of a user labelled as the dashboard shows it.

"Foreground: <app name>" when the app may show visible notifications there,
"Background: <app name>" when it has a token for silent (or provisional, quiet) pushes
only, and "--" when there is no app information for the device: its app is unknown to
Identity (deleted), or the device has no usable token, so there is no subscription to
describe.

Users are shared by the apps of a deployment, their devices are not: for an app key
(`only_app`) the state is that app's part, the other apps' devices left out and "push
enabled for any app" read over the app's own devices, so nothing tells one app which
other apps a user has.
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.type.v1 import platform_pb2
from services.identity.app_model import App
from services.identity.apps import Apps
from services.identity.identifiers import Identifier
from services.identity.registration_client import DeviceSnapshot, Registration
from services.identity.user_model import User
from services.identity.users import Users

NO_INFORMATION = "--"
FOREGROUND = platform_pb2.PUSH_CAPABILITY_FOREGROUND


@dataclass(frozen=True)
class LabelledDevice:
    label: str
    app_name: str  # empty when the app is unknown
    device: DeviceSnapshot


@dataclass(frozen=True)
class SubscriptionState:
    user: User
    devices: list[LabelledDevice]
    push_enabled_any_app: bool


def label(device: DeviceSnapshot, app: App | None) -> str:
    if app is None:
        return NO_INFORMATION
    if device.capability == FOREGROUND:
        return f"Foreground: {app.display_name}"
    if device.capability == platform_pb2.PUSH_CAPABILITY_BACKGROUND:
        return f"Background: {app.display_name}"
    return NO_INFORMATION


def labelled(devices: list[DeviceSnapshot], apps: dict[str, App]) -> list[LabelledDevice]:
    """Devices with their labels, most recently seen first."""
    ordered = sorted(devices, key=lambda device: device.last_seen_us, reverse=True)
    return [
        LabelledDevice(
            label(device, apps.get(device.app_id)),
            apps[device.app_id].display_name if device.app_id in apps else "",
            device,
        )
        for device in ordered
    ]


class SubscriptionStates:
    def __init__(self, apps: Apps, users: Users, registration: Registration) -> None:
        self.apps = apps
        self.users = users
        self.registration = registration

    async def of(self, identifier: Identifier, only_app: str = "") -> SubscriptionState:
        """The user's state in every app, or in `only_app` alone when it is given."""
        user = await self.users.lookup(identifier)
        found = await self.registration.user_devices(user.external_id)
        devices, enabled = found.devices, found.push_enabled_any_app
        if only_app:
            devices = [device for device in devices if device.app_id == only_app]
            enabled = any(device.capability == FOREGROUND for device in devices)
        apps = await self.apps.get_many([device.app_id for device in devices])
        return SubscriptionState(user, labelled(devices, apps), enabled)
