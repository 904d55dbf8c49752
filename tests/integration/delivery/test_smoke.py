"""One notification per provider through the Dispatcher, end to end over TLS."""

from __future__ import annotations

from services.delivery.actions import Action
from services.sandbox.apns import new_device_token

from .conftest import (
    apns_credentials,
    apns_notification,
    fcm_credentials,
    fcm_notification,
    new_fcm_token,
    put,
    vapid_credentials,
    webpush_notification,
)


async def test_each_provider_delivers(dispatcher, sandbox):
    await put(dispatcher, apns_credentials(sandbox))
    await put(dispatcher, fcm_credentials(sandbox))
    await put(dispatcher, vapid_credentials(sandbox))
    token = new_device_token()
    sub = sandbox.webpush.create_subscription()

    apns = await dispatcher.deliver(apns_notification(token), 1)
    fcm = await dispatcher.deliver(fcm_notification(new_fcm_token()), 1)
    web = await dispatcher.deliver(webpush_notification(sub), 1)

    assert (apns.action, apns.status, fcm.action, fcm.status, web.action, web.status) == (
        Action.DELIVERED,
        200,
        Action.DELIVERED,
        200,
        Action.DELIVERED,
        201,
    ), (apns, fcm, web)
    assert sandbox.received("webpush")[0]["payload"] == {"title": "Hello", "body": "Hallo"}
