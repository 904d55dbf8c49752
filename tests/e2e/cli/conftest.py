"""The `herald` CLI as a user runs it: a subprocess against real services on loopback.

The services run in this test process (the shared fixtures), so the CLI is started
with asyncio's subprocess API: a blocking `subprocess.run` would stall the very event
loop that serves its calls. Provider sandboxes run in-process too, as Delivery's own
tests start them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.core.config import Settings
from services.core.embedded_redis import free_port
from services.core.server import RunningServer, ServiceSpec
from services.sandbox import SandboxStack

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("registration", "identity", "campaign", "delivery")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> dict[str, Any]:
        """The --json error object the CLI writes on stderr."""
        return json.loads(self.stderr.strip().splitlines()[-1])["error"]


Herald = Callable[..., Awaitable[Result]]


@pytest.fixture(scope="session")
async def sandbox(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SandboxStack]:
    async with SandboxStack.start(tmp_path_factory.mktemp("cli-sandbox"), ports=0) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox: SandboxStack) -> Iterator[None]:
    yield
    sandbox.reset()


@pytest.fixture
def settings(settings: Settings, sandbox: SandboxStack) -> Settings:
    """The shared settings with every provider origin pointing at the sandboxes."""
    apns = f"https://127.0.0.1:{sandbox.apns_port}"
    return settings.model_copy(
        update={
            "apns_production_origin": apns,
            "apns_development_origin": apns,
            "fcm_origin": f"https://127.0.0.1:{sandbox.fcm_port}",
            "provider_ca_file": str(sandbox.ca_file),
            "log_level": "WARNING",
        }
    )


@pytest.fixture
async def stack(
    start_services: Callable[..., Awaitable[dict[str, RunningServer]]], redis: Redis
) -> Callable[..., Awaitable[dict[str, str]]]:
    """Starts the named services (on an emptied Redis) and returns their addresses."""

    async def start(*specs: ServiceSpec) -> dict[str, str]:
        servers = await start_services(*specs)
        return {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}

    return start


def cli_env(addresses: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "REDIS_URL"))}
    # A service a test did not start points at a port nobody listens on, never at a
    # developer's `make run` stack on the default ports.
    closed = f"127.0.0.1:{free_port()}"
    for name in SERVICES:
        env[f"HERALD_{name.upper()}_ADDRESS"] = addresses.get(name, closed)
    env.pop("COLUMNS", None)
    return env


async def run_cli(
    *args: str,
    addresses: dict[str, str] | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    """`herald <args>`; `env` adds variables (HERALD_* ones included) to the clean set."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        cwd=REPO,
        env={**cli_env(addresses or {}), **(env or {})},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), timeout=60
    )
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


async def create_campaign(addresses: dict[str, str], name: str, *options: str) -> str:
    """`herald campaigns create shop --name <name> <options> --json`; returns its id."""
    created = await run_cli(
        "campaigns", "create", "shop", "--name", name, *options, "--json", addresses=addresses
    )
    assert created.code == 0, created.stderr
    return str(created.json()["campaign_id"])


async def create_app(addresses: dict[str, str], app_id: str = "shop") -> str:
    """Set-up through the API (faster than a CLI round trip); returns the client secret."""
    import uuid

    import grpc

    from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc

    async with grpc.aio.insecure_channel(addresses["identity"]) as channel:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel)
        answer = await stub.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app=app_pb2.App(display_name=app_id.title()),
                app_id=app_id,
                request_id=str(uuid.uuid4()),
            )
        )
    return str(answer.client_secret)
