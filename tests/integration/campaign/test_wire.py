"""The fan-out's fast path (services/campaign/wire.py) gives Delivery exactly the
notification the general path (`recipients.prepare`) gives, for every platform, with
templates that fill, empty out or overflow fields; and messages it cannot build from
bytes are left to the general path. Pure domain code: no sockets needed."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import duration_pb2

from herald.campaign.v1 import push_message_pb2
from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.identity.v1 import user_pb2
from herald.registration.v1 import device_pb2
from herald.type.v1 import platform_pb2, push_options_pb2, push_token_pb2
from services.campaign import wire
from services.campaign.clients import user_context
from services.campaign.messages import CompiledMessage
from services.campaign.recipients import context_of, prepare
from services.campaign.templates import TemplateRenderError

IOS, ANDROID, WEB = (
    platform_pb2.PLATFORM_IOS,
    platform_pb2.PLATFORM_ANDROID,
    platform_pb2.PLATFORM_WEB,
)
CAMPAIGN = "c0ffee"
TOKENS: dict[int, push_token_pb2.PushToken] = {
    IOS: push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token="ab" * 32)),
    ANDROID: push_token_pb2.PushToken(fcm=push_token_pb2.FcmToken(registration_token="f:APA91b")),
    WEB: push_token_pb2.PushToken(
        web_push=push_token_pb2.WebPushSubscription(
            endpoint="https://push.example.net/x", p256dh="BPk", auth="au"
        )
    ),
}


def _device(platform: int, user_id: str = "u1", device_id: str = "d-1") -> Any:
    return device_pb2.AudienceDevice(
        app_id="shop",
        device_id=device_id,
        platform=platform,  # type: ignore[arg-type]
        token=TOKENS[platform],
        apns_environment=platform_pb2.APNS_ENVIRONMENT_PRODUCTION if platform == IOS else 0,  # type: ignore[arg-type]
        user_id=user_id,
        locale="fr-FR",
    )


def _user(**attributes: Any) -> user_pb2.User:
    user = user_pb2.User(external_id="u1", email="ann@example.com")
    user.attributes.update(attributes)
    return user


def _general(message: CompiledMessage, device: Any, user: user_pb2.User | None) -> Any:
    return prepare(
        message,
        device,
        user_context(user) if user is not None else None,
        campaign_id=CAMPAIGN,
        idempotency_key=f"{CAMPAIGN}:{device.device_id}",
    )


def _fast(
    message: CompiledMessage,
    device: Any,
    user: user_pb2.User | None,
    masked: bool = False,
    fast: wire.FastMessage | None = None,
) -> bytes | None:
    fast = fast or wire.FastMessage.build(message, CAMPAIGN, masked)
    assert fast is not None
    plan = fast.plan(device.platform)
    assert plan is not None
    content = plan.content(
        fast.key(device, _stored(user)),
        lambda: context_of(
            device, device.platform, user_context(user) if user is not None else None
        ),
    )
    if content is wire.TOO_LARGE:
        return None
    return content + fast.device.encode(device)


def _stored(user: user_pb2.User | None) -> bytes | None:
    """The user as the fan-out keeps it (services/campaign/fanout_users.py)."""
    if user is None:
        return None
    copy = user_pb2.User()
    copy.CopyFrom(user)
    copy.ClearField("external_id")
    return copy.SerializeToString()


MESSAGES = {
    "two attributes": push_message_pb2.PushMessage(
        content=push_message_pb2.Content(
            title="Spring sale",
            body="Hi {{ first_name | default: 'there' }}, a deal in {{ city }}",
        )
    ),
    "every text field": push_message_pb2.PushMessage(
        content=push_message_pb2.Content(
            title="{{ first_name }}", body="{{ city }}", image_url="https://img.example/a.png"
        ),
        ios=push_message_pb2.IosOverride(
            subtitle="{% if vip %}VIP {{ first_name }}{% endif %}", badge=3, sound="ping"
        ),
        android=push_message_pb2.AndroidOverride(
            image_url="https://img.example/{{ city | downcase }}.png",
            channel_id="deals",
            ttl=duration_pb2.Duration(seconds=600),
        ),
        web=push_message_pb2.WebOverride(
            url="{% if city %}https://shop.example/{{ city }}{% endif %}"
        ),
        deep_link="shop://deals",
        collapse_id="deal-{{ city }}",
        data={"kind": "deal"},
    ),
    "user and device paths": push_message_pb2.PushMessage(
        content=push_message_pb2.Content(
            title="{{ user.email }} on {{ device.platform }}",
            body="{{ device.locale }} {{ user.first_name }} {{ nested.size }}",
        ),
        priority=push_options_pb2.NOTIFICATION_PRIORITY_NORMAL,
    ),
    "background": push_message_pb2.PushMessage(
        background=True, data={"sync": "now"}, collapse_id="{{ city }}"
    ),
}
USERS = {
    "full": _user(first_name="Ann", city="Paris", vip=True, nested={"size": 2}),
    "accents and quotes": _user(first_name='Zoë "Z"', city="Köln\n", vip=False),
    "number where text was": _user(first_name=1, city=2.5),
    "no attributes": _user(),
    "unknown user": None,
}


@pytest.mark.parametrize("message_name", MESSAGES)
@pytest.mark.parametrize("user_name", USERS)
@pytest.mark.parametrize("platform", [IOS, ANDROID, WEB])
@pytest.mark.parametrize("masked", [False, True], ids=["values key", "user bytes key"])
def test_fast_path_builds_the_same_notification(
    message_name: str, user_name: str, platform: int, masked: bool
) -> None:
    message = CompiledMessage(MESSAGES[message_name])
    user = USERS[user_name]
    device = _device(platform, user_id="u1" if user is not None else "")
    expected = _general(message, device, user).notification
    fast = wire.FastMessage.build(message, CAMPAIGN, masked)
    built = _fast(message, device, user, fast=fast)
    assert built is not None
    got = notification_pb2.Notification.FromString(built)
    assert got == expected
    # Twice: the second answer comes from the cache and must not differ.
    again = _fast(message, device, user, fast=fast) or b""
    assert notification_pb2.Notification.FromString(again) == expected


def test_same_values_from_different_users_share_one_render_but_keep_their_device_fields() -> None:
    message = CompiledMessage(MESSAGES["two attributes"])
    fast = wire.FastMessage.build(message, CAMPAIGN, masked=True)
    assert fast is not None
    assert fast.masked
    plan = fast.plan(IOS)
    assert plan is not None
    first, second = _device(IOS, "u1", "d-1"), _device(IOS, "u2", "d-2")
    user_a, user_b = _user(first_name="Ann", city="Oslo"), _user(first_name="Ann", city="Oslo")
    user_b.external_id = "u2"
    assert fast.key(first, _stored(user_a)) == fast.key(second, _stored(user_b))
    got = [
        notification_pb2.Notification.FromString(
            plan.content(fast.key(d, _stored(u)), lambda: context_of(d, IOS, user_context(u)))  # noqa: B023
            + fast.device.encode(d)
        )
        for d, u in ((first, user_a), (second, user_b))
    ]
    assert [n.apns.body for n in got] == ["Hi Ann, a deal in Oslo"] * 2
    assert [(n.device_id, n.user_id, n.idempotency_key) for n in got] == [
        ("d-1", "u1", f"{CAMPAIGN}:d-1"),
        ("d-2", "u2", f"{CAMPAIGN}:d-2"),
    ]


def test_properties_of_a_string_or_list_render_for_each_value_not_from_the_cache() -> None:
    # `city.size` reads the string itself: a cache keyed on "city.size" alone would
    # give every later user the first user's length.
    message = CompiledMessage(
        push_message_pb2.PushMessage(
            content=push_message_pb2.Content(title="x", body="{{ city.size }} {{ tags.first }}")
        )
    )
    fast = wire.FastMessage.build(message, CAMPAIGN)
    assert fast is not None
    device = _device(ANDROID)
    bodies = []
    for city, tags in (("Paris", ["a", "b"]), ("Oslo", ["c"]), ("Rome", [])):
        user = _user(city=city, tags=tags)
        general = _general(message, device, user).notification
        built = _fast(message, device, user, fast=fast)
        assert built is not None
        assert notification_pb2.Notification.FromString(built) == general
        bodies.append(general.fcm.body)
    assert bodies == ["5 a", "4 c", "4 "]


def test_a_payload_over_the_provider_limit_is_too_large_on_both_paths() -> None:
    message = CompiledMessage(
        push_message_pb2.PushMessage(
            content=push_message_pb2.Content(title="x", body="{{ story }}")
        )
    )
    for platform in (IOS, ANDROID, WEB):
        device = _device(platform)
        for size, fits in ((3000, True), (5000, False)):
            user = _user(story="é" * (size // 2))  # 2 bytes each in UTF-8
            general = _general(message, device, user)
            assert (general.notification is not None) == fits
            assert (_fast(message, device, user) is not None) == fits


def test_a_render_error_is_raised_like_the_general_path() -> None:
    message = CompiledMessage(
        push_message_pb2.PushMessage(
            content=push_message_pb2.Content(title="x", body="{{ count | divided_by: 0 }}")
        )
    )
    device, user = _device(IOS), _user(count=3)
    assert _general(message, device, user).suppressed == "TEMPLATE_RENDER_ERROR"
    with pytest.raises(TemplateRenderError):
        _fast(message, device, user)


def test_templates_in_maps_or_whole_objects_are_left_to_the_general_path() -> None:
    in_data = CompiledMessage(
        push_message_pb2.PushMessage(
            content=push_message_pb2.Content(title="x", body="y"), data={"who": "{{ first_name }}"}
        )
    )
    fast = wire.FastMessage.build(in_data, CAMPAIGN)
    assert fast is not None
    assert [fast.plan(p) for p in (IOS, ANDROID, WEB)] == [None, None, None]
    ios_image = CompiledMessage(
        push_message_pb2.PushMessage(
            content=push_message_pb2.Content(title="x", image_url="https://i/{{ city }}.png")
        )
    )
    fast = wire.FastMessage.build(ios_image, CAMPAIGN)
    assert fast is not None
    assert fast.plan(IOS) is None  # the image goes into the APNs custom data
    assert fast.plan(ANDROID) is not None
    whole_user = CompiledMessage(
        push_message_pb2.PushMessage(content=push_message_pb2.Content(body="{{ user }}"))
    )
    assert wire.FastMessage.build(whole_user, CAMPAIGN) is None


def test_an_enqueue_request_built_from_bytes_parses_as_the_request() -> None:
    notifications = [
        notification_pb2.Notification(app_id="shop", device_id=f"d{i}", collapse_id="c" * i * 40)
        for i in range(5)
    ]
    raw = wire.enqueue_request([n.SerializeToString() for n in notifications], "req-1")
    parsed = delivery_service_pb2.EnqueueRequest.FromString(raw)
    assert list(parsed.notifications) == notifications
    assert parsed.request_id == "req-1"
