"""APNs transport: a plain aioapns loop vs Herald's pooled HTTP/2 sender, same endpoint.

`make bench ARGS=delivery_transport` starts the provider sandboxes in a subprocess (so
the endpoint does not share the client's CPU time slice), then sends the same number
of alert pushes with the same concurrency and the same number of connections through
(a) aioapns 4.0 and (b) services.delivery.senders.apns.ApnsSender, and prints
throughput and latency percentiles. Bounded and short: other engineers share the
machine. Options: --count N (default 4000) --concurrency C (200) --connections M (2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from herald.delivery.v1 import credentials_pb2, notification_pb2
from herald.type.v1 import platform_pb2, push_token_pb2
from services.core.config import load_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_sandbox(state: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ports = {name: _free_port() for name in ("apns", "fcm", "webpush", "control")}
    args = [sys.executable, "-m", "services.sandbox", "serve", "--state-dir", str(state)]
    for name, port in ports.items():
        args += [f"--{name}-port", str(port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['control']}/info", timeout=1):
                return process, ports
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the sandbox did not start")


async def _run(
    count: int, concurrency: int, send: Callable[[int], Awaitable[bool]]
) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < count:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            ok = await send(index)
            latencies.append(time.perf_counter() - started)
            failures += 0 if ok else 1

    started = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "per_second": count / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "failures": failures,
        # The client's own CPU per notification (the sandbox runs in another process):
        # what bounds a sender when the endpoint is not the bottleneck.
        "cpu_us": cpu / count * 1e6,
    }


async def _aioapns(
    ports: dict[str, int], demo: dict[str, Any], key: str, ca: str, connections: int
) -> Callable[[int], Awaitable[bool]]:
    from aioapns import APNs, NotificationRequest
    from aioapns.connection import APNsDevelopmentClientProtocol

    protocol = type(
        "BenchProtocol",
        (APNsDevelopmentClientProtocol,),
        {"APNS_SERVER": "127.0.0.1", "APNS_PORT": ports["apns"]},
    )
    client = APNs(
        key=key,
        key_id=demo["apns_key_id"],
        team_id=demo["apns_team_id"],
        topic=demo["apns_bundle_id"],
        use_sandbox=True,
        ssl_context=ssl.create_default_context(cafile=ca),
        max_connections=connections,
    )
    client.pool.protocol_class = protocol
    token = os.urandom(32).hex()

    async def send(index: int) -> bool:
        request = NotificationRequest(
            device_token=token, message={"aps": {"alert": {"title": "Hi", "body": f"n{index}"}}}
        )
        try:
            # aioapns has no request timeout of its own.
            result = await asyncio.wait_for(client.send_notification(request), 10)
        except TimeoutError:
            return False
        return bool(result.is_successful)

    return send


async def _herald(
    ports: dict[str, int], demo: dict[str, Any], key: str, ca: str, connections: int
) -> Callable[[int], Awaitable[bool]]:
    from services.delivery import credentials as creds
    from services.delivery.payloads import apns as apns_payload
    from services.delivery.senders.apns import ApnsSender
    from services.delivery.transport.pool import PoolOptions

    origin = f"https://127.0.0.1:{ports['apns']}"
    settings = load_settings(
        apns_development_origin=origin, apns_production_origin=origin, provider_ca_file=ca
    )
    new = creds.validate(
        credentials_pb2.Credentials(
            app_id="bench",
            apns_token=credentials_pb2.ApnsTokenAuth(
                private_key_pem=key,
                key_id=demo["apns_key_id"],
                team_id=demo["apns_team_id"],
                bundle_id=demo["apns_bundle_id"],
                environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
            ),
        )
    )
    credential = creds.Credential(
        new.slot, new.kind, new.secret, new.public, 1, time.time(), time.time()
    )
    sender = ApnsSender(settings, PoolOptions(max_connections=connections))
    token = push_token_pb2.PushToken(
        apns=push_token_pb2.ApnsToken(device_token=os.urandom(32).hex())
    )

    async def send(index: int) -> bool:
        n = notification_pb2.Notification(
            app_id="bench",
            token=token,
            apns=notification_pb2.ApnsPayload(title="Hi", body=f"n{index}"),
        )
        request = apns_payload.build(n, demo["apns_bundle_id"], str(uuid.uuid4()))
        answer = await sender.send(credential, request, origin, 10.0)
        return answer.status == 200

    return send


async def _bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        process, ports = _start_sandbox(Path(tmp))
        try:
            demo = json.loads((Path(tmp) / "credentials" / "demo.json").read_text())
            key = (Path(tmp) / "credentials" / f"AuthKey_{demo['apns_key_id']}.p8").read_text()
            ca = str(Path(tmp) / "ca.pem")
            print(
                f"APNs sandbox (subprocess); {args.count} alerts, concurrency {args.concurrency}, {args.connections} connections"
            )
            for name, build in (("aioapns 4.0 loop", _aioapns), ("Herald ApnsSender", _herald)):
                send = await build(ports, demo, key, ca, args.connections)
                await _run(
                    min(200, args.count), args.concurrency, send
                )  # warm up: connections, stream limit
                figures = await _run(args.count, args.concurrency, send)
                print(
                    f"  {name:20s} {figures['per_second']:8.0f}/s   p50 {figures['p50_ms']:6.1f} ms   "
                    f"p99 {figures['p99_ms']:6.1f} ms   client CPU {figures['cpu_us']:5.0f} µs/push   "
                    f"failures {figures['failures']:.0f}"
                )
        finally:
            process.terminate()
            process.wait(10)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench delivery_transport")
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--connections", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        import uvloop

        return uvloop.run(_bench(args))
    except ImportError:  # pragma: no cover
        return asyncio.run(_bench(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
