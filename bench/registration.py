"""Registration benchmark: RegisterDevice throughput and latency, ImportDevices rate,
Redis bytes per registered device.

`make bench ARGS=registration` (or `.venv/bin/python -m bench registration`) runs it
with the defaults; `.venv/bin/python -m bench.registration --help` lists the knobs.
It starts its own redis-server and the Identity and Registration services as real
processes on loopback, creates an app through Identity, and drives the load from
separate processes (`python -m bench.registration load ...`), each bounded in time.
The figures go to docs/benchmarks/registration.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import redis
from google.protobuf import field_mask_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import device_pb2, registration_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2, push_token_pb2
from services.core.embedded_redis import EmbeddedRedis, free_port
from services.registration.store import (
    DEVICE_SHARDS,
    TOKEN_GROUPS,
    TOKEN_PARTS,
    devices_key,
    token_part_key,
)

ROOT = Path(__file__).resolve().parent.parent
IOS = platform_pb2.PLATFORM_IOS
ANDROID = platform_pb2.PLATFORM_ANDROID


# -- what a load process sends -------------------------------------------------------


def _fcm(seed: int) -> str:
    # Real FCM registration tokens are ~150-165 characters: "<22 chars>:APA91b<~130 chars>".
    raw = seed.to_bytes(8, "big") * 13
    return (
        base64.urlsafe_b64encode(raw[:16]).decode().rstrip("=")
        + ":APA91b"
        + base64.urlsafe_b64encode(raw[:96]).decode().rstrip("=")
    )


def _apns(seed: int) -> str:
    return (seed.to_bytes(8, "big") * 4).hex()


def device_fields(i: int, prefix: str) -> dict[str, Any]:
    """Half iOS (APNs), half Android (FCM); realistic field sizes."""
    common: dict[str, Any] = {
        "device_id": f"{prefix}{uuid.UUID(int=i)}",
        "app_version": "4.12.0",
        "locale": "fr-FR",
        "time_zone": "Europe/Paris",
    }
    if i % 2:
        return {
            **common,
            "platform": IOS,
            "os_version": "17.4",
            "token": push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=_apns(i))),
            "apns_environment": platform_pb2.APNS_ENVIRONMENT_PRODUCTION,
            "authorization_status": platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED,
        }
    return {
        **common,
        "platform": ANDROID,
        "os_version": "14",
        "token": push_token_pb2.PushToken(fcm=push_token_pb2.FcmToken(registration_token=_fcm(i))),
    }


async def _register_load(args: argparse.Namespace) -> dict[str, Any]:
    channel = grpc.aio.insecure_channel(args.target)
    stub: Any = registration_service_pb2_grpc.RegistrationServiceStub(channel)
    requests = [
        pb.RegisterDeviceRequest(app_id=args.app_id, **device_fields(i, f"w{args.worker}-"))
        for i in range(args.pool)
    ]
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.seconds

    async def call(request: pb.RegisterDeviceRequest, scheduled: float) -> None:
        nonlocal errors
        try:
            await stub.RegisterDevice(request, timeout=5)
        except grpc.aio.AioRpcError:
            errors += 1
            return
        # Measured from when the call was due, not when it left: a stalled client
        # does not hide server latency (no coordinated omission).
        latencies.append(time.perf_counter() - scheduled)

    started = time.perf_counter()
    if args.once:
        # Warm-up: every device of the pool once, so the measured phases are flushes.
        queue = iter(requests)

        async def creator() -> None:
            for request in queue:
                await call(request, time.perf_counter())

        await asyncio.gather(*(creator() for _ in range(args.concurrency)))
    elif args.rate:
        interval = 1.0 / args.rate
        tasks = set()
        n = 0
        while True:
            due = started + n * interval
            if due >= deadline:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(call(requests[n % len(requests)], due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)
    else:
        counter = iter(range(10**12))

        async def worker() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                await call(requests[i % len(requests)], time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    await channel.close(None)
    return {"calls": len(latencies), "errors": errors, "seconds": elapsed, "latencies": latencies}


def _register_load_sync(args: argparse.Namespace) -> dict[str, Any]:
    """The max phase with grpc's synchronous client and futures: the calls run in
    grpc's C core threads and only their completions come back to Python, so a load
    process costs less CPU per call than with grpc.aio (more is left for the server)."""
    channel = grpc.insecure_channel(args.target)
    stub: Any = registration_service_pb2_grpc.RegistrationServiceStub(channel)
    requests = [
        pb.RegisterDeviceRequest(app_id=args.app_id, **device_fields(i, f"w{args.worker}-"))
        for i in range(args.pool)
    ]
    slots = threading.Semaphore(args.concurrency)
    latencies: list[float] = []
    errors = 0

    def finished(future: Any, sent: float) -> None:
        nonlocal errors
        try:
            future.result()
            latencies.append(time.perf_counter() - sent)
        except grpc.RpcError:
            errors += 1
        slots.release()

    started = time.perf_counter()
    deadline = started + args.seconds
    n = 0
    while time.perf_counter() < deadline:
        slots.acquire()
        sent = time.perf_counter()
        future = stub.RegisterDevice.future(requests[n % len(requests)], timeout=5)
        future.add_done_callback(lambda f, sent=sent: finished(f, sent))
        n += 1
    for _ in range(args.concurrency):
        slots.acquire()
    elapsed = time.perf_counter() - started
    channel.close()
    return {"calls": len(latencies), "errors": errors, "seconds": elapsed, "latencies": latencies}


async def _import_load(args: argparse.Namespace) -> dict[str, Any]:
    channel = grpc.aio.insecure_channel(
        args.target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    stub: Any = registration_service_pb2_grpc.RegistrationServiceStub(channel)
    batch = 5000
    # Messages are built before the clock starts: the figure is the server's rate.
    messages = []
    for start in range(0, args.count, batch):
        devices = [
            # Each stream its own devices and tokens (the seed sets the token): streams
            # that shared tokens would measure the contested-token slow path instead.
            pb.ImportedDevice(**device_fields(args.worker * args.count + i, "imp-"))
            for i in range(start, min(start + batch, args.count))
        ]
        messages.append(pb.ImportDevicesRequest(app_id=args.app_id, devices=devices))

    async def stream() -> AsyncIterator[pb.ImportDevicesRequest]:
        for message in messages:
            yield message

    started = time.perf_counter()
    answer = await stub.ImportDevices(stream(), timeout=600)
    elapsed = time.perf_counter() - started
    await channel.close(None)
    return {
        "received": answer.received_count,
        "created": answer.created_count,
        "failed": answer.failed_count,
        "seconds": elapsed,
    }


def load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.registration load")
    parser.add_argument("--target", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--mode", choices=["register", "import"], required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=0, help="calls/s; 0 = as fast as possible")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool", type=int, default=20_000, help="distinct devices")
    parser.add_argument("--count", type=int, default=100_000, help="devices to import")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--once", action="store_true", help="register each pool device once")
    parser.add_argument("--client", choices=["aio", "sync"], default="aio")
    args = parser.parse_args(argv)
    if args.mode == "register" and args.client == "sync" and not (args.rate or args.once):
        json.dump(_register_load_sync(args), sys.stdout)
        return 0
    import uvloop

    runner = _register_load if args.mode == "register" else _import_load
    result = uvloop.run(runner(args))
    json.dump(result, sys.stdout)
    return 0


# -- the orchestrator ----------------------------------------------------------------


class Services:
    """redis-server, Identity and Registration as child processes on loopback."""

    def __init__(
        self,
        workdir: Path,
        redis_extra: list[str],
        registration_processes: int = 1,
        trace_redis: bool = True,
        unix_socket: bool = False,
    ) -> None:
        # A Unix socket spares the services the receiving half of loopback TCP, which
        # Linux runs in the sender's system call: closer to what a client pays when
        # Redis runs on another machine.
        self.socket = (workdir / "redis.sock").resolve() if unix_socket else None
        if self.socket is not None:
            redis_extra = [
                *redis_extra,
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
            ]
        self.redis = EmbeddedRedis(workdir / "redis", extra=redis_extra)
        self.registration_processes = registration_processes
        self.trace_redis = trace_redis
        self.ports = {"identity": free_port(), "registration": free_port()}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workdir = workdir

    def start(self) -> Services:
        self.redis.start()
        env = {
            **os.environ,
            "REDIS_URL": f"unix://{self.socket}?db=0" if self.socket else self.redis.url,
            "HERALD_TRACE_EXPORTER": "none",
            "HERALD_LOG_LEVEL": "WARNING",
            "HERALD_TRACE_REDIS": "true" if self.trace_redis else "false",
            **{f"HERALD_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **{
                f"HERALD_{name.upper()}_ADDRESS": f"127.0.0.1:{port}"
                for name, port in self.ports.items()
            },
        }
        for name in self.ports:
            log = (self.workdir / f"{name}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"],
                    cwd=ROOT,
                    # Several Registration server processes share its port (SO_REUSEPORT,
                    # services/core/supervisor.py); Identity stays one process.
                    env={
                        **env,
                        "HERALD_PROCESSES": str(
                            self.registration_processes if name == "registration" else 1
                        ),
                    },
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for name, port in self.ports.items():
            _wait_serving(port, f"herald.{name}.v1.{name.capitalize()}Service")
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()

    def redis_pid(self) -> int:
        client = redis.Redis.from_url(self.redis.url)
        pid = int(client.info("server")["process_id"])
        client.close()
        return pid

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (the supervisor's workers),
    from /proc: far less sensitive than throughput to what else runs on the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending += [int(child) for child in children]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class CpuMeter:
    """CPU seconds Registration, Identity and redis-server spent during one phase."""

    def __init__(self, services: Services) -> None:
        self.pids = {
            "registration": services.processes[1].pid,
            "identity": services.processes[0].pid,
            "redis": services.redis_pid(),
        }
        self.start = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        self.load_start = _load_cpu_seconds()

    def spent(self) -> dict[str, float]:
        spent = {name: _cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        spent["load"] = _load_cpu_seconds() - self.load_start
        return spent


def _cpu_report(label: str, spent: dict[str, float], items: int) -> None:
    per_item = {name: seconds * 1e6 / max(1, items) for name, seconds in spent.items()}
    load = os.getloadavg()
    print(
        f"  {label} CPU per item: Registration {per_item['registration']:.0f} µs, "
        f"redis-server {per_item['redis']:.0f} µs, Identity {per_item['identity']:.0f} µs, "
        f"load processes {per_item['load']:.0f} µs "
        f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
        flush=True,
    )


def _wait_serving(port: int, service: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service} did not start on port {port}")
            time.sleep(0.2)


def _create_app(services: Services, app_id: str) -> None:
    with grpc.insecure_channel(services.target("identity")) as channel:
        identity: Any = identity_service_pb2_grpc.IdentityServiceStub(channel)
        identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app=app_pb2.App(display_name=app_id), app_id=app_id, request_id=str(uuid.uuid4())
            ),
            timeout=10,
        )


def _run_load(processes: int, argv: list[str], budget: float) -> list[dict[str, Any]]:
    """Starts `processes` load processes with `argv` and returns their JSON results."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.registration", "load", *argv, "--worker", str(n)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for n in range(processes)
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=budget)
        if child.returncode:
            raise RuntimeError(f"load process failed ({child.returncode})")
        results.append(json.loads(out))
    return results


def _load_cpu_seconds() -> float:
    """CPU of this process's waited-for children: the load processes (the services are
    waited for only when they stop), including their set-up (building the requests)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _register_report(label: str, results: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [x for r in results for x in r["latencies"]]
    calls = sum(r["calls"] for r in results)
    seconds = max(r["seconds"] for r in results)
    figures = {
        "calls_per_second": calls / seconds,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
        "errors": sum(r["errors"] for r in results),
        "calls": calls,
    }
    print(
        f"{label}: {figures['calls_per_second']:,.0f} calls/s over {seconds:.1f}s, "
        f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
        f"errors {figures['errors']:.0f}",
        flush=True,
    )
    return figures


# -- what a campaign asks of Registration and Identity per device --------------------


async def _seed_audience(services: Services, devices: int, users: int) -> None:
    """Users with two attributes in Identity; devices bound to them, imported."""
    async with grpc.aio.insecure_channel(services.target("identity")) as channel:
        identity: Any = identity_service_pb2_grpc.IdentityServiceStub(channel)
        queue = iter(range(users))

        async def upsert() -> None:
            for i in queue:
                attributes = struct_pb2.Struct()
                attributes.update({"first_name": f"Name{i % 97}", "city": f"City{i % 31}"})
                await identity.UpsertUser(
                    identity_service_pb2.UpsertUserRequest(
                        user=user_pb2.User(
                            external_id=f"u{i}", time_zone="Europe/Paris", attributes=attributes
                        )
                    )
                )

        await asyncio.gather(*(upsert() for _ in range(32)))
    async with grpc.aio.insecure_channel(services.target("registration")) as channel:
        stub: Any = registration_service_pb2_grpc.RegistrationServiceStub(channel)

        async def messages() -> AsyncIterator[pb.ImportDevicesRequest]:
            for start in range(0, devices, 5000):
                batch = []
                for i in range(start, min(devices, start + 5000)):
                    fields = device_fields(i, "aud-")
                    fields["user_id"] = f"u{i % users}"
                    fields["authorization_status"] = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED
                    batch.append(pb.ImportedDevice(**fields))
                yield pb.ImportDevicesRequest(app_id="bench" if not start else "", devices=batch)

        await stub.ImportDevices(messages(), timeout=600)


async def _resolve_audience(services: Services, batch: int) -> tuple[int, int]:
    """What a campaign's fan-out asks: StreamAudience of the whole app (foreground
    devices, batches of `batch`), then BatchGetUsers of 1,000 ids with a read mask."""
    devices = 0
    user_ids: list[str] = []
    async with grpc.aio.insecure_channel(services.target("registration")) as channel:
        stub: Any = registration_service_pb2_grpc.RegistrationServiceStub(channel)
        query = pb.AudienceQuery(app_ids=["bench"], reachability=device_pb2.REACHABILITY_FOREGROUND)
        async for answer in stub.StreamAudience(
            pb.StreamAudienceRequest(query=query, batch_size=batch), timeout=600
        ):
            devices += len(answer.devices)
            user_ids += [d.user_id for d in answer.devices]
    unique = list(dict.fromkeys(user_ids))
    mask = field_mask_pb2.FieldMask(paths=["attributes.first_name", "time_zone", "locale"])
    async with grpc.aio.insecure_channel(services.target("identity")) as channel:
        identity: Any = identity_service_pb2_grpc.IdentityServiceStub(channel)
        for start in range(0, len(unique), 1000):
            await identity.BatchGetUsers(
                identity_service_pb2.BatchGetUsersRequest(
                    external_ids=unique[start : start + 1000], read_mask=mask
                ),
                timeout=60,
            )
    return devices, len(unique)


def audience_main(argv: list[str]) -> int:
    """`python -m bench.registration audience`: server CPU per device of StreamAudience
    (Registration) and per user of BatchGetUsers (Identity), the two calls a campaign's
    fan-out makes for every device (the Campaign benchmark runs them with the rest)."""
    parser = argparse.ArgumentParser(prog="bench.registration audience")
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=12_500)
    parser.add_argument("--batch", type=int, default=2000, help="StreamAudience batch size")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import uvloop

    services = Services(Path(tempfile.mkdtemp(prefix="herald-bench-audience-")), []).start()
    try:
        _create_app(services, "bench")
        uvloop.run(_seed_audience(services, args.devices, args.users))
        for round_number in range(1, args.rounds + 1):
            meter = CpuMeter(services)
            started = time.perf_counter()
            devices, users = uvloop.run(_resolve_audience(services, args.batch))
            seconds = time.perf_counter() - started
            spent = meter.spent()
            load = os.getloadavg()
            print(
                f"round {round_number}: {devices:,} devices, {users:,} users in {seconds:.1f}s; "
                f"Registration {spent['registration'] * 1e6 / max(1, devices):.1f} µs/device, "
                f"Identity {spent['identity'] * 1e6 / max(1, users):.1f} µs/user "
                f"({spent['identity'] * 1e6 / max(1, devices):.1f} µs/device), "
                f"redis-server {spent['redis'] * 1e6 / max(1, devices):.1f} µs/device "
                f"(load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
                flush=True,
            )
    finally:
        services.stop()
    return 0


def _memory_breakdown(client: redis.Redis, app_id: str, devices: int) -> None:
    """Where the imported app's bytes are (MEMORY USAGE of every key, all elements
    counted) and how many of its hashes Redis keeps in the compact encoding."""
    groups: list[tuple[str, list[str | bytes]]] = [
        ("device shards", [devices_key(app_id, shard) for shard in range(DEVICE_SHARDS)]),
        (
            "token index parts",
            [
                token_part_key(app_id, group, part)
                for group in range(TOKEN_GROUPS)
                for part in range(TOKEN_PARTS)
            ],
        ),
    ]
    for name, keys in groups:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
            pipe.object("encoding", key)
        answers = pipe.execute()
        used = sum(size or 0 for size in answers[0::2])
        encodings: dict[str, int] = {}
        for encoding in answers[1::2]:
            if encoding is not None:
                label = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
                encodings[label] = encodings.get(label, 0) + 1
        print(
            f"  {name}: {used / max(1, devices):.1f} bytes/device "
            f"({len(keys):,} keys: {encodings})",
            flush=True,
        )


def main(argv: list[str]) -> int:
    if argv[:1] == ["load"]:
        return load_main(argv[1:])
    if argv[:1] == ["audience"]:
        return audience_main(argv[1:])
    parser = argparse.ArgumentParser(prog="bench.registration")
    parser.add_argument("--seconds", type=float, default=10, help="per RegisterDevice phase")
    parser.add_argument("--load-processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64, help="in-flight calls per process")
    parser.add_argument("--rate", type=float, default=2000, help="fixed rate of the latency phase")
    parser.add_argument(
        "--pool", type=int, default=20_000, help="distinct devices per load process"
    )
    parser.add_argument("--import-devices", type=int, default=1_000_000)
    parser.add_argument(
        "--import-streams",
        type=int,
        default=1,
        help="parallel ImportDevices streams (one load process each), sharing --import-devices",
    )
    parser.add_argument(
        "--registration-processes",
        type=int,
        default=1,
        help="HERALD_PROCESSES for Registration (server processes sharing its port)",
    )
    parser.add_argument(
        "--trace-redis",
        choices=["true", "false"],
        default="true",
        help="HERALD_TRACE_REDIS for both services (a span per Redis command)",
    )
    parser.add_argument(
        "--redis-arg",
        action="append",
        default=[],
        help="extra redis-server argument (repeat), e.g. --redis-arg=--hash-max-ziplist-value "
        "--redis-arg=1024",
    )
    parser.add_argument(
        "--client",
        choices=["aio", "sync"],
        default="aio",
        help="load processes' gRPC client in the max phase: grpc.aio, or the synchronous "
        "client with futures (less CPU per call in the load process)",
    )
    parser.add_argument(
        "--redis-unix-socket",
        action="store_true",
        help="the services reach redis-server by a Unix socket instead of loopback TCP",
    )
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-registration-"))
    services = Services(
        workdir,
        args.redis_arg,
        args.registration_processes,
        args.trace_redis == "true",
        args.redis_unix_socket,
    ).start()
    print(
        f"Registration processes {args.registration_processes}, trace_redis "
        f"{args.trace_redis}, load processes {args.load_processes}, import streams "
        f"{args.import_streams}, Redis by {'Unix socket' if args.redis_unix_socket else 'TCP'}",
        flush=True,
    )
    try:
        _create_app(services, "bench")
        _create_app(services, "bench-import")
        target = services.target("registration")
        budget = args.seconds + 120
        common = [
            *("--target", target, "--app-id", "bench", "--mode", "register"),
            *("--pool", str(args.pool)),
        ]
        # Warm-up: registers every device of each load process's pool once (new
        # devices: the token claim path), so the measured phases see session-start
        # flushes (the steady state: most registrations repeat a known token).
        meter = CpuMeter(services)
        created = _register_report(
            "RegisterDevice new devices (warm-up)",
            _run_load(args.load_processes, [*common, "--once", "--seconds", "600"], 900),
        )
        _cpu_report("new devices", meter.spent(), int(created["calls"]))
        meter = CpuMeter(services)
        flushes = _register_report(
            "RegisterDevice max",
            _run_load(
                args.load_processes,
                [
                    *common,
                    "--seconds",
                    str(args.seconds),
                    "--concurrency",
                    str(args.concurrency),
                    "--client",
                    args.client,
                ],
                budget,
            ),
        )
        _cpu_report("max", meter.spent(), int(flushes["calls"]))
        per_process_rate = args.rate / args.load_processes
        meter = CpuMeter(services)
        fixed = _register_report(
            f"RegisterDevice at {args.rate:.0f}/s",
            _run_load(
                args.load_processes,
                [*common, "--seconds", str(args.seconds), "--rate", str(per_process_rate)],
                budget,
            ),
        )
        _cpu_report(f"at {args.rate:.0f}/s", meter.spent(), int(fixed["calls"]))

        client = redis.Redis.from_url(services.redis.url)
        before = int(client.info("memory")["used_memory"])
        meter = CpuMeter(services)
        streams = _run_load(
            args.import_streams,
            [
                "--target",
                target,
                "--app-id",
                "bench-import",
                "--mode",
                "import",
                "--count",
                str(args.import_devices // args.import_streams),
            ],
            budget=1800,
        )
        imported = {
            "created": sum(s["created"] for s in streams),
            "failed": sum(s["failed"] for s in streams),
            "seconds": max(s["seconds"] for s in streams),
        }
        _cpu_report("import", meter.spent(), imported["created"])
        after = int(client.info("memory")["used_memory"])
        print(
            f"ImportDevices: {imported['created'] / imported['seconds']:,.0f} devices/s "
            f"({imported['created']:,} created, {imported['failed']} failed, "
            f"{imported['seconds']:.1f}s)",
            flush=True,
        )
        print(
            f"Redis memory: {(after - before) / max(1, imported['created']):.0f} bytes/device "
            f"at {imported['created']:,} devices (used_memory delta {after - before:,} bytes; "
            f"redis args {args.redis_arg or 'default'})",
            flush=True,
        )
        _memory_breakdown(client, "bench-import", imported["created"])
        client.close()
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
