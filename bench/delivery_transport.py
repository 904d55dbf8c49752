"""APNs transport: a plain aioapns loop vs Herald's pooled HTTP/2 sender, same endpoint.

`make bench ARGS=delivery_transport` starts the provider sandboxes in a subprocess (so
the endpoint does not share the client's CPU time slice), then sends the same number
of alert pushes with the same concurrency and the same number of connections through
(a) aioapns 4.0 and (b) services.delivery.senders.apns.ApnsSender, and prints
throughput and latency percentiles. Bounded and short: other engineers share the
machine. Options: --count N (default 4000) --concurrency C (200) --connections M (2).

`--transports`: the HTTP/2 transports alone against nginx (bench/delivery_queue.py's
cheap endpoint), same pre-built APNs requests, one connection each: Herald's H2Pool (h2
and hpack, pure Python) vs libcurl's multi interface through pycurl (nghttp2, C) when
pycurl is installed (`uv pip install pycurl==7.49.0`; not a Herald dependency). Client
CPU per request is what decides between them (docs/benchmarks/delivery.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from services.core.embedded_redis import free_port


def _start_sandbox(state: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ports = {name: free_port() for name in ("apns", "fcm", "webpush", "control")}
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


_JWT = "bearer " + "e" * 180  # a provider token's size; nginx does not check it
_BODY = b'{"aps":{"alert":{"title":"Hi","body":"n1"}}}'


def _apns_headers() -> list[tuple[str, str]]:
    from services.delivery.transport.connection import never_indexed

    return [
        ("apns-push-type", "alert"),
        ("apns-priority", "10"),
        ("apns-topic", "com.example.app"),
        ("apns-expiration", "0"),
        never_indexed("apns-id", str(uuid.uuid4())),
        ("authorization", _JWT),
    ]


class _CurlMulti:
    """libcurl's multi interface on the asyncio loop: curl tells which sockets to watch
    and when its timer fires; each request is an easy handle multiplexed on one HTTP/2
    connection (PIPEWAIT)."""

    def __init__(self, pycurl: Any, origin: str, ca: str) -> None:
        self.curl, self.origin, self.ca = pycurl, origin, ca
        self.loop = asyncio.get_running_loop()
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self.multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._timer)
        self._timer_handle: asyncio.TimerHandle | None = None
        self._futures: dict[Any, asyncio.Future[int]] = {}
        self._watched: set[int] = set()

    def _socket(self, what: int, fd: int, _multi: Any, _data: Any) -> None:
        if fd in self._watched:
            self.loop.remove_reader(fd)
            self.loop.remove_writer(fd)
            self._watched.discard(fd)
        if what == self.curl.POLL_REMOVE:
            return
        self._watched.add(fd)
        if what in (self.curl.POLL_IN, self.curl.POLL_INOUT):
            self.loop.add_reader(fd, self._act, fd, self.curl.CSELECT_IN)
        if what in (self.curl.POLL_OUT, self.curl.POLL_INOUT):
            self.loop.add_writer(fd, self._act, fd, self.curl.CSELECT_OUT)

    def _timer(self, ms: int) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        if ms >= 0:
            self._timer_handle = self.loop.call_later(
                ms / 1000, self._act, self.curl.SOCKET_TIMEOUT, 0
            )

    def _act(self, fd: int, events: int) -> None:
        while self.multi.socket_action(fd, events)[0] == self.curl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, done, failed = self.multi.info_read()
            for easy in done:
                self.multi.remove_handle(easy)
                self._futures.pop(easy).set_result(easy.getinfo(self.curl.RESPONSE_CODE))
            for easy, _errno, message in failed:
                self.multi.remove_handle(easy)
                self._futures.pop(easy).set_exception(OSError(message))
            if not queued:
                return

    async def post(self, path: str) -> bool:
        pycurl = self.curl
        easy = pycurl.Curl()
        easy.setopt(pycurl.URL, self.origin + path)
        easy.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        easy.setopt(pycurl.PIPEWAIT, 1)
        easy.setopt(pycurl.CAINFO, self.ca)
        easy.setopt(pycurl.POSTFIELDS, _BODY)
        easy.setopt(pycurl.HTTPHEADER, [f"{name}: {value}" for name, value in _apns_headers()])
        easy.setopt(pycurl.TIMEOUT_MS, 10_000)
        apns_id: list[bytes] = []

        def header(line: bytes) -> None:
            if line[:8].lower() == b"apns-id:":
                apns_id.append(line[8:].strip())

        easy.setopt(pycurl.HEADERFUNCTION, header)
        easy.setopt(pycurl.WRITEFUNCTION, lambda _data: None)
        future: asyncio.Future[int] = self.loop.create_future()
        self._futures[easy] = future
        self.multi.add_handle(easy)
        self._act(pycurl.SOCKET_TIMEOUT, 0)
        try:
            return await future == 200 and bool(apns_id)
        finally:
            easy.close()


async def _transports(args: argparse.Namespace) -> int:
    from bench.delivery_queue import _nginx_binary, _start_nginx
    from services.delivery.transport.pool import H2Pool, PoolOptions
    from services.delivery.transport.tls import client_context

    try:
        import pycurl  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        pycurl = None
    with tempfile.TemporaryDirectory(prefix="herald-bench-t-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox, _ports = _start_sandbox(tmp / "sandbox")  # for its CA and server cert
        binary = _nginx_binary()
        started = _start_nginx(binary, tmp, tmp / "sandbox") if binary else None
        if started is None:
            sandbox.terminate()
            print("SKIPPED: nginx could not be installed or started")
            return 0
        nginx, port = started
        try:
            origin = f"https://127.0.0.1:{port}"
            ca = str(tmp / "sandbox" / "ca.pem")
            pool = H2Pool(origin, client_context(ca), PoolOptions(max_connections=1))

            async def h2_pool(_index: int) -> bool:
                path = "/3/device/" + os.urandom(32).hex()
                exchange = await pool.request(
                    "POST", path, _apns_headers(), _BODY, 10.0, unique_path=True
                )
                response = exchange.response
                return response.status == 200 and "apns-id" in response.headers

            clients: list[tuple[str, Callable[[int], Awaitable[bool]]]] = [
                ("Herald H2Pool", h2_pool)
            ]
            if pycurl is None:
                print("  pycurl is not installed: only Herald's transport runs")
            else:
                multi = _CurlMulti(pycurl, origin, ca)

                async def curl(_index: int) -> bool:
                    return await multi.post("/3/device/" + os.urandom(32).hex())

                clients.append((f"pycurl {pycurl.version.split()[0]}", curl))
            print(
                f"nginx; {args.count} requests per client, concurrency {args.concurrency}, "
                "1 connection; load average "
                f"{os.getloadavg()[0]:.2f}"
            )
            for _round in range(2):  # interleaved twice: load changes are seen by both
                for name, send in clients:
                    await _run(min(500, args.count), args.concurrency, send)  # warm up
                    figures = await _run(args.count, args.concurrency, send)
                    print(
                        f"  {name:20s} {figures['per_second']:8.0f}/s   "
                        f"client CPU {figures['cpu_us']:5.0f} µs/request   "
                        f"failures {figures['failures']:.0f}"
                    )
            await pool.close()
        finally:
            nginx.terminate()
            nginx.wait(10)
            sandbox.terminate()
            sandbox.wait(10)
    return 0


async def _bench(args: argparse.Namespace) -> int:
    if args.transports:
        return await _transports(args)
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
    parser.add_argument(
        "--transports", action="store_true", help="H2Pool vs pycurl alone, against nginx"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop

        return uvloop.run(_bench(args))
    except ImportError:  # pragma: no cover
        return asyncio.run(_bench(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
