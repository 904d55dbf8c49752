"""Campaign wired to real Registration and Identity servers on a real redis-server,
and to a Delivery on loopback (the recording stand-in until Delivery's queue lands).

Schedules use a ManualClock installed on the Campaign servicer (`servicer.use_clock`);
tests move it forward explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from redis.asyncio import Redis

from herald.campaign.v1 import (
    audience_pb2,
    campaign_pb2,
    campaign_service_pb2,
    campaign_service_pb2_grpc,
    push_message_pb2,
)
from herald.identity.v1 import (
    app_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
    user_pb2,
)
from herald.registration.v1 import registration_service_pb2 as rpb
from herald.registration.v1 import registration_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_token_pb2
from services.campaign.clock import ManualClock
from services.campaign.servicer import CampaignServicer
from services.campaign.spec import SPEC as CAMPAIGN_SPEC
from services.core.config import Settings
from services.core.embedded_redis import free_port
from services.core.server import RunningServer
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from tests.integration.campaign.recording_delivery import RecordingDelivery, RecordingServer
from tests.web_push_keys import p256dh

CS = campaign_service_pb2
C = campaign_pb2
IOS, ANDROID, WEB = (
    platform_pb2.PLATFORM_IOS,
    platform_pb2.PLATFORM_ANDROID,
    platform_pb2.PLATFORM_WEB,
)
APP = "shop"
AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
PROVISIONAL = platform_pb2.AUTHORIZATION_STATUS_PROVISIONAL
DENIED = platform_pb2.AUTHORIZATION_STATUS_DENIED
START = 1_900_000_000.0  # 2030-03-17T17:46:40Z, the manual clock's origin


@pytest.fixture
async def delivery_double() -> AsyncIterator[RecordingServer]:
    server = RecordingServer()
    await server.start(free_port())
    yield server
    await server.stop()


@pytest.fixture
def settings(settings: Settings, delivery_double: RecordingServer) -> Settings:
    """The shared test settings (tests/conftest.py) with Delivery = the recording double."""
    return settings.model_copy(
        update={
            "log_level": "WARNING",
            "shutdown_grace_seconds": 1.0,
            "delivery_address": f"127.0.0.1:{delivery_double.port}",
        }
    )


@dataclass
class Stack:
    campaign: Any  # CampaignServiceAsyncStub
    registration: Any
    identity: Any
    servers: dict[str, RunningServer]
    delivery: RecordingDelivery
    clock: ManualClock
    redis: Redis
    client_secret: str
    start_campaign: Callable[[], Awaitable[tuple[RunningServer, Any]]]

    @property
    def servicer(self) -> CampaignServicer:
        servicer: CampaignServicer = self.servers["campaign"].servicer
        return servicer


def tune(servicer: CampaignServicer, clock: ManualClock) -> None:
    servicer.use_clock(clock)
    servicer.deps.tuning.batch_size = 20
    servicer.deps.tuning.poll_seconds = 0.05
    servicer.deps.tuning.lease_seconds = 1.5


@pytest.fixture
async def stack(
    redis: Redis, start_services, start_service, delivery_double: RecordingServer
) -> AsyncIterator[Stack]:
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC, CAMPAIGN_SPEC)
    clock = ManualClock(START)
    tune(servers["campaign"].servicer, clock)
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for s in servers.values()]
    by_name = dict(zip(servers, channels, strict=True))
    identity = identity_service_pb2_grpc.IdentityServiceStub(by_name["identity"])
    created = await identity.CreateApp(  # type: ignore[misc]
        identity_service_pb2.CreateAppRequest(
            app=app_pb2.App(display_name="Shop"), app_id=APP, request_id=str(uuid.uuid4())
        )
    )
    settings_of_campaign = servers["campaign"].runtime.settings

    async def another_campaign() -> tuple[RunningServer, Any]:
        """A second Campaign process (same Redis, same services): its stub and server."""
        server = await start_service(
            CAMPAIGN_SPEC, settings_of_campaign.model_copy(update={"campaign_port": free_port()})
        )
        tune(server.servicer, clock)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        return server, campaign_service_pb2_grpc.CampaignServiceStub(channel)

    yield Stack(
        campaign=campaign_service_pb2_grpc.CampaignServiceStub(by_name["campaign"]),
        registration=registration_service_pb2_grpc.RegistrationServiceStub(by_name["registration"]),
        identity=identity,
        servers=servers,
        delivery=delivery_double.servicer,
        clock=clock,
        redis=redis,
        client_secret=created.client_secret,
        start_campaign=another_campaign,
    )
    for channel in channels:
        await channel.close(None)


# -- data -----------------------------------------------------------------------------------
def apns_token() -> push_token_pb2.PushToken:
    return push_token_pb2.PushToken(
        apns=push_token_pb2.ApnsToken(device_token=os.urandom(32).hex())
    )


def fcm_token() -> push_token_pb2.PushToken:
    raw = base64.urlsafe_b64encode(os.urandom(90)).decode().rstrip("=")
    return push_token_pb2.PushToken(fcm=push_token_pb2.FcmToken(registration_token="f" + raw))


def web_token() -> push_token_pb2.PushToken:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return push_token_pb2.PushToken(
        web_push=push_token_pb2.WebPushSubscription(
            endpoint=f"https://push.example.net/send/{uuid.uuid4().hex}",
            p256dh=b64(p256dh()),
            auth=b64(os.urandom(16)),
        )
    )


def device(
    device_id: str, platform: int = IOS, user_id: str = "", **fields: Any
) -> rpb.ImportedDevice:
    token = {IOS: apns_token, ANDROID: fcm_token, WEB: web_token}[platform]()  # type: ignore[index]
    defaults: dict[str, Any] = {  # type: ignore[assignment]
        IOS: {
            "os_version": "17.4",
            "authorization_status": AUTHORIZED,
            "apns_environment": platform_pb2.APNS_ENVIRONMENT_PRODUCTION,
        },
        ANDROID: {"os_version": "12"},
        WEB: {"os_version": "1", "authorization_status": AUTHORIZED},
    }[platform]  # type: ignore[index]
    defaults.update(fields)
    return rpb.ImportedDevice(
        device_id=device_id,
        platform=platform,  # type: ignore[arg-type]
        token=token,
        user_id=user_id,
        **defaults,
    )


async def import_devices(
    stack: Stack, devices: list[rpb.ImportedDevice], app_id: str = APP
) -> None:
    async def requests() -> AsyncIterator[rpb.ImportDevicesRequest]:
        for start in range(0, len(devices), 1000):
            yield rpb.ImportDevicesRequest(app_id=app_id, devices=devices[start : start + 1000])

    answer = await stack.registration.ImportDevices(requests())
    assert answer.failed_count == 0, answer.errors


async def upsert_user(
    stack: Stack, external_id: str, time_zone: str = "", **attributes: Any
) -> None:
    struct = struct_pb2.Struct()
    struct.update(attributes)
    await stack.identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(
            user=user_pb2.User(external_id=external_id, attributes=struct, time_zone=time_zone)
        )
    )


def message(
    body: str = "Hi {{ first_name | default: 'there' }}", **fields: Any
) -> push_message_pb2.PushMessage:
    return push_message_pb2.PushMessage(
        content=push_message_pb2.Content(title="Sale", body=body), **fields
    )


def campaign(**fields: Any) -> C.Campaign:
    fields.setdefault("app_id", APP)
    fields.setdefault("display_name", "Spring sale")
    fields.setdefault("message", message())
    return C.Campaign(**fields)


async def create(stack: Stack, **fields: Any) -> C.Campaign:
    answer = await stack.campaign.CreateCampaign(
        CS.CreateCampaignRequest(campaign=campaign(**fields), request_id=str(uuid.uuid4()))
    )
    return answer.campaign


async def launch(stack: Stack, campaign_id: str) -> CS.LaunchCampaignResponse:
    return await stack.campaign.LaunchCampaign(CS.LaunchCampaignRequest(campaign_id=campaign_id))


async def report(stack: Stack, campaign_id: str) -> Any:
    return (
        await stack.campaign.GetCampaignReport(CS.GetCampaignReportRequest(campaign_id=campaign_id))
    ).report


async def wait_for(
    check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_state(stack: Stack, campaign_id: str, state: int, within: float = 10.0) -> Any:
    async def reached() -> bool:
        got = await stack.campaign.GetCampaign(CS.GetCampaignRequest(campaign_id=campaign_id))
        return bool(got.campaign.state == state)

    await wait_for(reached, within, f"state {C.CampaignState.Name(state)}")  # type: ignore[arg-type]
    return await report(stack, campaign_id)


def audience(**condition: Any) -> audience_pb2.Audience:
    return audience_pb2.Audience(filter=audience_pb2.AudienceFilter(**condition))
