"""Every audience condition, evaluated through PreviewAudience (exact on small apps)
and through a real fan-out for a combination."""

from __future__ import annotations

from google.protobuf import struct_pb2, timestamp_pb2

from herald.campaign.v1 import audience_pb2 as A
from herald.identity.v1 import identity_service_pb2, user_pb2
from herald.type.v1 import filter_pb2 as F
from tests.integration.campaign.conftest import (
    ANDROID,
    APP,
    CS,
    DENIED,
    IOS,
    PROVISIONAL,
    WEB,
    C,
    Stack,
    create,
    device,
    import_devices,
    launch,
    upsert_user,
    wait_state,
)

GE = F.COMPARISON_OPERATOR_GREATER_OR_EQUAL
LT = F.COMPARISON_OPERATOR_LESS


def node(**condition) -> A.AudienceFilter:
    return A.AudienceFilter(**condition)


def value(v) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if isinstance(v, str):
        out.string_value = v
    else:
        out.number_value = v
    return out


async def seed(stack: Stack) -> None:
    await upsert_user(stack, "ann", plan="gold", age=31, signup="2024-05-01", first_name="Ann")
    await upsert_user(stack, "bob", plan="free", age=17, signup="2021-01-01")
    await upsert_user(stack, "cid", time_zone="Asia/Tokyo")
    await stack.identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(
            user=user_pb2.User(external_id="dan", locale="de-DE")
        )
    )
    await import_devices(
        stack,
        [
            device(
                "a-ios", IOS, "ann", app_version="4.12.0", locale="en-US", time_zone="Europe/Paris"
            ),
            device("a-web", WEB, "ann", locale="fr-FR"),
            device("b-and", ANDROID, "bob", app_version="4.9", locale="en-GB"),
            device("c-ios", IOS, "cid", authorization_status=PROVISIONAL, app_version="5.0"),
            device("d-ios", IOS, "dan", authorization_status=DENIED),  # background only
            device(
                "anon", ANDROID, app_version="4.12.1", locale="pt-BR", time_zone="America/Sao_Paulo"
            ),
        ],
    )
    # dan has a foreground device in another app: push enabled for any app.
    await stack.identity.CreateApp(
        identity_service_pb2.CreateAppRequest(
            app_id="other",
            app={"display_name": "Other"},  # type: ignore[arg-type]
            request_id="x",
        )
    )
    await import_devices(stack, [device("d-other", ANDROID, "dan")], app_id="other")


async def matched(
    stack: Stack,
    condition: A.AudienceFilter | None,
    background: bool = False,
    users_only: bool = False,
) -> set[str]:
    audience = A.Audience(users_only=users_only)
    if condition is not None:
        audience.filter.CopyFrom(condition)
    answer = await stack.campaign.PreviewAudience(
        CS.PreviewAudienceRequest(app_id=APP, audience=audience, background=background)
    )
    assert answer.exact
    created = await create(stack, audience=audience, message=_message(background))
    # The preview's sample ids are users; the devices come from a real fan-out.
    await launch(stack, created.campaign_id)
    await wait_state(stack, created.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    devices = {n.device_id for n in stack.delivery.unique(created.campaign_id).values()}
    assert answer.estimated_devices == len(devices)
    return devices


def _message(background: bool):
    from tests.integration.campaign.conftest import message

    return message(background=True) if background else message()


def ts(iso: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromJsonString(iso)
    return out


async def test_every_audience_condition(stack: Stack):
    await seed(stack)
    visible = {"a-ios", "a-web", "b-and", "c-ios", "anon"}
    assert await matched(stack, None) == visible
    assert await matched(stack, None, background=True) == visible | {"d-ios"}
    assert await matched(stack, None, users_only=True) == visible - {"anon"}
    assert await matched(stack, node(push_enabled=True)) == visible - {"c-ios"}
    assert await matched(stack, node(background_reachable=True), background=True) == visible | {
        "d-ios"
    }
    assert await matched(stack, node(provisional=True)) == {"c-ios"}
    assert await matched(stack, node(platforms=A.PlatformList(platforms=[IOS]))) == {
        "a-ios",
        "c-ios",
    }
    assert await matched(
        stack, node(app_version=F.VersionComparison(operator=GE, version="4.10"))
    ) == {"a-ios", "c-ios", "anon"}
    assert await matched(stack, node(locales=A.StringList(values=["en"]))) == {"a-ios", "b-and"}
    assert await matched(
        stack, node(time_zones=A.StringList(values=["Asia/Tokyo", "Europe/Paris"]))
    ) == {"a-ios", "c-ios"}
    assert await matched(stack, node(user_ids=A.StringList(values=["ann", "cid"]))) == {
        "a-ios",
        "a-web",
        "c-ios",
    }
    attr = F.AttributeFilter
    assert await matched(
        stack, node(user_attribute=attr(attribute="plan", equals=value("gold")))
    ) == {"a-ios", "a-web"}
    assert await matched(
        stack,
        node(
            user_attribute=attr(
                attribute="plan", in_values=F.ValueList(values=[value("free"), value("gold")])
            )
        ),
    ) == {"a-ios", "a-web", "b-and"}
    assert await matched(stack, node(user_attribute=attr(attribute="plan", exists=False))) == {
        "c-ios"
    }
    assert await matched(
        stack,
        node(
            user_attribute=attr(attribute="age", number=F.NumberComparison(operator=LT, value=18))
        ),
    ) == {"b-and"}
    assert await matched(
        stack, node(user_attribute=attr(attribute="signup", after_time=ts("2023-01-01T00:00:00Z")))
    ) == {"a-ios", "a-web"}
    assert await matched(
        stack, node(user_attribute=attr(attribute="signup", before_time=ts("2023-01-01T00:00:00Z")))
    ) == {"b-and"}
    combined = node(
        any_of=A.AudienceFilterList(
            filters=[
                node(
                    all_of=A.AudienceFilterList(
                        filters=[
                            node(platforms=A.PlatformList(platforms=[IOS, WEB])),
                            node(negate=node(provisional=True)),
                        ]
                    )
                ),
                node(user_ids=A.StringList(values=["bob"])),
            ]
        )
    )
    assert await matched(stack, combined) == {"a-ios", "a-web", "b-and"}


async def test_push_enabled_for_any_app(stack: Stack):
    # Needs Registration.ListUserDevices ("push enabled for any app" is a user property).
    await seed(stack)
    visible = {"a-ios", "a-web", "b-and", "c-ios", "anon"}
    assert await matched(stack, node(push_enabled_any_app=True), background=True) == visible - {
        "c-ios"
    } | {"d-ios"}
