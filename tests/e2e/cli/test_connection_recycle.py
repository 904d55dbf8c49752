"""Servers recycle client connections (HERALD_CONNECTION_MAX_AGE_SECONDS); a stream
open at that moment ends UNAVAILABLE. The CLI's long streams carry on across it: a
watch keeps following the campaign to its end, an export goes on from its cursor.
Here the service a test follows recycles connections every second (1 s of grace), so its
long streams are cut several times."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
from google.protobuf.struct_pb2 import Struct

from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import registration_service_pb2, registration_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_token_pb2
from services.campaign.spec import SPEC as CAMPAIGN_SPEC
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import REPO, cli_env, create_app, create_campaign, run_cli
from .test_send_and_trace import _put_credentials

DEVICES = 65
SHORT_LIVED = {"connection_max_age_seconds": 1.0, "connection_age_grace_seconds": 1.0}


async def _start(start_service, start_services, settings, short_lived, *specs) -> dict[str, str]:
    """The services, with only `short_lived` recycling its connections every second (the
    one whose stream the test follows; the others keep the default)."""
    servers = await start_services(*specs)
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    wired = settings.model_copy(
        update={
            **SHORT_LIVED,
            **{f"{name}_address": address for name, address in addresses.items()},
            f"{short_lived.name}_port": 0,
        }
    )
    server = await start_service(short_lived, wired)
    addresses[short_lived.name] = f"127.0.0.1:{server.port}"
    return addresses


async def test_watch_follows_a_campaign_to_its_end_across_recycled_connections(
    start_service, start_services, settings, redis, sandbox
):
    addresses = await _start(
        start_service, start_services, settings, CAMPAIGN_SPEC,
        REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC,
    )  # fmt: skip
    await create_app(addresses)
    await _put_credentials(addresses, sandbox)
    async with grpc.aio.insecure_channel(addresses["registration"]) as channel:
        stub = registration_service_pb2_grpc.RegistrationServiceStub(channel)
        for i in range(DEVICES):
            await stub.RegisterDevice(
                registration_service_pb2.RegisterDeviceRequest(
                    app_id="shop",
                    device_id=f"phone-{i}",
                    platform=platform_pb2.PLATFORM_IOS,
                    os_version="17.4",
                    token=push_token_pb2.PushToken(
                        apns=push_token_pb2.ApnsToken(device_token=new_device_token())
                    ),
                    authorization_status=platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED,
                    apns_environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
                )
            )
    # 60 a minute: a minute's worth at once, then one a second: the campaign sends for
    # about five seconds and its watch is cut every two.
    campaign_id = await create_campaign(
        addresses, "Paced", "--title", "Hi", "--body", "x", "--throttle", "60"
    )

    watched = await run_cli("campaigns", "launch", campaign_id, "--watch", addresses=addresses)

    assert watched.code == 0, watched.stderr
    assert f"campaign {campaign_id} COMPLETED: {DEVICES} delivered" in watched.stdout
    assert "avg " in watched.stdout  # the last line's rate is the watch's average
    assert len(sandbox.received("apns", status=200)) == DEVICES


async def test_export_goes_on_from_its_cursor_when_its_stream_is_cut(
    start_service, start_services, settings, redis
):
    addresses = await _start(
        start_service, start_services, settings, IDENTITY_SPEC, REGISTRATION_SPEC
    )
    await create_app(addresses)
    users = [f"user-{n:05d}" for n in range(3000)]
    bio = Struct()
    bio.update({"bio": "x" * 4000})  # big enough users that the stream stalls on flow control
    async with grpc.aio.insecure_channel(addresses["identity"]) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)

        async def upsert(external_id: str) -> None:
            request = identity_service_pb2.UpsertUserRequest(
                user=user_pb2.User(external_id=external_id, attributes=bio)
            )
            for _ in range(5):  # this channel's connections are recycled too
                try:
                    await stub.UpsertUser(request)
                    return
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
            raise AssertionError(f"could not create {external_id}")

        for start in range(0, len(users), 200):
            await asyncio.gather(*(upsert(u) for u in users[start : start + 200]))
    # The reader stops after the first line: the pipe fills, the CLI blocks writing, the
    # server's stream stalls on flow control until the connection's age and grace are
    # over and it is cut. (Not SIGSTOP: a stopped Python writer loses pipe data.)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "users", "export", "--all", "--batch-size", "50",
        cwd=REPO, env=cli_env(addresses), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    assert first, (await process.communicate())[1].decode()
    await asyncio.sleep(3.0)  # a slow reader: the pipe fills, the CLI waits on it
    rest, err = await asyncio.wait_for(process.communicate(), timeout=120)

    assert process.returncode == 0, err.decode()
    exported = [
        json.loads(line)["user"]["external_id"] for line in (first + rest).decode().splitlines()
    ]
    assert sorted(exported) == users  # every user exactly once, none lost at the cut
    assert "exported" in err.decode()
