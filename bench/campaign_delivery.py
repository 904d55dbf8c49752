"""The real Delivery behind nginx, for `bench.campaign --real-delivery`.

The same cheap endpoint Delivery's own benchmark uses (bench/delivery_queue.py: Debian
nginx-light with HTTP/2 and TLS, the sandbox CA's server certificate, answering 200 to
every APNs request), and a real Delivery process (`python -m services.delivery`: its
queue, workers and StreamOutcomes) with the sandbox's demo APNs token credentials for
the benchmark app. The sandbox only lends its CA, certificate and demo key: it is
stopped before the run so it takes no CPU.

With `sending=False` (`bench.campaign --queue-only`) Delivery runs without queue
workers and without nginx: Enqueue checks, builds and queues each notification into
its durable queue and nothing is sent, so the fan-out's figure includes the real
Enqueue. The app then has APNs and FCM credentials (the sandbox's demo ones).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.delivery_queue import (
    DS,
    DeliveryProcess,
    _nginx_binary,
    _put_credentials,
    _start_nginx,
)
from bench.delivery_transport import _start_sandbox
from herald.delivery.v1 import credentials_pb2


class RealDelivery:
    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        concurrency: int,
        processes: int,
        sending: bool = True,
    ) -> None:
        self.workdir = workdir
        self.sending = sending
        self.redis_url = redis_url
        self.concurrency = concurrency
        self.processes = processes
        self.nginx: subprocess.Popen[bytes] | None = None
        self.node: DeliveryProcess | None = None

    async def start(self, app_id: str) -> RealDelivery:
        sandbox_dir = self.workdir / "sandbox"
        sandbox, _ = _start_sandbox(sandbox_dir)
        try:
            demo = json.loads((sandbox_dir / "credentials" / "demo.json").read_text())
            key_file = sandbox_dir / "credentials" / f"AuthKey_{demo['apns_key_id']}.p8"
            key = key_file.read_text()
            port = 9  # discard: with sending off nothing connects to it
            if self.sending:
                binary = _nginx_binary()
                started = _start_nginx(binary, self.workdir, sandbox_dir) if binary else None
                if started is None:
                    raise RuntimeError("nginx could not be installed or started")
                self.nginx, port = started
            self.node = DeliveryProcess(
                self.redis_url,
                f"https://127.0.0.1:{port}",
                str(sandbox_dir / "ca.pem"),
                self.concurrency,
                self.processes,
                HERALD_DELIVERY_WORKERS_ENABLED=str(self.sending).lower(),
            )
            await _put_credentials(self.node, demo, key)
            if not self.sending:
                account = (sandbox_dir / "credentials" / "fcm-service-account.json").read_text()
                await self.node.stub.PutCredentials(
                    DS.PutCredentialsRequest(
                        credentials=credentials_pb2.Credentials(
                            app_id=app_id,
                            fcm=credentials_pb2.FcmServiceAccount(service_account_json=account),
                        )
                    )
                )
        finally:
            sandbox.terminate()
            sandbox.wait(10)
        return self

    @property
    def address(self) -> str:
        assert self.node is not None
        return f"127.0.0.1:{self.node.port}"

    def pids(self) -> dict[str, list[int]]:
        """Delivery's server process(es), and nginx's master and worker."""
        assert self.node is not None
        if self.nginx is None:
            return {"delivery": self.node.pids()}
        workers = subprocess.run(
            ["pgrep", "-P", str(self.nginx.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return {"delivery": self.node.pids(), "nginx": [self.nginx.pid, *map(int, workers)]}

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.close()
        if self.nginx is not None:
            self.nginx.terminate()
            self.nginx.wait(10)
