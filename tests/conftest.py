"""Session-wide fixtures: a real redis-server on a free port and real gRPC servers.

The redis-server comes from the project's own dependency (see
services/core/embedded_redis.py); nothing here is mocked.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.asyncio import Redis, RedisCluster

from services.core.config import Settings, load_settings
from services.core.embedded_redis import EmbeddedRedis, EmbeddedRedisCluster, free_port
from services.core.server import RunningServer, ServiceSpec, start_server
from tests import script_runs


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-cluster",
        action="store_true",
        help="run against a 3-master Redis Cluster instead of a single redis-server",
    )
    parser.addoption(
        "--every-script",
        action="store_true",
        help="fail the run unless every Lua script of services/ was executed (make "
        "test-cluster: the Cluster suite must cover every script)",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.getoption("--every-script"):
        script_runs.watch()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.getoption("--every-script") or exitstatus != 0:
        return
    missed = script_runs.never_run()
    if missed:
        session.config.get_terminal_writer().line(
            "Lua scripts no test executed: " + ", ".join(missed), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "single_redis: needs a single redis-server (skipped with --redis-cluster)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--redis-cluster"):
        skip = pytest.mark.skip(reason="needs a single redis-server")
        for item in items:
            if "single_redis" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster_mode(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--redis-cluster"))


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory, cluster_mode: bool
) -> Iterator[EmbeddedRedis | EmbeddedRedisCluster]:
    directory = tmp_path_factory.mktemp("redis")
    server = EmbeddedRedisCluster(directory) if cluster_mode else EmbeddedRedis(directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(
    redis_server: EmbeddedRedis | EmbeddedRedisCluster, cluster_mode: bool
) -> AsyncIterator[Redis | RedisCluster]:
    """A client on a freshly emptied database: each test starts from a clean state."""
    client: Redis | RedisCluster
    if cluster_mode:
        client = RedisCluster.from_url(redis_server.url)
        await client.flushall(target_nodes=RedisCluster.ALL_NODES)
    else:
        client = Redis.from_url(redis_server.url)
        await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_server: EmbeddedRedis | EmbeddedRedisCluster, cluster_mode: bool) -> Settings:
    return load_settings(
        redis_url=redis_server.url,
        redis_cluster=cluster_mode,
        log_format="text",
        trace_exporter="none",
        shutdown_grace_seconds=2.0,
        metrics_port=-2,  # any free port: fixed ports + 1000 could collide between tests
        credentials_key=base64.b64encode(os.urandom(32)).decode(),
    )


ServiceStarter = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_service(settings: Settings) -> AsyncIterator[ServiceStarter]:
    """Starts a service's real gRPC server on a free loopback port; stops it after the test."""
    running: list[RunningServer] = []

    async def start(spec: ServiceSpec, custom: Settings | None = None) -> RunningServer:
        chosen = custom or settings
        # Port 0 unless the caller wired a fixed port into its settings (start_services).
        port = chosen.port_of(spec.name) if custom is not None else 0
        server = await start_server(spec, chosen, port=port)
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        await server.stop(grace=0)


StackStarter = Callable[..., Awaitable[dict[str, RunningServer]]]


@pytest.fixture
async def start_services(settings: Settings, start_service: ServiceStarter) -> StackStarter:
    """Starts several services that call each other, each on its own free port.

    Ports are chosen first so every service's `<name>_address` setting points at the
    others before any of them starts (Registration and Identity call each other).
    `base` replaces the session's settings (e.g. with API keys required). Returns the
    running servers by service name.
    """

    async def start(*specs: ServiceSpec, base: Settings | None = None) -> dict[str, RunningServer]:
        ports = {spec.name: free_port() for spec in specs}
        wired = (base or settings).model_copy(
            update={
                **{f"{name}_port": port for name, port in ports.items()},
                **{f"{name}_address": f"127.0.0.1:{port}" for name, port in ports.items()},
            }
        )
        return {spec.name: await start_service(spec, wired) for spec in specs}

    return start
