"""A first end-to-end: create, launch now, every reachable device gets its rendered push."""

from __future__ import annotations

from tests.integration.campaign.conftest import (
    ANDROID,
    IOS,
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


async def test_a_user_with_several_devices_receives_on_each_with_liquid(stack: Stack):
    await upsert_user(stack, "ann", first_name="Ann")
    await import_devices(
        stack,
        [
            device("ann-phone", IOS, "ann"),
            device("ann-tablet", ANDROID, "ann"),
            device("ann-browser", WEB, "ann"),
            device("anon", ANDROID),
        ],
    )
    created = await create(stack)
    launched = await launch(stack, created.campaign_id)
    assert launched.campaign.state == C.CAMPAIGN_STATE_SENDING
    assert launched.estimated_devices == 4
    report = await wait_state(stack, created.campaign_id, C.CAMPAIGN_STATE_COMPLETED)
    sent = stack.delivery.unique(created.campaign_id)
    assert sorted(sent) == sorted(
        f"{created.campaign_id}:{d}" for d in ("ann-phone", "ann-tablet", "ann-browser", "anon")
    )
    bodies = {n.device_id: (n.apns.body or n.fcm.body or n.web_push.body) for n in sent.values()}
    assert bodies == {
        "ann-phone": "Hi Ann",
        "ann-tablet": "Hi Ann",
        "ann-browser": "Hi Ann",
        "anon": "Hi there",
    }
    assert report.targeted == 4
    assert report.sent == 4
