"""Secrets and push tokens never reach the logs, even at DEBUG: every provider.

tests/e2e/test_no_secrets_in_logs.py runs the whole stack as processes through an APNs
push. This runs Registration, Identity and Delivery in process, with API keys required
and the logging the services configure at start-up (`configure_logging`, JSON, DEBUG:
every library's debug lines too), through what that one leaves out: FCM and Web Push
(service-account and VAPID private keys, the FCM OAuth token and VAPID JWT Delivery
mints, a subscription's endpoint and keys), a dead APNs token that Delivery reports to
Registration, and refused callers (a wrong client secret, API key and admin key). Not
one of those secrets may appear in what was logged.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from herald.delivery.v1 import delivery_service_pb2 as DS
from herald.delivery.v1 import delivery_service_pb2_grpc
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2, registration_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_options_pb2, push_token_pb2
from services.core.auth import ADMIN_KEY_HEADER, API_KEY_HEADER
from services.core.logs import WIRE_LOGGERS, configure_logging
from services.delivery.spec import SPEC as DELIVERY
from services.identity.spec import SPEC as IDENTITY
from services.registration.spec import SPEC as REGISTRATION
from services.sandbox.apns import new_device_token
from tests.integration.delivery.conftest import (
    apns_credentials,
    apns_notification,
    fcm_credentials,
    fcm_notification,
    new_fcm_token,
    seconds,
    vapid_credentials,
    webpush_notification,
)

# The session's provider sandboxes and Delivery's settings for them, as fixtures here too.
from tests.integration.delivery.conftest import delivery_settings as delivery_settings
from tests.integration.delivery.conftest import sandbox as sandbox

ADMIN = "admin-" + os.urandom(16).hex()
INTERNAL = "internal-" + os.urandom(16).hex()
# What bearer tokens look like on the wire: a JWT's base64url header ('{"' = eyJ) and
# the sandbox's FCM access tokens (Google's own start with ya29. too).
BEARER_MARKERS = ("eyJ", "ya29.")


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Everything logged through the services' own logging set-up, at DEBUG."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in WIRE_LOGGERS})
    configure_logging("herald", "DEBUG", "json")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    handlers, level, wire = saved
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, wire_level in wire.items():
        logging.getLogger(name).setLevel(wire_level)


def _pem_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM key: any one of them in a log is a leak."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


async def _refused(call: Any, request: Any, metadata: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=metadata)
    return caught.value.code()


async def test_no_secret_or_token_is_logged_even_at_debug(
    logged, redis, start_services, sandbox, delivery_settings
):
    secure = delivery_settings.model_copy(
        update={
            "require_api_keys": True,
            "admin_key": ADMIN,
            "internal_key": INTERNAL,
            "api_key_cache_seconds": 0.0,
        }
    )
    servers = await start_services(REGISTRATION, IDENTITY, DELIVERY, base=secure)
    admin = ((ADMIN_KEY_HEADER, ADMIN),)
    channels = {n: grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for n, s in servers.items()}
    try:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        registration = registration_service_pb2_grpc.RegistrationServiceStub(
            channels["registration"]
        )
        delivery = delivery_service_pb2_grpc.DeliveryServiceStub(channels["delivery"])

        app = await identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app_id="shop", app=app_pb2.App(display_name="Shop"), request_id=str(uuid.uuid4())
            ),
            metadata=admin,
        )
        keys = {}
        for scope in (app_pb2.API_KEY_SCOPE_REGISTER, app_pb2.API_KEY_SCOPE_FULL):
            made = await identity.CreateApiKey(
                identity_service_pb2.CreateApiKeyRequest(
                    app_id="shop", api_key=app_pb2.ApiKey(display_name="k", scope=scope)
                ),
                metadata=admin,
            )
            keys[scope] = made.key
        gateway = ((API_KEY_HEADER, keys[app_pb2.API_KEY_SCOPE_REGISTER]),)
        backend = ((API_KEY_HEADER, keys[app_pb2.API_KEY_SCOPE_FULL]),)

        token = new_device_token()

        def register(secret: str) -> registration_service_pb2.RegisterDeviceRequest:
            return registration_service_pb2.RegisterDeviceRequest(
                app_id="shop",
                device_id="phone",
                platform=platform_pb2.PLATFORM_IOS,
                os_version="17.4",
                user_id="alice",
                client_secret=secret,
                token=push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=token)),
                authorization_status=platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED,
                apns_environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
            )

        await registration.RegisterDevice(register(app.client_secret), metadata=gateway)
        # Refused callers: their wrong secrets must not be logged either.
        wrong_secret = "cs_" + os.urandom(24).hex()
        wrong_key = "hk_live_" + os.urandom(24).hex()
        wrong_admin = "admin-" + os.urandom(16).hex()
        refusals = [
            await _refused(registration.RegisterDevice, register(wrong_secret), gateway),
            await _refused(
                registration.RegisterDevice,
                register(app.client_secret),
                ((API_KEY_HEADER, wrong_key),),
            ),
            await _refused(
                identity.ListApps,
                identity_service_pb2.ListAppsRequest(),
                ((ADMIN_KEY_HEADER, wrong_admin),),
            ),
        ]
        assert refusals == [
            grpc.StatusCode.PERMISSION_DENIED,  # CLIENT_SECRET_INVALID
            grpc.StatusCode.UNAUTHENTICATED,  # API_KEY_INVALID
            grpc.StatusCode.UNAUTHENTICATED,  # ADMIN_KEY_INVALID
        ]

        uploads = (apns_credentials(sandbox), fcm_credentials(sandbox), vapid_credentials(sandbox))
        for upload in uploads:
            await delivery.PutCredentials(
                DS.PutCredentialsRequest(credentials=upload), metadata=backend
            )
        dead = new_device_token()
        sandbox.apns.set_token(dead, "unregistered", unregistered_at_ms=int(time.time() * 1000))
        fcm_token = new_fcm_token()
        subscription = sandbox.webpush.create_subscription(sandbox.credentials.vapid_public_key)
        outcomes = []
        for notification in (
            apns_notification(token),
            apns_notification(dead),
            fcm_notification(fcm_token),
            webpush_notification(subscription),
        ):
            notification.ClearField("notification_id")
            answer = await delivery.Send(
                DS.SendRequest(
                    notification=notification,
                    request_id=str(uuid.uuid4()),
                    timeout=seconds(5),
                ),
                metadata=backend,
            )
            outcomes.append(answer.results[0].outcome)
        assert outcomes == [
            push_options_pb2.DELIVERY_OUTCOME_DELIVERED,
            push_options_pb2.DELIVERY_OUTCOME_TOKEN_INVALID,
            push_options_pb2.DELIVERY_OUTCOME_DELIVERED,
            push_options_pb2.DELIVERY_OUTCOME_DELIVERED,
        ]
    finally:
        for channel in channels.values():
            await channel.close(None)

    lines = [json.loads(line) for line in logged.getvalue().splitlines() if line]
    # The capture works and is verbose: the services' own lines and libraries' debug lines.
    assert any(line["message"] == "serving" for line in lines)
    assert any(line["level"] == "DEBUG" for line in lines)
    text = logged.getvalue()
    service_account = json.loads(uploads[1].fcm.service_account_json)
    secrets = {
        "admin key": ADMIN,
        "internal key": INTERNAL,
        "wrong admin key": wrong_admin,
        "client secret": app.client_secret,
        "wrong client secret": wrong_secret,
        "register key": keys[app_pb2.API_KEY_SCOPE_REGISTER],
        "full key": keys[app_pb2.API_KEY_SCOPE_FULL],
        "wrong api key": wrong_key,
        "apns token": token,
        "dead apns token": dead,
        "fcm token": fcm_token,
        "web push endpoint": subscription["endpoint"],
        "web push auth": subscription["keys"]["auth"],
        "web push p256dh": subscription["keys"]["p256dh"],
        "fcm private key id": service_account["private_key_id"],
        **{f"bearer token ({m})": m for m in BEARER_MARKERS},
    }
    for name, pem in (
        ("apns .p8 key", uploads[0].apns_token.private_key_pem),
        ("fcm private key", service_account["private_key"]),
        ("vapid private key", uploads[2].web_push.private_key),
    ):
        secrets |= {f"{name} line {i}": line for i, line in enumerate(_pem_lines(pem))}
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert leaked == [], leaked
