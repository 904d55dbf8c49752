"""A campaign end to end through the real Delivery queue and the provider sandboxes:
every device receives its push once, and the report adds up from StreamOutcomes."""

from __future__ import annotations

import uuid

import grpc
import pytest

from herald.campaign.v1 import campaign_service_pb2_grpc
from herald.delivery.v1 import delivery_service_pb2 as DS
from herald.delivery.v1 import delivery_service_pb2_grpc
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_token_pb2
from services.campaign.clock import ManualClock
from services.campaign.spec import SPEC as CAMPAIGN_SPEC
from services.core.config import Settings
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token
from tests.integration.campaign.conftest import (
    ANDROID,
    APP,
    CS,
    IOS,
    START,
    C,
    Stack,
    create,
    device,
    import_devices,
    tune,
    wait_state,
)
from tests.integration.delivery.conftest import (
    apns_credentials,
    fcm_credentials,
    new_fcm_token,
    sandbox,  # noqa: F401  (the session's provider sandboxes)
)

DEV = platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT


@pytest.fixture
def settings(settings: Settings, sandbox) -> Settings:  # noqa: F811
    """Campaign's test settings with the providers = the session's sandboxes."""
    apns = f"https://127.0.0.1:{sandbox.apns_port}"
    return settings.model_copy(
        update={
            "apns_production_origin": apns,
            "apns_development_origin": apns,
            "fcm_origin": f"https://127.0.0.1:{sandbox.fcm_port}",
            "provider_ca_file": str(sandbox.ca_file),
        }
    )


async def test_campaign_through_the_real_delivery_and_sandboxes(redis, start_services, sandbox):  # noqa: F811
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC, CAMPAIGN_SPEC)
    tune(servers["campaign"].servicer, ManualClock(START))
    channels = {
        name: grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for name, s in servers.items()
    }
    try:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        await identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app=app_pb2.App(display_name="Shop"), app_id=APP, request_id=str(uuid.uuid4())
            )
        )
        delivery = delivery_service_pb2_grpc.DeliveryServiceStub(channels["delivery"])
        for upload in (apns_credentials(sandbox), fcm_credentials(sandbox)):
            await delivery.PutCredentials(DS.PutCredentialsRequest(credentials=upload))
        stack = Stack(
            campaign=campaign_service_pb2_grpc.CampaignServiceStub(channels["campaign"]),
            registration=registration_service_pb2_grpc.RegistrationServiceStub(
                channels["registration"]
            ),
            identity=identity,
            servers=servers,
            delivery=None,
            clock=ManualClock(START),
            redis=redis,
            client_secret="",
            start_campaign=None,
        )
        devices = []
        for i in range(10):
            ios = device(f"ios-{i}", IOS, apns_environment=DEV)
            ios.token.CopyFrom(
                push_token_pb2.PushToken(
                    apns=push_token_pb2.ApnsToken(device_token=new_device_token())
                )
            )
            android = device(f"and-{i}", ANDROID)
            android.token.CopyFrom(
                push_token_pb2.PushToken(
                    fcm=push_token_pb2.FcmToken(registration_token=new_fcm_token())
                )
            )
            devices += [ios, android]
        await import_devices(stack, devices)
        created = await create(stack)
        await stack.campaign.LaunchCampaign(
            CS.LaunchCampaignRequest(campaign_id=created.campaign_id)
        )
        # COMPLETED means the last provider answered: nothing is in flight any more.
        r = await wait_state(stack, created.campaign_id, C.CAMPAIGN_STATE_COMPLETED, within=30)
        assert r.in_flight == 0
        assert (r.targeted, r.sent, r.delivered) == (20, 20, 20)
        assert len(sandbox.received("apns", status=200)) == 10
        assert len(sandbox.received("fcm", status=200)) == 10
    finally:
        for channel in channels.values():
            await channel.close(None)
