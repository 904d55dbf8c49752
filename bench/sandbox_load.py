"""How many requests/s the APNs and FCM sandboxes serve from one process.

    .venv/bin/python bench/sandbox_load.py [--requests 40000] [--seconds 20]
        [--clients 2] [--connections 4] [--streams 100]

Starts `python -m services.sandbox serve` (one process, uvloop) on free loopback ports with
a throwaway state directory, then drives it from separate client processes speaking raw
HTTP/2 over TLS with the h2 library (many streams per connection, so the client costs as
little as Python allows). APNs requests carry a valid ES256 provider token; FCM requests a
valid OAuth2 access token obtained from the sandbox's token endpoint. Every request is
checked to get 200. Bounded: at most --requests per sandbox and --seconds per run.

Figures are only meaningful with the client processes and the sandbox on separate cores:
the report says how many cores there were.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import secrets
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import jwt

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Job:
    """What one client process sends."""

    service: str  # "apns" | "fcm"
    port: int
    ca_file: str
    requests: int
    seconds: float
    connections: int
    streams: int
    authorization: str
    path_prefix: str
    topic: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class _LoadProtocol(asyncio.Protocol):
    """One HTTP/2 connection keeping up to `streams` requests in flight."""

    def __init__(self, job: Job, budget: list[int], statuses: Counter[str], done: asyncio.Event):
        self.job = job
        self.budget = budget  # shared remaining-request counter, one cell
        self.statuses = statuses
        self.done = done
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0
        self.deadline = time.monotonic() + job.seconds
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self._top_up()

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers or []).get(b":status", b"?").decode()
                self.statuses[status] += 1
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id or 0
                )
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                self.in_flight -= 1
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.statuses["goaway"] += 1
        self._top_up()

    def _top_up(self) -> None:
        limit = min(self.job.streams, self.conn.remote_settings.max_concurrent_streams)
        now = time.monotonic()
        while self.in_flight < limit and self.budget[0] > 0 and now < self.deadline:
            self.budget[0] -= 1
            self.in_flight += 1
            self._send()
        if self.in_flight == 0 and (self.budget[0] <= 0 or now >= self.deadline):
            self.done.set()
        assert self.transport is not None
        self.transport.write(self.conn.data_to_send())

    def _send(self) -> None:
        stream_id = self.conn.get_next_available_stream_id()
        job = self.job
        if job.service == "apns":
            path = job.path_prefix + secrets.token_hex(32)
            body = b'{"aps":{"alert":{"title":"bench","body":"hello"}}}'
            headers = [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", path),
                (":authority", f"{HOST}:{job.port}"),
                ("authorization", job.authorization),
                ("apns-id", str(uuid.uuid4())),
                ("apns-topic", job.topic),
                ("apns-push-type", "alert"),
            ]
        else:
            token = secrets.token_urlsafe(16) + ":APA91b" + secrets.token_urlsafe(100)
            body = json.dumps(
                {"message": {"token": token, "data": {"k": "v"}, "android": {"ttl": "60s"}}}
            ).encode()
            headers = [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", job.path_prefix),
                (":authority", f"{HOST}:{job.port}"),
                ("authorization", job.authorization),
                ("content-type", "application/json"),
            ]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, body, end_stream=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()
        if not self.lost.done():
            self.lost.set_result(None)


async def _drive(job: Job) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=job.ca_file)
    context.set_alpn_protocols(["h2"])
    loop = asyncio.get_running_loop()
    budget = [job.requests]
    statuses: Counter[str] = Counter()
    protocols: list[_LoadProtocol] = []
    started = time.perf_counter()
    for _ in range(job.connections):
        _, protocol = await loop.create_connection(
            functools.partial(_LoadProtocol, job, budget, statuses, asyncio.Event()),
            HOST,
            job.port,
            ssl=context,
        )
        protocols.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(p.done.wait() for p in protocols)), job.seconds + 10)
    elapsed = time.perf_counter() - started
    for protocol in protocols:
        if protocol.transport is not None:
            protocol.transport.close()
    return {"statuses": dict(statuses), "elapsed": elapsed}


def _worker(job: Job) -> dict[str, Any]:
    try:
        import uvloop  # the client should cost as little as possible

        return uvloop.run(_drive(job))
    except ImportError:  # pragma: no cover
        return asyncio.run(_drive(job))


def _control(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def _wait_ready(control_port: int, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the sandbox process exited early")
        try:
            return dict(_control(control_port, "/info"))
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the sandbox did not start within 30 s")


def _apns_authorization(info: dict[str, Any]) -> str:
    creds = info["credentials"]
    key = Path(creds["apns_key_file"]).read_text()
    token = jwt.encode(
        {"iss": creds["apns_team_id"], "iat": int(time.time())},
        key,
        algorithm="ES256",
        headers={"kid": creds["apns_key_id"]},
    )
    return f"bearer {token}"


def _fcm_authorization(info: dict[str, Any]) -> str:
    """An access token from the sandbox's OAuth2 endpoint, as google-auth would get it."""
    account = json.loads(Path(info["credentials"]["fcm_service_account_file"]).read_text())
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": account["client_email"],
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": "https://oauth2.googleapis.com/token",
            "iat": now,
            "exp": now + 3600,
        },
        account["private_key"],
        algorithm="RS256",
        headers={"kid": account["private_key_id"]},
    )
    form = urllib.parse.urlencode(
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    ).encode()
    context = ssl.create_default_context(cafile=info["ca_file"])
    request = urllib.request.Request(account["token_uri"], data=form)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, context=context, timeout=5) as response:  # noqa: S310
        return "Bearer " + json.loads(response.read())["access_token"]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), to tell how busy the sandbox was."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_service(
    service: str, info: dict[str, Any], args: argparse.Namespace, server_pid: int
) -> dict[str, Any]:
    if service == "apns":
        authorization, port = _apns_authorization(info), info["apns_port"]
        prefix, topic = "/3/device/", info["credentials"]["apns_bundle_id"]
    else:
        authorization, port = _fcm_authorization(info), info["fcm_port"]
        prefix, topic = f"/v1/projects/{info['credentials']['fcm_project_id']}/messages:send", ""
    per_client = max(1, args.requests // args.clients)
    job = Job(
        service,
        port,
        info["ca_file"],
        per_client,
        args.seconds,
        args.connections,
        args.streams,
        authorization,
        prefix,
        topic,
    )
    with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
        cpu_before = _cpu_seconds(server_pid)
        results = pool.map(_worker, [job] * args.clients)
        cpu_after = _cpu_seconds(server_pid)
    statuses: Counter[str] = Counter()
    for result in results:
        statuses.update(result["statuses"])
    elapsed = max(result["elapsed"] for result in results)
    total = sum(statuses.values())
    server_cpu = (cpu_after - cpu_before) if cpu_before is not None and cpu_after else None
    return {
        "service": service,
        "requests": total,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(total / elapsed) if elapsed else 0,
        # What one fully busy sandbox core would serve: requests per CPU-second it used.
        "requests_per_server_cpu_second": round(total / server_cpu) if server_cpu else None,
        "server_cpu_share": round(server_cpu / elapsed, 2) if server_cpu else None,
        "statuses": dict(statuses),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40_000, help="per sandbox (max)")
    parser.add_argument("--seconds", type=float, default=20.0, help="per sandbox (max)")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=4, help="per client process")
    parser.add_argument("--streams", type=int, default=100, help="in flight per connection")
    args = parser.parse_args(argv)

    ports = {name: _free_port() for name in ("apns", "fcm", "webpush", "control")}
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as state_dir:
        command = [
            sys.executable,
            "-m",
            "services.sandbox",
            "serve",
            "--state-dir",
            state_dir,
            "--host",
            HOST,
            *(f"--{name}-port={port}" for name, port in ports.items()),
        ]
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            info = _wait_ready(ports["control"], process)
            reports = [
                _run_service(service, info, args, process.pid) for service in ("apns", "fcm")
            ]
            counters = _control(ports["control"], "/counters")
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(
        f"cores: {os.cpu_count()}  client processes: {args.clients}  "
        f"connections/client: {args.connections}  streams/connection: {args.streams}"
    )
    failed = False
    for report in reports:
        print(json.dumps(report))
        served = counters[report["service"]].get("200", 0)
        if report["statuses"].get("200", 0) != report["requests"] or served < report["requests"]:
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
