"""`make bench ARGS=campaign`: fan-out throughput and memory of one Campaign process.

Starts its own redis-server and Identity, Registration and Campaign as separate
processes (tracing exporter `none`, Redis spans off, log level WARNING). By default
Delivery is a counting Enqueue endpoint inside this process (it answers each batch
with ids and counts them), so the figure is Campaign's side of the fan-out:
StreamAudience batches from Registration, BatchGetUsers from Identity, the audience
filter, Liquid rendering with two attributes, and Enqueue calls of 1,000
notifications; timed from LaunchCampaign to the fan-out's end (every targeted device
enqueued or suppressed).

`--real-delivery` puts the real Delivery service (queue, workers, outcomes) in its
place, sending to nginx as the cheap HTTP/2 APNs endpoint Delivery's own benchmark
uses (bench/campaign_delivery.py; every device is then an iOS device), and times
LaunchCampaign to the last provider answer counted in the campaign's report, checking
sent = delivered + bounced + failed. `--queue-only` puts the real Delivery there with
its queue workers off (nothing is sent): the fan-out is timed into Delivery's durable
queue through its real Enqueue, and the queue's length is checked against the sent
count.

Printed: devices/s, CPU microseconds per device of each process (Campaign,
Registration, Identity, redis-server, Delivery and nginx or this process), the load
average, and Campaign's peak RSS (VmHWM). `--devices` / `--users` size the audience
(devices imported with ImportDevices; users upserted with 64 calls in flight);
`--py-spy BINARY` records Campaign, Registration, Identity (and Delivery) during the
run as raw collapsed stacks in `--profile-dir`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio
from google.protobuf import duration_pb2, struct_pb2

from bench.campaign_delivery import RealDelivery
from bench.registration import Services, _create_app, _wait_serving, device_fields
from herald.campaign.v1 import (
    campaign_pb2,
    campaign_service_pb2,
    campaign_service_pb2_grpc,
    push_message_pb2,
)
from herald.delivery.v1 import credentials_pb2, delivery_service_pb2, delivery_service_pb2_grpc
from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import registration_service_pb2 as rpb
from herald.registration.v1 import registration_service_pb2_grpc
from herald.type.v1 import platform_pb2
from services.core.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[1]
APP = "bench"
NAMES = [f"Name{i}" for i in range(2000)]  # first names repeat, as in real audiences
CITIES = [f"City{i}" for i in range(50)]


class CountingDelivery(delivery_service_pb2_grpc.DeliveryServiceServicer):
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    async def ListCredentials(self, request: Any, context: Any) -> Any:
        return delivery_service_pb2.ListCredentialsResponse(
            credentials=[
                credentials_pb2.Credentials(app_id=APP, provider=p)  # type: ignore[arg-type]
                for p in (1, 2, 3)
            ]
        )

    async def Enqueue(self, request: Any, context: Any) -> Any:
        self.count += len(request.notifications)
        response = delivery_service_pb2.EnqueueResponse(queued_count=len(request.notifications))
        for _ in request.notifications:
            response.results.add(notification_id=uuid.uuid4().hex)
        return response

    async def StreamOutcomes(self, request: Any, context: Any) -> AsyncIterator[Any]:
        await asyncio.sleep(3600)
        yield delivery_service_pb2.StreamOutcomesResponse()


async def _seed(
    services: Services, devices: int, users: int, ios_only: bool = False, real: bool = False
) -> None:
    async with grpc.aio.insecure_channel(services.target("identity")) as channel:
        identity: Any = identity_service_pb2_grpc.IdentityServiceStub(channel)
        queue = iter(range(users))

        async def worker() -> None:
            for i in queue:
                attributes = struct_pb2.Struct()
                attributes.update(
                    {"first_name": random.choice(NAMES), "city": random.choice(CITIES)}
                )
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
                    # device_fields alternates Android and iOS; odd numbers are iOS.
                    fields = device_fields(2 * i + 1 if ios_only else i, "d")
                    if real and "apns_environment" in fields:
                        # the real Delivery has the sandbox's (development) APNs key
                        fields["apns_environment"] = platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT
                    fields["user_id"] = f"u{i % users}"
                    fields["authorization_status"] = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
                    batch.append(rpb.ImportedDevice(**fields))
                yield rpb.ImportDevicesRequest(app_id=APP if start == first else "", devices=batch)

        # Calls of 100,000: one stream of a million would outlive the servers'
        # maximum connection age (5 min) on a busy machine.
        for first in range(0, devices, 100_000):
            answer = await registration.ImportDevices(stream(first, min(devices, first + 100_000)))
            assert answer.failed_count == 0, answer.errors[:3]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children so far (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """CPU seconds of the stack's processes between launch and the fan-out's end, and
    optionally a py-spy recording of each (raw collapsed stacks, for where the
    per-device microseconds go)."""

    def __init__(self, pids: dict[str, list[int]], py_spy: str | None, out: Path) -> None:
        self.pids = pids
        self.py_spy = py_spy
        self.out = out
        self.before: dict[str, float] = {}
        self.spies: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.before = self._cpu()
        if self.py_spy:
            self.out.mkdir(parents=True, exist_ok=True)
            for name, pids in self.pids.items():
                if name in ("redis", "bench", "nginx"):
                    continue
                pid = pids[-1]  # a supervised service: its (only) worker
                self.spies.append(
                    subprocess.Popen(
                        [
                            self.py_spy,
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            "200",
                            "--format",
                            "raw",
                            "--nonblocking",
                            "-o",
                            str(self.out / f"{name}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )

    def _cpu(self) -> dict[str, float]:
        return {name: sum(map(_cpu_seconds, pids)) for name, pids in self.pids.items()}

    def stop(self) -> dict[str, float]:
        after = self._cpu()
        used = {name: after[name] - self.before[name] for name in self.pids}
        for spy in self.spies:
            spy.send_signal(signal.SIGINT)
        for spy in self.spies:
            spy.wait(timeout=60)
        return used


async def _run(
    args: argparse.Namespace,
    services: Services,
    campaign_port: int,
    counter: CountingDelivery | None,
    watch: Watch,
) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{campaign_port}") as channel:
        stub: Any = campaign_service_pb2_grpc.CampaignServiceStub(channel)
        message = push_message_pb2.PushMessage(
            content=push_message_pb2.Content(
                title="Spring sale",
                body="Hi {{ first_name | default: 'there' }}, a deal in {{ city }}",
            )
        )
        created = await stub.CreateCampaign(
            campaign_service_pb2.CreateCampaignRequest(
                campaign=campaign_pb2.Campaign(app_id=APP, display_name="bench", message=message),
                request_id=str(uuid.uuid4()),
            )
        )
        cid = created.campaign.campaign_id
        watch.start()
        started = time.perf_counter()
        launched = await stub.LaunchCampaign(
            campaign_service_pb2.LaunchCampaignRequest(campaign_id=cid)
        )
        # The fan-out is done when the audience is resolved and every targeted device
        # was enqueued or suppressed. COMPLETED comes later (after Delivery's outcomes,
        # which the counting endpoint never sends), so with it the fan-out's end is
        # timed; with the real Delivery, the last provider answer in the report.
        request = campaign_service_pb2.WatchCampaignRequest(
            campaign_id=cid, min_interval=duration_pb2.Duration(nanos=100_000_000)
        )
        fanned_out = 0.0
        done = False
        while not done:
            try:
                async for answer in stub.WatchCampaign(request):
                    p = answer.progress
                    answered = p.delivered + p.bounced + p.failed
                    if p.state in (5, 6):
                        done = True
                    elif p.audience_resolved and p.targeted and p.sent + p.suppressed == p.targeted:
                        fanned_out = fanned_out or time.perf_counter() - started
                        done = counter is not None or args.queue_only or answered == p.sent
                    if done:
                        break
            except grpc.aio.AioRpcError as error:
                # A run longer than the servers' maximum connection age (5 min) sees
                # the watch closed UNAVAILABLE: watch again.
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
        elapsed = time.perf_counter() - started
        cpu = watch.stop()
        got = await stub.GetCampaign(campaign_service_pb2.GetCampaignRequest(campaign_id=cid))
        report = (
            await stub.GetCampaignReport(
                campaign_service_pb2.GetCampaignReportRequest(campaign_id=cid)
            )
        ).report
        result = {
            "devices": args.devices,
            "users": args.users,
            "state": campaign_pb2.CampaignState.Name(got.campaign.state),
            "estimated": launched.estimated_devices,
            "targeted": report.targeted,
            "suppressed": report.suppressed,
            "sent": report.sent,
            "suppressed_by_reason": {r.reason: r.count for r in report.suppressed_by_reason},
            "seconds_to_fan_out_end": round(fanned_out, 1),
            "seconds": round(elapsed, 1),
            "devices_per_second": round(report.targeted / elapsed),
            # CPU per targeted device in each process; far steadier than devices/s on
            # a machine other work shares.
            "cpu_us_per_device": {
                name: round(seconds * 1e6 / max(1, report.targeted), 1)
                for name, seconds in cpu.items()
            },
            "load_average_at_end": round(os.getloadavg()[0], 2),
        }
        if counter is not None:
            result["enqueued_at_delivery"] = counter.count
        elif args.queue_only:
            result["queued_at_delivery"] = await _queued(services.redis.url)
            result["redis_top_commands"] = await _command_stats(services.redis.url)
        else:
            answered = report.delivered + report.bounced + report.failed
            result.update(
                delivered=report.delivered,
                bounced=report.bounced,
                failed=report.failed,
                report_adds_up=report.sent == answered
                and report.targeted == report.sent + report.suppressed,
            )
        return result


def _spawn_campaign(env: dict[str, str], log: Path, profile: bool) -> subprocess.Popen[bytes]:
    # --profile: cProfile writes campaign.prof in the working directory when the
    # process ends (SIGINT, so the profile is flushed).
    prefix = ["-m", "cProfile", "-o", str(ROOT / "campaign.prof")] if profile else []
    return subprocess.Popen(
        [sys.executable, *prefix, "-m", "services.campaign"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.campaign", description=__doc__)
    parser.add_argument("--devices", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument(
        "--profile", action="store_true", help="run Campaign under cProfile (campaign.prof)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="BINARY",
        help="record Campaign, Registration and Identity with this py-spy during the fan-out "
        "(raw collapsed stacks in --profile-dir)",
    )
    parser.add_argument("--profile-dir", type=Path, default=ROOT / "campaign-profiles")
    parser.add_argument(
        "--real-delivery",
        action="store_true",
        help="the real Delivery service against nginx; time to the last provider answer",
    )
    parser.add_argument(
        "--delivery-concurrency", type=int, default=200, help="Delivery's sends in flight"
    )
    parser.add_argument(
        "--delivery-processes",
        type=int,
        default=1,
        help="Delivery server processes (HERALD_PROCESSES; 2 uses both cores here)",
    )
    parser.add_argument(
        "--queue-only",
        action="store_true",
        help="the real Delivery without queue workers: time the fan-out into its queue",
    )
    args = parser.parse_args(argv)
    return asyncio.run(_bench(args))


async def _command_stats(redis_url: str, top: int = 8) -> dict[str, str]:
    """redis-server's busiest commands since it started (INFO commandstats): calls and
    microseconds per call."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        stats: dict[str, Any] = await client.info("commandstats")
    finally:
        await client.aclose()
    busiest = sorted(stats.items(), key=lambda item: -item[1]["usec"])[:top]
    return {
        name.removeprefix("cmdstat_"): f"{s['calls']} calls, {s['usec_per_call']:.2f} us/call"
        for name, s in busiest
    }


async def _queued(redis_url: str) -> int:
    """Entries in all of Delivery's queue streams (nothing reads them with workers off)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        total = 0
        async for key in client.scan_iter(match="dlv:q:*", count=1000):
            total += await client.xlen(key)
        return total
    finally:
        await client.aclose()


async def _bench(args: argparse.Namespace) -> int:
    counter: CountingDelivery | None = None
    server: grpc.aio.Server | None = None
    with tempfile.TemporaryDirectory() as workdir:
        services = Services(Path(workdir), [], trace_redis=False).start()
        real: RealDelivery | None = None
        campaign: subprocess.Popen[bytes] | None = None
        try:
            if args.real_delivery or args.queue_only:
                real = await RealDelivery(
                    Path(workdir),
                    services.redis.url,
                    args.delivery_concurrency,
                    args.delivery_processes,
                    sending=not args.queue_only,
                ).start(APP)
                delivery_address = real.address
            else:
                counter = CountingDelivery()  # type: ignore[abstract]
                server = grpc.aio.server()
                delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server(counter, server)
                delivery_address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
                await server.start()
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
            campaign = _spawn_campaign(env, Path(workdir) / "campaign.log", args.profile)
            _wait_serving(campaign_port, "herald.campaign.v1.CampaignService")
            _create_app(services, APP)
            seeded = time.perf_counter()
            await _seed(
                services,
                args.devices,
                args.users,
                ios_only=args.real_delivery,
                real=args.real_delivery or args.queue_only,
            )
            print(
                f"seeded {args.devices} devices / {args.users} users in "
                f"{time.perf_counter() - seeded:.0f} s",
                flush=True,
            )
            pids = {
                "campaign": [campaign.pid],
                "registration": [services.processes[1].pid],
                "identity": [services.processes[0].pid],
                "redis": [services.redis.process.pid],  # type: ignore[union-attr]
                **(real.pids() if real is not None else {"bench": [os.getpid()]}),
            }
            watch = Watch(pids, args.py_spy, args.profile_dir)
            print(f"load average {os.getloadavg()[0]:.2f} at launch", flush=True)
            result = await _run(args, services, campaign_port, counter, watch)
            result["campaign_peak_rss_mb"] = round(_peak_rss_mb(campaign.pid))
            print(json.dumps(result, indent=2))
        finally:
            if campaign is not None:
                campaign.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
                campaign.wait(timeout=30)
            if real is not None:
                await real.stop()
            services.stop()
            if server is not None:
                await server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
