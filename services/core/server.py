"""The server bootstrap every Herald service runs on.

A service describes itself with a `ServiceSpec` (its name, its gRPC service, how to
build its servicer from the `Runtime`). `start_server` gives it a grpc.aio server whose
handlers are wrapped with tracing, metrics, error mapping and auth (rpc_wrapper.py),
the standard health service and reflection, bound to the configured port (port 0 in
tests). `main` adds configuration checks, JSON logs
and graceful shutdown: on SIGTERM the health status turns NOT_SERVING, new calls are
refused, and in-flight calls get `shutdown_grace_seconds` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider

from services.core import redis as redis_conn
from services.core import telemetry, tls
from services.core.auth import (
    AuthInterceptor,
    InternalKeyInterceptor,
    KeyCache,
    identity_key_verifier,
)
from services.core.config import ConfigError, Settings, load_settings
from services.core.errors import Unavailable
from services.core.logs import configure_logging
from services.core.metrics import Metrics
from services.core.rpc_wrapper import RpcWrapper, WrappingRegistrar
from services.core.supervisor import WORKER_VAR, supervise

log = logging.getLogger("herald.server")


@dataclass
class Runtime:
    """What a servicer may depend on, built once per process and closed at shutdown."""

    settings: Settings
    tracer_provider: TracerProvider
    redis: redis_conn.RedisClient
    metrics: Metrics
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A traced channel to another Herald service, shared by all callers in the process.

        It carries the services' internal key (when one is configured) and uses TLS when
        `tls_ca_file` is set (with this service's certificate as the client's, for mTLS).
        """
        if service not in self._channels:
            address = getattr(self.settings, f"{service}_address")
            interceptors = list(telemetry.client_interceptors(self.tracer_provider))
            if self.settings.internal_key:
                interceptors.append(InternalKeyInterceptor(self.settings.internal_key))
            credentials = tls.channel_credentials(self.settings)
            # round_robin spreads calls over every address a `dns:///` name resolves to
            # (a headless Kubernetes Service), instead of pinning one pod per caller.
            options = [("grpc.lb_policy_name", "round_robin"), *tls.channel_options(self.settings)]
            if credentials is None:
                channel = grpc.aio.insecure_channel(
                    address, options=options, interceptors=interceptors
                )
            else:
                channel = grpc.aio.secure_channel(
                    address, credentials, options=options, interceptors=interceptors
                )
            self._channels[service] = channel
        return self._channels[service]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()
        await self.redis.aclose()
        self.metrics.close()


@dataclass(frozen=True)
class ServiceSpec:
    """How one Herald service plugs into the bootstrap."""

    name: str  # "registration": also the prefix of its port and address settings
    full_name: str  # "herald.registration.v1.RegistrationService"
    add_to_server: Callable[[Any, Any], None]  # (servicer, server or WrappingRegistrar)
    build_servicer: Callable[[Runtime], Awaitable[Any]]
    needs_redis: bool = True


@dataclass
class RunningServer:
    spec: ServiceSpec
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    runtime: Runtime
    servicer: Any

    @property
    def address(self) -> str:
        return f"{self.runtime.settings.host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within `grace`, then close."""
        grace = self.runtime.settings.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        closer = getattr(self.servicer, "close", None)
        if closer is not None:
            await closer()
        await self.runtime.close()


async def start_server(
    spec: ServiceSpec, settings: Settings, port: int | None = None
) -> RunningServer:
    """Build the runtime and the servicer, then start serving. `port=0` picks a free one.

    A failure on the way (Redis not reachable, a port taken, a servicer that cannot be
    built) closes whatever was already opened: a caller that retries or exits leaves no
    Redis connection, worker task or listener behind.
    """
    provider = telemetry.setup_tracing(spec.name, settings)
    client = redis_conn.connect(settings)
    runtime = Runtime(
        settings=settings, tracer_provider=provider, redis=client, metrics=Metrics(spec.name)
    )
    server: grpc.aio.Server | None = None
    servicer: Any = None
    try:
        if spec.needs_redis:
            await redis_conn.wait_until_ready(client)
        servicer = await spec.build_servicer(runtime)
        server = _grpc_server(settings)
        health = _register(spec, servicer, server, runtime)
        wanted = settings.port_of(spec.name) if port is None else port
        bound = _listen(server, settings, spec.name, wanted)
        await server.start()
        if settings.metrics_port != 0:
            _serve_metrics(runtime.metrics, settings, wanted)
        await health.set(spec.full_name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        if server is not None:
            await server.stop(None)
        closer = getattr(servicer, "close", None)
        if closer is not None:
            await closer()
        await runtime.close()
        raise
    log.info(
        "serving",
        extra={
            "grpc_service": spec.full_name,
            "address": f"{settings.host}:{bound}",
            "metrics_port": runtime.metrics.port,
        },
    )
    return RunningServer(spec, server, bound, health, runtime, servicer)


def _grpc_server(settings: Settings) -> grpc.aio.Server:
    return grpc.aio.server(
        options=[
            # Several processes of one service share the port only when asked to; otherwise
            # a second process on a taken port must fail rather than silently share it.
            ("grpc.so_reuseport", 1 if settings.processes > 1 else 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            # Clients reconnect now and then, so new replicas get their share of calls;
            # long streams end with it too, and their clients resume from a cursor.
            ("grpc.max_connection_age_ms", round(settings.connection_max_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                round(settings.connection_age_grace_seconds * 1000),
            ),
        ],
    )


def _register(
    spec: ServiceSpec, servicer: Any, server: grpc.aio.Server, runtime: Runtime
) -> HealthServicer:
    """The service, health and reflection, each handler wrapped once (no grpc.aio
    interceptors: tracing, request id, metrics and error mapping around the auth checks
    live in rpc_wrapper.py)."""
    settings = runtime.settings
    keys = KeyCache(
        identity_key_verifier(lambda: runtime.channel("identity")),
        settings.api_key_cache_seconds,
    )
    registrar = WrappingRegistrar(
        server,
        RpcWrapper(runtime.tracer_provider, runtime.metrics, AuthInterceptor(settings, keys)),
    )
    spec.add_to_server(servicer, registrar)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, registrar)
    registrar.enable_reflection(
        (
            spec.full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
    )
    return health


def _listen(server: grpc.aio.Server, settings: Settings, name: str, wanted: int) -> int:
    try:
        credentials = tls.server_credentials(settings)
        listen = f"{settings.host}:{wanted}"
        bound = (
            server.add_insecure_port(listen)
            if credentials is None
            else server.add_secure_port(listen, credentials)
        )
    except RuntimeError:  # grpc raises on a port it cannot bind (taken, not permitted)
        bound = 0
    if bound == 0:
        raise ConfigError(f"HERALD_{name.upper()}_PORT: cannot listen on {settings.host}:{wanted}")
    return bound


def _serve_metrics(metrics: Metrics, settings: Settings, grpc_port: int) -> None:
    """/metrics on the configured port, or the gRPC port + 1000; a free one in tests.

    Each of several worker processes (HERALD_PROCESSES) takes the next port up.
    """
    base = settings.metrics_port if settings.metrics_port > 0 else grpc_port + 1000
    any_free = settings.metrics_port == -2 or (grpc_port == 0 and settings.metrics_port < 0)
    port = 0 if any_free else base
    if port:
        port += int(os.environ.get(WORKER_VAR, "0"))
    try:
        metrics.serve(settings.host, port)
    except OSError as error:
        raise ConfigError(
            f"HERALD_METRICS_PORT: cannot listen on {settings.host}:{port}: {error}"
        ) from None


async def serve(spec: ServiceSpec, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(spec, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
    await running.stop()
    telemetry.shutdown_tracing(running.runtime.tracer_provider)
    log.info("stopped")


def main(spec: ServiceSpec) -> None:
    """Entry point of `python -m services.<name>`: exit 2 on bad configuration, 1 when
    Redis does not answer at start-up (one line each, no traceback)."""
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"herald-{spec.name}: {error}", file=sys.stderr)
        sys.exit(2)
    configure_logging(spec.name, settings.log_level, settings.log_format)
    if settings.processes > 1 and not os.environ.get(WORKER_VAR):
        sys.exit(supervise(spec, settings))
    try:
        import uvloop

        uvloop.run(serve(spec, settings))
    except ConfigError as error:
        print(f"herald-{spec.name}: {error}", file=sys.stderr)
        sys.exit(2)
    except Unavailable as error:  # Redis (or another dependency) not there at start-up
        print(f"herald-{spec.name}: {error}", file=sys.stderr)
        sys.exit(1)
