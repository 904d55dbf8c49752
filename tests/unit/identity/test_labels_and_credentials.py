"""Subscription labels and secret digests, without I/O."""

from __future__ import annotations

from herald.type.v1 import platform_pb2
from services.identity import credentials
from services.identity.app_model import App, LogoutPolicy
from services.identity.registration_client import DeviceSnapshot
from services.identity.subscription import label, labelled

SHOP = App("shop", "Shop", LogoutPolicy.UNREGISTER, "UTC", 0, 0, 0, 0)


def _device(app_id: str, capability, last_seen: int = 0) -> DeviceSnapshot:
    return DeviceSnapshot(
        app_id,
        f"d{last_seen}",
        platform_pb2.PLATFORM_ANDROID,
        "",
        None,
        capability,
        False,
        last_seen,
        "",
    )


def test_labels_follow_capability_and_app_information():
    assert (
        label(_device("shop", platform_pb2.PUSH_CAPABILITY_FOREGROUND), SHOP) == "Foreground: Shop"
    )
    assert (
        label(_device("shop", platform_pb2.PUSH_CAPABILITY_BACKGROUND), SHOP) == "Background: Shop"
    )
    assert label(_device("shop", platform_pb2.PUSH_CAPABILITY_NONE), SHOP) == "--"
    assert label(_device("gone", platform_pb2.PUSH_CAPABILITY_FOREGROUND), None) == "--"


def test_devices_are_listed_most_recently_seen_first():
    devices = [_device("shop", platform_pb2.PUSH_CAPABILITY_FOREGROUND, seen) for seen in (1, 3, 2)]
    assert [entry.device.last_seen_us for entry in labelled(devices, {"shop": SHOP})] == [3, 2, 1]


def test_secrets_are_random_and_digests_are_domain_separated():
    secret = credentials.new_client_secret()
    assert len(secret) >= 43
    assert secret != credentials.new_client_secret()
    assert credentials.client_secret_digest(secret) != credentials.api_key_digest(secret)
    digest = credentials.client_secret_digest(secret)
    assert credentials.digests_match(digest, digest)
    assert not credentials.digests_match(digest, "")
    assert not credentials.digests_match(digest, credentials.client_secret_digest(secret + "x"))
