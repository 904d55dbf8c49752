"""Deterministic interleavings of the cross-slot index protocol (review issue 3, item 1).

Each test runs another request's steps at the exact point a registration is between
"index made ready" and "record written" (the reviewer's /tmp/rev3/p4.py), against a
real redis-server, and checks that nothing the in-flight write needs is removed and
that a token never ends on two devices.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from services.core.errors import Aborted
from services.registration import store as store_module
from services.registration.domain import Devices
from services.registration.invalidation import (
    ERROR,
    NOT_FOUND,
    REMOVED,
    Invalidation,
    Invalidator,
)
from services.registration.listing import Listings
from services.registration.model import ANDROID, FCM
from services.registration.store import (
    IndexEntry,
    RegistrationStore,
    stamp,
    token_field,
    token_key,
    user_devices_key,
    user_member,
)
from services.registration.tokens import TokenInput, token_digest
from services.registration.validation import DeviceInput


class _Apps:
    """Every app exists and every secret is right: these tests are about Redis order."""

    async def require_app(self, app_id: str) -> None:
        return None

    async def require_client_secret(self, app_id: str, secret: str) -> None:
        return None

    def forget_app(self, app_id: str) -> None:
        return None


Hook = Callable[[], Awaitable[object]]


class _Harness:
    def __init__(self, redis: Redis) -> None:
        self.store = RegistrationStore(redis)
        self.devices = Devices(self.store, _Apps())  # type: ignore[arg-type]
        self.listings = Listings(self.store, _Apps())  # type: ignore[arg-type]
        self.invalidator = Invalidator(self.devices)
        self.hooks: dict[str, Hook] = {}
        real = self.store.compare_and_set

        async def compare_and_set(app_id, device_id, expected, new):
            hook = self.hooks.pop(device_id, None)
            if hook is not None:
                await hook()  # another request, between "index ready" and "record written"
            return await real(app_id, device_id, expected, new)

        self.store.compare_and_set = compare_and_set  # type: ignore[method-assign]

    async def register(self, device_id: str, token: str | None, user_id: str = "") -> None:
        given = DeviceInput(
            device_id,
            ANDROID,
            "12",
            token=TokenInput(FCM, fcm_registration_token=token) if token else None,
            user_id=user_id,
        )
        await self.devices.register("shop", given, "secret")

    async def holds(self, device_id: str, token: str) -> bool:
        rec = await self.devices.get("shop", device_id)
        return rec.token is not None and rec.token.value == token

    async def owner(self, token: str) -> IndexEntry | None:
        return await self.store.token_entry("shop", token_digest("shop", token))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _invalidation(token: str, provider_ms: int) -> Invalidation:
    return Invalidation(
        "shop", TokenInput(FCM, fcm_registration_token=token), 2, "UNREGISTERED", provider_ms
    )


@pytest.fixture
def harness(redis: Redis) -> _Harness:
    return _Harness(redis)


async def test_list_user_devices_during_a_binding_keeps_the_new_member(harness: _Harness):
    harness.hooks["d1"] = lambda: harness.listings.list_user_devices("alice", "", 0, "", 0)
    await harness.register("d1", "T1" * 40, user_id="alice")
    page, _, _ = await harness.listings.list_user_devices("alice", "", 0, "", 0)
    assert (await harness.devices.get("shop", "d1")).user_id == "alice"
    assert [d.device_id for d in page] == ["d1"]


async def test_an_invalidation_during_a_claim_leaves_the_claim(harness: _Harness):
    token = "T2" * 40
    outcomes = []

    async def invalidate() -> None:
        results = await harness.invalidator.invalidate([_invalidation(token, _now_ms() - 60_000)])
        outcomes.append(results[0].outcome)

    harness.hooks["d2"] = invalidate
    await harness.register("d2", token)
    assert outcomes == [NOT_FOUND]  # the record does not hold the token yet
    owner = await harness.owner(token)
    assert owner is not None
    assert owner.device_id == "d2"
    assert owner.confirmed
    # So a second device registering the same token takes it from the first one.
    await harness.register("d3", token)
    assert not await harness.holds("d2", token)
    assert await harness.holds("d3", token)
    results = await harness.invalidator.invalidate([_invalidation(token, _now_ms() + 1000)])
    assert (results[0].outcome, results[0].device_id) == (REMOVED, "d3")
    assert not await harness.holds("d2", token)


async def test_two_devices_racing_for_one_token_leave_it_on_one(harness: _Harness):
    token = "T3" * 40
    # d5 claims and writes its record between d4's claim and d4's record write: d5's
    # strip of d4 finds nothing yet, so only d4's failed confirm can undo d4's write.
    harness.hooks["d4"] = lambda: harness.register("d5", token)
    await harness.register("d4", token)
    holders = [d for d in ("d4", "d5") if await harness.holds(d, token)]
    assert holders == ["d5"]
    owner = await harness.owner(token)
    assert owner is not None
    assert owner.device_id == "d5"


async def test_rotating_back_during_a_rotation_keeps_the_token_indexed(harness: _Harness):
    first, second = "T4" * 40, "T5" * 40
    await harness.register("d6", first)
    # While d6 rotates first → second (between its claim of `second` and its record
    # write) nothing happens; right after the write, before the release of `first`,
    # d6 registers `first` again. The late release must not remove that new claim.
    real_release = harness.store.set_token_entries
    fired: list[bool] = []

    async def release(app_id, changes):
        if not fired and any(new == b"" for _, _, new in changes):
            fired.append(True)
            await harness.register("d6", first)
        return await real_release(app_id, changes)

    harness.store.set_token_entries = release  # type: ignore[method-assign]
    await harness.register("d6", second)
    harness.store.set_token_entries = real_release  # type: ignore[method-assign]
    assert await harness.holds("d6", first)
    owner = await harness.owner(first)
    assert owner is not None
    assert owner.device_id == "d6"


async def test_readers_remove_only_stale_entries_they_read(harness: _Harness, redis: Redis):
    await harness.register("d7", "T6" * 40, user_id="bob")
    await harness.register("d7", "T7" * 40, user_id="carl")  # d7 leaves bob, token T6
    old = stamp(at_ms=_now_ms() - store_module.STALE_AFTER_MS - 1000)
    young = stamp()
    # Leftovers of crashed writes: one old, one young, in each index.
    await redis.hset(user_devices_key("bob"), user_member("shop", "d7"), old)
    await redis.hset(user_devices_key("bob"), user_member("shop", "gone"), young)
    page, _, _ = await harness.listings.list_user_devices("bob", "", 0, "", 0)
    assert page == []
    assert await redis.hkeys(user_devices_key("bob")) == [user_member("shop", "gone")]

    digest = token_digest("shop", "T6" * 40)
    await redis.hset(token_key("shop", digest), token_field(digest), young + b"d7")
    results = await harness.invalidator.invalidate([_invalidation("T6" * 40, _now_ms())])
    assert results[0].outcome == NOT_FOUND
    assert await harness.owner("T6" * 40) is not None  # young: maybe a write in flight
    await redis.hset(token_key("shop", digest), token_field(digest), old + b"d7")
    results = await harness.invalidator.invalidate([_invalidation("T6" * 40, _now_ms())])
    assert results[0].outcome == NOT_FOUND
    assert await harness.owner("T6" * 40) is None


async def test_one_contended_invalidation_does_not_abort_the_batch(harness: _Harness):
    await harness.register("d8", "T8" * 40)
    await harness.register("d9", "T9" * 40)
    real = harness.store.compare_and_set

    async def always_conflicts(app_id, device_id, expected, new):
        if device_id == "d8":
            return False
        return await real(app_id, device_id, expected, new)

    harness.store.compare_and_set = always_conflicts  # type: ignore[method-assign]
    later = _now_ms() + 1000
    results = await harness.invalidator.invalidate(
        [_invalidation("T8" * 40, later), _invalidation("T9" * 40, later)]
    )
    assert results[0].outcome == ERROR
    assert results[0].problem is not None
    assert results[0].problem.reason == "CONCURRENT_MODIFICATION"
    assert results[0].problem.code == Aborted("x", "y").code.value[0]
    assert (results[1].outcome, results[1].device_id) == (REMOVED, "d9")
