"""`python -m bench.campaign_preview`: how long PreviewAudience and LaunchCampaign's
estimate take on a large app.

Starts its own redis-server, Identity, Registration and Campaign (bench.campaign's
setup, Delivery a counting endpoint), imports `--devices` devices (half iOS, half
Android, four per user, `--users` users of which `--identity-users` are upserted in
Identity with a `city` attribute), then times, each `--rounds` times (median and
slowest printed, with Registration's CPU per call):

- CountAudience exact = true (the old full scan), once;
- CountAudience in its estimate mode (the default sample);
- PreviewAudience with no filter (Registration's estimate alone), with a platform
  filter (pushed down), and with two user-attribute filters (a 2,000-device sample of
  the stream evaluated with its users from Identity): `city` equals one of 50 cities
  (rare), and `city` exists (every device of the upserted users: the truth is known);
- LaunchCampaign of a campaign scheduled an hour ahead (checks + estimate; no
  fan-out), then cancelled.

Each estimate is printed next to the exact figure where one is known.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from bench.campaign import APP, CITIES, CountingDelivery, _spawn_campaign
from bench.registration import Services, _cpu_seconds, _create_app, _wait_serving, device_fields
from herald.campaign.v1 import (
    audience_pb2,
    campaign_pb2,
    campaign_service_pb2,
    campaign_service_pb2_grpc,
    push_message_pb2,
)
from herald.delivery.v1 import delivery_service_pb2_grpc
from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import device_pb2, registration_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2 as rpb
from herald.type.v1 import filter_pb2, platform_pb2
from services.core.embedded_redis import free_port


async def _seed(services: Services, devices: int, users: int, identity_users: int) -> None:
    async with grpc.aio.insecure_channel(services.target("identity")) as channel:
        identity: Any = identity_service_pb2_grpc.IdentityServiceStub(channel)
        queue = iter(range(identity_users))

        async def worker() -> None:
            for i in queue:
                attributes = struct_pb2.Struct()
                attributes.update({"city": random.choice(CITIES)})
                await identity.UpsertUser(
                    identity_service_pb2.UpsertUserRequest(
                        user=user_pb2.User(external_id=f"u{i}", attributes=attributes)
                    )
                )

        await asyncio.gather(*(worker() for _ in range(64)))
    async with grpc.aio.insecure_channel(services.target("registration")) as channel:
        registration: Any = registration_service_pb2_grpc.RegistrationServiceStub(channel)

        async def stream(first: int, end: int) -> AsyncIterator[rpb.ImportDevicesRequest]:
            for start in range(first, end, 5000):
                batch = []
                for i in range(start, min(end, start + 5000)):
                    fields = device_fields(i, "d")  # alternates Android and iOS
                    fields["user_id"] = f"u{i % users}"
                    fields["authorization_status"] = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
                    batch.append(rpb.ImportedDevice(**fields))
                yield rpb.ImportDevicesRequest(app_id=APP if start == first else "", devices=batch)

        # Calls of 100,000: a longer stream would outlive the servers' connection age.
        for first in range(0, devices, 100_000):
            answer = await registration.ImportDevices(stream(first, min(devices, first + 100_000)))
            assert answer.failed_count == 0, answer.errors[:3]


async def _timed(
    rounds: int, registration_pid: int, call: Callable[[], Awaitable[Any]]
) -> tuple[Any, dict[str, float]]:
    seconds: list[float] = []
    cpu_before = _cpu_seconds(registration_pid)
    answer = None
    for _ in range(rounds):
        started = time.perf_counter()
        answer = await call()
        seconds.append(time.perf_counter() - started)
    cpu = _cpu_seconds(registration_pid) - cpu_before
    return answer, {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "slowest_ms": round(max(seconds) * 1000, 1),
        "registration_cpu_ms_per_call": round(cpu * 1000 / rounds, 1),
    }


def _preview_figures(answer: Any) -> dict[str, Any]:
    return {
        "estimated_devices": answer.estimated_devices,
        "estimated_users": answer.estimated_users,
        "exact": answer.exact,
    }


async def _measure(args: argparse.Namespace, services: Services, campaign_port: int) -> dict:
    pid = services.processes[1].pid
    result: dict[str, Any] = {}
    async with (
        grpc.aio.insecure_channel(services.target("registration")) as reg_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{campaign_port}") as channel,
    ):
        registration: Any = registration_service_pb2_grpc.RegistrationServiceStub(reg_channel)
        campaign: Any = campaign_service_pb2_grpc.CampaignServiceStub(channel)
        visible = rpb.AudienceQuery(app_ids=[APP], reachability=device_pb2.REACHABILITY_VISIBLE)

        async def count(**request: Any) -> Any:
            return await registration.CountAudience(
                rpb.CountAudienceRequest(query=visible, **request), timeout=600
            )

        exact, timing = await _timed(1, pid, lambda: count(exact=True))
        result["count_exact"] = {
            "devices": exact.device_count,
            "users": exact.user_count,
            **timing,
        }
        print(json.dumps({"count_exact": result["count_exact"]}), flush=True)
        estimate, timing = await _timed(args.rounds, pid, lambda: count())
        result["count_estimate"] = {
            "devices": estimate.device_count,
            "users": estimate.user_count,
            "exact": estimate.exact,
            "examined": estimate.examined_count,
            "device_error_pct": round(
                100 * (estimate.device_count - exact.device_count) / exact.device_count, 2
            ),
            "user_error_pct": round(
                100 * (estimate.user_count - exact.user_count) / max(1, exact.user_count), 2
            ),
            **timing,
        }

        def preview(condition: audience_pb2.AudienceFilter | None) -> Callable[[], Awaitable]:
            audience = audience_pb2.Audience()
            if condition is not None:
                audience.filter.CopyFrom(condition)
            request = campaign_service_pb2.PreviewAudienceRequest(app_id=APP, audience=audience)
            return lambda: campaign.PreviewAudience(request, timeout=600)

        ios = audience_pb2.AudienceFilter(
            platforms=audience_pb2.PlatformList(platforms=[platform_pb2.PLATFORM_IOS])
        )
        city = audience_pb2.AudienceFilter(
            user_attribute=filter_pb2.AttributeFilter(
                attribute="city", equals=struct_pb2.Value(string_value=CITIES[0])
            )
        )
        has_city = audience_pb2.AudienceFilter(
            user_attribute=filter_pb2.AttributeFilter(attribute="city", exists=True)
        )
        filters = (
            ("no_filter", None),
            ("ios", ios),
            ("city_equals", city),
            ("city_exists", has_city),
        )
        for name, condition in filters:
            answer, timing = await _timed(args.rounds, pid, preview(condition))
            result[f"preview_{name}"] = {**_preview_figures(answer), **timing}
        # Every device of the users upserted in Identity (all of them have a city).
        with_city = min(args.identity_users, args.users) * (args.devices // args.users)
        result["preview_city_exists"]["truth_devices"] = with_city
        result["preview_city_exists"]["device_error_pct"] = round(
            100 * (result["preview_city_exists"]["estimated_devices"] - with_city) / with_city, 1
        )
        result["preview_ios"]["exact_ios_devices"] = next(
            (c.count for c in exact.platform_counts if c.platform == platform_pb2.PLATFORM_IOS), 0
        )

        async def launch() -> Any:
            send_time = timestamp_pb2.Timestamp()
            send_time.FromSeconds(int(time.time()) + 3600)
            created = await campaign.CreateCampaign(
                campaign_service_pb2.CreateCampaignRequest(
                    campaign=campaign_pb2.Campaign(
                        app_id=APP,
                        display_name="preview bench",
                        message=push_message_pb2.PushMessage(
                            content=push_message_pb2.Content(title="t", body="b")
                        ),
                        schedule=campaign_pb2.Schedule(send_time=send_time),
                    ),
                    request_id=str(uuid.uuid4()),
                )
            )
            cid = created.campaign.campaign_id
            launched = await campaign.LaunchCampaign(
                campaign_service_pb2.LaunchCampaignRequest(campaign_id=cid), timeout=600
            )
            await campaign.CancelCampaign(
                campaign_service_pb2.CancelCampaignRequest(campaign_id=cid)
            )
            return launched

        launched, timing = await _timed(args.rounds, pid, launch)
        result["launch_create_cancel"] = {"estimated_devices": launched.estimated_devices, **timing}
    return result


async def _bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as workdir:
        services = Services(Path(workdir), [], trace_redis=False).start()
        counter = CountingDelivery()  # type: ignore[abstract]
        server = grpc.aio.server()
        delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server(counter, server)
        delivery_address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        campaign: subprocess.Popen[bytes] | None = None
        try:
            campaign_port = free_port()
            env = {
                **os.environ,
                "REDIS_URL": services.redis.url,
                "HERALD_TRACE_EXPORTER": "none",
                "HERALD_LOG_LEVEL": "WARNING",
                "HERALD_TRACE_REDIS": "false",
                "HERALD_CAMPAIGN_PORT": str(campaign_port),
                "HERALD_IDENTITY_ADDRESS": services.target("identity"),
                "HERALD_REGISTRATION_ADDRESS": services.target("registration"),
                "HERALD_DELIVERY_ADDRESS": delivery_address,
            }
            campaign = _spawn_campaign(env, Path(workdir) / "campaign.log", False)
            _wait_serving(campaign_port, "herald.campaign.v1.CampaignService")
            _create_app(services, APP)
            seeded = time.perf_counter()
            await _seed(services, args.devices, args.users, args.identity_users)
            print(
                f"seeded {args.devices} devices / {args.users} users in "
                f"{time.perf_counter() - seeded:.0f} s",
                flush=True,
            )
            load_before = os.getloadavg()[0]
            result = await _measure(args, services, campaign_port)
            result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            print(json.dumps(result, indent=2), flush=True)
        finally:
            if campaign is not None:
                campaign.terminate()
                campaign.wait(timeout=30)
            services.stop()
            await server.stop(0)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.campaign_preview", description=__doc__)
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=250_000)
    parser.add_argument(
        "--identity-users", type=int, default=20_000, help="users upserted in Identity"
    )
    parser.add_argument("--rounds", type=int, default=5)
    return asyncio.run(_bench(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
