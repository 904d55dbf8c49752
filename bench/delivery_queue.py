"""Delivery end to end: a plain aioapns loop vs Herald from Enqueue to provider answer.

`make bench ARGS=delivery_queue` runs, on the same machine and against the same HTTP/2
endpoint:
  (a) a plain aioapns 4.0 loop with `--concurrency` sends in flight (the reference:
      what existing Python gateways do), and
  (b) Herald end to end: a Delivery process (`python -m services.delivery`, its own
      redis-server) fed by Enqueue batches over gRPC, with the same worker concurrency;
      done = the DELIVERED outcome read back through StreamOutcomes.
Endpoints: nginx from Debian (HTTP/2 + TLS with the sandbox CA's server certificate,
answering 200 with the apns-id echoed: cheap, so the clients are measured), installed
with apt-get when missing and skipped with a message when that cannot be done; and the
Python APNs sandbox (in a subprocess). Then the latency from Enqueue to provider answer
at half Herald's maximum rate, and the RSS of the Delivery process over a long run.
Options: --count N (20000) --concurrency C (200) --connections M (4) --rss-count N
(150000; 1000000 for the full issue figure) --processes P (1) --no-nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench.delivery_transport import _run, _start_sandbox
from herald.delivery.v1 import (
    credentials_pb2,
    delivery_service_pb2,
    delivery_service_pb2_grpc,
    notification_pb2,
)
from herald.type.v1 import platform_pb2, push_options_pb2, push_token_pb2
from services.core.embedded_redis import EmbeddedRedis, free_port

DS = delivery_service_pb2
APP = "bench"
BATCH = 500
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    http2 on;
    http2_max_concurrent_streams 1000;
    keepalive_requests 10000000;
    keepalive_timeout 3600s;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location /3/device/ {{
      add_header apns-id $http_apns_id always;
      return 200;
    }}
  }}
}}
"""
OLD_NGINX_LISTEN = "listen 127.0.0.1:{port} ssl http2;"


def _wait_port(port: int, within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# -- nginx ------------------------------------------------------------------------------
def _nginx_binary() -> str | None:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print("  nginx: not installed and apt-get is not usable here (needs root)")
        return None
    print("  nginx: installing nginx-light with apt-get ...", flush=True)
    for command in (
        ["apt-get", "install", "-y", "nginx-light"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "nginx-light"],
    ):
        done = subprocess.run(command, capture_output=True, timeout=600, check=False)
        if command[1] == "install" and done.returncode == 0:
            break
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


def _start_nginx(
    binary: str, state: Path, sandbox_dir: Path
) -> tuple[subprocess.Popen[bytes], int] | None:
    port = free_port()
    home = state / "nginx"
    home.mkdir()
    conf = NGINX_CONF.format(
        dir=home,
        port=port,
        cert=sandbox_dir / "server.pem",
        key=sandbox_dir / "server-key.pem",
    )
    (home / "nginx.conf").write_text(conf)
    test = subprocess.run(
        [binary, "-t", "-c", str(home / "nginx.conf"), "-p", str(home)],
        capture_output=True,
        check=False,
    )
    if test.returncode != 0 and b"http2" in test.stderr:
        # nginx before 1.25 spells HTTP/2 on the listen line.
        conf = conf.replace(
            f"listen 127.0.0.1:{port} ssl;\n    http2 on;", OLD_NGINX_LISTEN.format(port=port)
        )
        (home / "nginx.conf").write_text(conf)
    process = subprocess.Popen(
        [binary, "-c", str(home / "nginx.conf"), "-p", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if not _wait_port(port, 10):
        process.kill()
        err = process.stderr.read().decode() if process.stderr else ""
        print(f"  nginx did not start: {err[-300:]}")
        return None
    return process, port


# -- the reference: a plain aioapns loop -------------------------------------------------
async def _aioapns(
    port: int, demo: dict[str, Any], key: str, ca: str, connections: int
) -> Callable[[int], Awaitable[bool]]:
    from aioapns import APNs, NotificationRequest
    from aioapns.connection import APNsDevelopmentClientProtocol

    protocol = type(
        "BenchProtocol",
        (APNsDevelopmentClientProtocol,),
        {"APNS_SERVER": "127.0.0.1", "APNS_PORT": port},
    )
    context = ssl.create_default_context(cafile=ca)
    # aioapns offers no ALPN itself (APNs does not need it); nginx speaks HTTP/2 over TLS
    # only when ALPN chose h2, so the context offers it.
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=key,
        key_id=demo["apns_key_id"],
        team_id=demo["apns_team_id"],
        topic=demo["apns_bundle_id"],
        use_sandbox=True,
        ssl_context=context,
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
        except Exception:
            return False
        return bool(result.is_successful)

    return send


# -- Herald -----------------------------------------------------------------------------
class DeliveryProcess:
    def __init__(
        self, redis_url: str, origin: str, ca: str, concurrency: int, processes: int, **env: str
    ) -> None:
        self.port = free_port()
        environ = {
            **os.environ,
            "HERALD_REDIS_URL": redis_url,
            "HERALD_DELIVERY_PORT": str(self.port),
            "HERALD_METRICS_PORT": "-2",  # any free port: each worker process needs one
            "HERALD_APNS_DEVELOPMENT_ORIGIN": origin,
            "HERALD_APNS_PRODUCTION_ORIGIN": origin,
            "HERALD_PROVIDER_CA_FILE": ca,
            "HERALD_CREDENTIALS_KEY": base64.b64encode(os.urandom(32)).decode(),
            "HERALD_TRACE_EXPORTER": "none",
            "HERALD_TRACE_REDIS": "false",
            "HERALD_LOG_LEVEL": "WARNING",
            "HERALD_PROCESSES": str(processes),
            "HERALD_DELIVERY_WORKER_CONCURRENCY": str(concurrency),
            "HERALD_DELIVERY_QUEUE_MAX_DEPTH": "2000000",
            **env,
        }
        self.process = subprocess.Popen([sys.executable, "-m", "services.delivery"], env=environ)
        if not _wait_port(self.port, 90):  # slow to start on a busy machine
            self.stop()
            raise RuntimeError("the Delivery process did not start")
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self.stub: Any = delivery_service_pb2_grpc.DeliveryServiceStub(self.channel)

    def pids(self) -> list[int]:
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [int(p) for p in children] or [self.process.pid]

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    async def close(self) -> None:
        await self.channel.close(None)
        self.stop()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _notification(token: str, index: int) -> notification_pb2.Notification:
    return notification_pb2.Notification(
        app_id=APP,
        token=push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=token)),
        apns_environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
        apns=notification_pb2.ApnsPayload(title="Hi", body=f"n{index}"),
    )


class OutcomeCounter:
    """Reads StreamOutcomes from "now" and notes when each notification got its answer.
    A stream the server ends (its connections are recycled every 5 minutes) is resumed
    from the last batch's cursor, as a real consumer would: nothing is missed."""

    def __init__(self, stub: Any) -> None:
        self.answered: dict[str, float] = {}
        self.failed = 0
        self.resumed = 0
        self._stub = stub
        self._call: Any = None
        self._closed = False
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        cursor = ""
        while not self._closed:
            request = DS.StreamOutcomesRequest(app_id=APP, batch_size=5000, cursor=cursor)
            self._call = self._stub.StreamOutcomes(request)
            try:
                async for batch in self._call:
                    self._count(batch.outcomes)
                    cursor = batch.cursor
            except grpc.aio.AioRpcError:
                if self._closed:
                    return
            if not self._closed:
                self.resumed += 1
                await asyncio.sleep(0.1)

    def _count(self, outcomes: Any) -> None:
        for event in outcomes:
            if event.outcome == push_options_pb2.DELIVERY_OUTCOME_RETRYING:
                continue
            if event.outcome != push_options_pb2.DELIVERY_OUTCOME_DELIVERED:
                self.failed += 1
            self.answered[event.notification_id] = event.event_time.ToNanoseconds() / 1e9

    async def wait_for(self, count: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while len(self.answered) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        self._task.cancel()


async def _enqueue(stub: Any, token: str, start: int, count: int, sent: dict[str, float]) -> None:
    batch = [_notification(token, start + i) for i in range(count)]
    began = time.time()
    answer = await stub.Enqueue(
        DS.EnqueueRequest(notifications=batch, request_id=str(uuid.uuid4()))
    )
    for result in answer.results:
        sent[result.notification_id] = began


async def _herald_throughput(
    node: DeliveryProcess, count: int, redis_pid: int | None = None
) -> dict[str, float]:
    token = os.urandom(32).hex()
    counter = OutcomeCounter(node.stub)
    await asyncio.sleep(0.3)  # the stream starts at "now"
    sent: dict[str, float] = {}
    started = time.time()
    cpu_before = _cpu_seconds(node)
    redis_before = _pid_cpu_seconds(redis_pid)
    client_before = time.process_time()
    calls = asyncio.Semaphore(4)  # a few Enqueue calls in flight, like a Campaign fan-out

    async def one(start: int) -> None:
        async with calls:
            await _enqueue(node.stub, token, start, min(BATCH, count - start), sent)

    await asyncio.gather(*(one(start) for start in range(0, count, BATCH)))
    complete = await counter.wait_for(count, 600)
    counter.close()
    elapsed = max(counter.answered.values()) - started if counter.answered else 0.0
    cpu = _cpu_seconds(node) - cpu_before
    redis_cpu = _pid_cpu_seconds(redis_pid) - redis_before
    client_cpu = time.process_time() - client_before
    answered = max(1, len(counter.answered))
    return {
        "per_second": len(counter.answered) / elapsed if elapsed else 0.0,
        "failures": counter.failed + (0 if complete else count - len(counter.answered)),
        "cpu_us": cpu / answered * 1e6,
        # The rest of Herald's pipeline on this machine: redis-server, and this process
        # as the Enqueue / StreamOutcomes client (what bounds the rate on 2 cores).
        "redis_cpu_us": redis_cpu / answered * 1e6,
        "client_cpu_us": client_cpu / answered * 1e6,
    }


async def _herald_latency(node: DeliveryProcess, rate: float, seconds: float) -> dict[str, float]:
    token = os.urandom(32).hex()
    counter = OutcomeCounter(node.stub)
    await asyncio.sleep(0.3)
    sent: dict[str, float] = {}
    batch = 20
    interval = batch / rate
    started = time.monotonic()
    index = 0
    tasks = []
    while time.monotonic() - started < seconds:
        tasks.append(asyncio.create_task(_enqueue(node.stub, token, index, batch, sent)))
        index += batch
        await asyncio.sleep(max(0.0, started + (index / batch) * interval - time.monotonic()))
    await asyncio.gather(*tasks)
    await counter.wait_for(len(sent), 120)
    counter.close()
    latencies = sorted(counter.answered[n] - sent[n] for n in sent if n in counter.answered)
    return {
        "rate": index / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "answered": len(latencies),
    }


async def _herald_rss(node: DeliveryProcess, count: int) -> list[tuple[int, float]]:
    token = os.urandom(32).hex()
    counter = OutcomeCounter(node.stub)
    await asyncio.sleep(0.3)
    sent: dict[str, float] = {}
    samples = [(0, node.rss_mb())]
    next_sample = count // 10
    done_before = 0  # answered ids the client forgot (the count still includes them)
    for start in range(0, count, BATCH):
        # Keep the queue short (the run measures the process, not a backlog in Redis).
        while len(sent) - len(counter.answered) > 20_000:  # noqa: ASYNC110 - polls a count
            await asyncio.sleep(0.05)
        await _enqueue(node.stub, token, start, min(BATCH, count - start), sent)
        if len(counter.answered) + done_before >= next_sample:
            samples.append((len(counter.answered) + done_before, node.rss_mb()))
            print(f"      {samples[-1][0]:>9,} answered: {samples[-1][1]:.0f} MB", flush=True)
            next_sample += count // 10
        if len(sent) > 200_000:  # the client forgets old ids; only the count matters here
            for nid in list(sent)[:100_000]:
                sent.pop(nid)
                if counter.answered.pop(nid, None) is not None:
                    done_before += 1
    await counter.wait_for(len(sent), 600)
    counter.close()
    if counter.resumed:
        print(f"      (StreamOutcomes resumed from its cursor {counter.resumed} times)")
    samples.append((count, node.rss_mb()))
    return samples


def _start_py_spy(
    args: argparse.Namespace, node: DeliveryProcess
) -> subprocess.Popen[bytes] | None:
    """py-spy (installed outside the repo) sampling the Delivery processes, raw
    collapsed stacks to --profile-out: where the CPU per push goes."""
    if not args.py_spy:
        return None
    command = [args.py_spy, "record", "--format", "raw", "--rate", "200", "--nonblocking"]
    command += ["-o", args.profile_out]
    for pid in node.pids():
        command += ["--pid", str(pid)]
        break  # py-spy samples one process; with --processes > 1 the first worker
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_py_spy(spy: subprocess.Popen[bytes] | None, args: argparse.Namespace) -> None:
    if spy is None:
        return
    spy.send_signal(2)  # SIGINT: py-spy writes what it sampled
    spy.wait(60)
    print(f"    profile of the Delivery process: {args.profile_out}")


def _cpu_seconds(node: DeliveryProcess) -> float:
    return sum(_pid_cpu_seconds(pid) for pid in node.pids())


def _pid_cpu_seconds(pid: int | None) -> float:
    """User + system CPU of one process so far (0 when unknown or gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def _put_credentials(node: DeliveryProcess, demo: dict[str, Any], key: str) -> None:
    await node.stub.PutCredentials(
        DS.PutCredentialsRequest(
            credentials=credentials_pb2.Credentials(
                app_id=APP,
                apns_token=credentials_pb2.ApnsTokenAuth(
                    private_key_pem=key,
                    key_id=demo["apns_key_id"],
                    team_id=demo["apns_team_id"],
                    bundle_id=demo["apns_bundle_id"],
                    environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
                ),
            )
        )
    )


def _line(name: str, figures: dict[str, float]) -> str:
    extra = ""
    if "p50_ms" in figures:
        extra = f"   p50 {figures['p50_ms']:6.1f} ms   p99 {figures['p99_ms']:6.1f} ms"
    return (
        f"    {name:28s} {figures['per_second']:8.0f}/s{extra}   "
        f"CPU {figures['cpu_us']:5.0f} µs/push   failures {figures['failures']:.0f}"
    )


async def _bench(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="herald-bench-q-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox, ports = _start_sandbox(tmp / "sandbox")
        redis = EmbeddedRedis(tmp / "redis").start()
        nginx: subprocess.Popen[bytes] | None = None
        try:
            sandbox_dir = tmp / "sandbox"
            demo = json.loads((sandbox_dir / "credentials" / "demo.json").read_text())
            key = (sandbox_dir / "credentials" / f"AuthKey_{demo['apns_key_id']}.p8").read_text()
            ca = str(sandbox_dir / "ca.pem")
            endpoints: list[tuple[str, int]] = []
            if not args.no_nginx:
                binary = _nginx_binary()
                started = _start_nginx(binary, tmp, sandbox_dir) if binary else None
                if started is None:
                    print("  SKIPPED the nginx endpoint: nginx could not be installed or started")
                else:
                    nginx, nginx_port = started
                    endpoints.append(("nginx (HTTP/2, TLS)", nginx_port))
            if not args.no_sandbox or not endpoints:
                endpoints.append(("APNs sandbox (Python)", ports["apns"]))
            print(
                f"{args.count} alerts per client, concurrency {args.concurrency}, "
                f"{args.connections} connections (aioapns) / pool default (Herald), "
                f"Delivery processes: {args.processes}"
            )
            best: dict[str, float] = {}
            for name, port in endpoints:
                print(f"  endpoint: {name}")
                loop_send = await _aioapns(port, demo, key, ca, args.connections)
                await _run(min(500, args.count), args.concurrency, loop_send)  # warm up
                plain = await _run(args.count, args.concurrency, loop_send)
                print(_line("(a) aioapns 4.0 loop", plain))
                node = DeliveryProcess(
                    redis.url,
                    f"https://127.0.0.1:{port}",
                    ca,
                    args.concurrency,
                    args.processes,
                )
                try:
                    await _put_credentials(node, demo, key)
                    await _herald_throughput(node, min(1000, args.count))  # warm up
                    spy = _start_py_spy(args, node) if not best else None
                    redis_pid = redis.process.pid if redis.process is not None else None
                    herald = await _herald_throughput(node, args.count, redis_pid)
                    _stop_py_spy(spy, args)
                    print(_line("(b) Herald Enqueue→answer", herald))
                    print(
                        f"      + redis-server {herald['redis_cpu_us']:.0f} µs/push, "
                        f"bench client (Enqueue, StreamOutcomes) "
                        f"{herald['client_cpu_us']:.0f} µs/push"
                    )
                    ratio = herald["per_second"] / plain["per_second"]
                    print(f"    Herald / aioapns = {ratio:.2f}x (target ≥ 3x)")
                    if not best:
                        best = herald
                        half = args.latency_rate or herald["per_second"] / 2
                        latency = await _herald_latency(node, half, args.latency_seconds)
                        print(
                            f"    latency at half the max rate ({latency['rate']:.0f}/s offered, "
                            f"{latency['answered']:.0f} answered): p50 {latency['p50_ms']:.1f} ms, "
                            f"p99 {latency['p99_ms']:.1f} ms (Enqueue call start → provider answer)"
                        )
                finally:
                    await node.close()
            if args.rss_count:
                name, port = endpoints[0]
                print(f"  RSS over {args.rss_count} notifications ({name}):")
                node = DeliveryProcess(
                    redis.url,
                    f"https://127.0.0.1:{port}",
                    ca,
                    args.concurrency,
                    args.processes,
                    # Records and outcomes expire quickly so Redis holds the run.
                    HERALD_DELIVERY_RECORD_TTL_SECONDS="60",
                    HERALD_DELIVERY_OUTCOMES_RETENTION_SECONDS="60",
                )
                try:
                    await _put_credentials(node, demo, key)
                    began = time.monotonic()
                    samples = await _herald_rss(node, args.rss_count)
                    took = time.monotonic() - began
                    print(
                        "    "
                        + ", ".join(f"{n // 1000}k: {mb:.0f} MB" for n, mb in samples)
                        + f"  ({took:.0f} s, {args.rss_count / took:.0f}/s)"
                    )
                finally:
                    await node.close()
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)
            redis.stop()
            sandbox.terminate()
            sandbox.wait(10)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench delivery_queue")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--rss-count", type=int, default=150_000)
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="offered rate of the latency run (default: half the measured maximum)",
    )
    parser.add_argument(
        "--no-sandbox", action="store_true", help="only the nginx endpoint (short runs)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy binary: record the Delivery process during the throughput run",
    )
    parser.add_argument("--profile-out", default="delivery-profile.txt", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        import uvloop

        return uvloop.run(_bench(args))
    except ImportError:  # pragma: no cover
        return asyncio.run(_bench(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
