"""Campaign domain rules without sockets: Liquid, schedules, sizes, throttle, audiences."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from herald.campaign.v1 import audience_pb2, campaign_pb2, push_message_pb2
from herald.registration.v1 import device_pb2
from herald.type.v1 import filter_pb2
from services.campaign import audience as audiences
from services.campaign import schedules
from services.campaign.clock import ManualClock
from services.campaign.messages import CompiledMessage
from services.campaign.recipients import context_of
from services.campaign.templates import (
    Template,
    TemplateRenderError,
    TemplateSyntaxError,
    check_syntax,
)
from services.campaign.throttle import Throttle


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def test_liquid_defaults_attributes_and_memo():
    template = Template("Hi {{ first_name | default: 'there' }} from {{ user.email }}")
    assert (
        template.render({"first_name": "Ann", "user": {"email": "a@x.io"}}) == "Hi Ann from a@x.io"
    )
    assert template.render({}) == "Hi there from "
    assert Template("plain text").constant


def test_liquid_syntax_errors_carry_line_and_column():
    problem = check_syntax("one\ntwo {{ name }\n")
    assert problem is not None
    assert (problem.line, problem.column) == (2, 5)
    with pytest.raises(TemplateSyntaxError):
        Template("{% if %}")


def test_liquid_render_errors_are_reported():
    with pytest.raises(TemplateRenderError):
        Template("{{ 1 | divided_by: 0 }}").render({})


def test_rendering_per_platform_and_size_limits():
    message = push_message_pb2.PushMessage(
        content=push_message_pb2.Content(title="T", body="Hi {{ n }}"),
        ios=push_message_pb2.IosOverride(subtitle="S", badge=3),
        deep_link="app://x/{{ n }}",
        data={"k": "v"},
    )
    compiled = CompiledMessage(message)
    ios = compiled.render(1, context_of(None, 1, {"attributes": {"n": "Bo"}}), "c1")
    assert ios.notification.apns.body == "Hi Bo"
    assert ios.notification.apns.subtitle == "S"
    assert '"deep_link":"app://x/Bo"' in ios.payload_json
    assert '"herald_cid":"c1"' in ios.payload_json
    web = compiled.render(3, context_of(None, 3, None), "")
    assert web.notification.web_push.url == "app://x/"
    assert web.limit == 3993
    big = CompiledMessage(
        push_message_pb2.PushMessage(content=push_message_pb2.Content(body="{{ n }}"))
    )
    rendered = big.render(2, context_of(None, 2, {"attributes": {"n": "x" * 5000}}))
    assert rendered.too_large
    assert rendered.largest_field == "message.content.body"


def test_background_messages_are_silent():
    compiled = CompiledMessage(push_message_pb2.PushMessage(background=True, data={"k": "v"}))
    ios = compiled.render(1, context_of(None, 1, None))
    assert ios.notification.apns.content_available
    assert not ios.notification.apns.body
    fcm = compiled.render(2, context_of(None, 2, None))
    assert not fcm.notification.fcm.title
    assert fcm.notification.fcm.data["k"] == "v"


def test_local_schedule_and_quiet_hours():
    local = campaign_pb2.Schedule(
        local=campaign_pb2.LocalSchedule(date="2030-03-17", time=filter_pb2.TimeOfDay(hours=20))
    )
    now = at("2030-03-17T17:46:40")
    assert schedules.due_for(local, "Asia/Tokyo", now, now).suppressed == "LOCAL_TIME_PASSED"
    assert schedules.due_for(local, "Europe/Paris", now, now).at == at("2030-03-17T19:00:00")
    local.local.send_if_passed = True
    assert schedules.due_for(local, "Asia/Tokyo", now, now).at == now
    quiet = campaign_pb2.Schedule(
        quiet_hours=campaign_pb2.QuietHours(
            start=filter_pb2.TimeOfDay(hours=22), end=filter_pb2.TimeOfDay(hours=8)
        )
    )
    assert schedules.due_for(quiet, "Asia/Tokyo", now, now).at == at("2030-03-17T23:00:00")
    assert schedules.due_for(quiet, "Europe/Paris", now, now).at == now
    assert (
        schedules.due_for(quiet, "Asia/Tokyo", now, now, max_hold=60).suppressed
        == "QUIET_HOURS_EXPIRED"
    )


def test_versions_locales_and_pushdown():
    assert audiences.version_key("4.10") > audiences.version_key("4.9")
    assert audiences.version_key("5.0.0-beta") < audiences.version_key("5.0")
    tree = audience_pb2.Audience(
        filter=audience_pb2.AudienceFilter(
            all_of=audience_pb2.AudienceFilterList(
                filters=[
                    audience_pb2.AudienceFilter(
                        platforms=audience_pb2.PlatformList(platforms=[1, 2])
                    ),
                    audience_pb2.AudienceFilter(
                        platforms=audience_pb2.PlatformList(platforms=[2, 3])
                    ),
                    audience_pb2.AudienceFilter(push_enabled=True),
                ]
            )
        )
    )
    query = audiences.registration_query("shop", tree, False)
    assert query is not None
    assert list(query.platforms) == [2]
    assert query.reachability == device_pb2.REACHABILITY_FOREGROUND
    device = device_pb2.AudienceDevice(platform=2, capability=1, locale="pt-BR")
    compiled = audiences.CompiledAudience(tree, False)
    assert compiled.matches(audiences.Recipient(device))
    locale = audience_pb2.Audience(
        filter=audience_pb2.AudienceFilter(locales=audience_pb2.StringList(values=["pt"]))
    )
    assert audiences.CompiledAudience(locale, False).matches(audiences.Recipient(device))


async def test_throttle_waits_for_the_clock():
    clock = ManualClock(1000.0)
    throttle = Throttle(2, lambda: clock)

    async def never() -> bool:
        return False

    await throttle.take(2, never)
    waiting = asyncio.create_task(throttle.take(2, never))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    clock.advance(60)
    await asyncio.wait_for(waiting, 2)
