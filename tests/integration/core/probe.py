"""A small gRPC service used to exercise the shared runtime through a real server.

Its RPCs fail the ways Herald services fail (bad input, throttling, crashes, slow work),
so the tests see exactly what a caller sees. Messages are the standard health-check
messages; the service name is the probe's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest as Request
from grpc_health.v1.health_pb2 import HealthCheckResponse as Response

from services.core.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from services.core.logs import request_id_var
from services.core.server import Runtime, ServiceSpec

SERVICE = "herald.test.v1.ProbeService"


class Probe:
    """`request.service` picks the behaviour of each call."""

    def __init__(self) -> None:
        self.finished: list[str] = []

    async def Call(self, request: Request, context: Any) -> Response:
        match request.service:
            case "invalid":
                raise InvalidArgument(
                    "2 fields are invalid",
                    [
                        FieldViolation("devices[3].token", "must be 64 hexadecimal characters"),
                        FieldViolation("app_id", "is required", "REQUIRED"),
                    ],
                    reason="INVALID_DEVICE",
                )
            case "missing":
                raise NotFound("APP_NOT_FOUND", "app 'a1' does not exist", {"app_id": "a1"})
            case "busy":
                raise ResourceExhausted("QUEUE_FULL", "the delivery queue is full", 2.5)
            case "crash":
                raise RuntimeError("secret-token-abcdef0123456789 leaked into an exception")
            case "slow":
                await asyncio.sleep(1.0)
                self.finished.append("slow")
                return Response(status=Response.SERVING)
            case "request-id":
                return Response(
                    status=Response.SERVING if request_id_var.get() else Response.UNKNOWN
                )
        return Response(status=Response.SERVING)

    async def Stream(self, request: Request, context: Any) -> AsyncIterator[Response]:
        yield Response(status=Response.SERVING)
        if request.service == "invalid":
            raise InvalidArgument("bad cursor", [FieldViolation("cursor", "is not a cursor")])
        yield Response(status=Response.NOT_SERVING)


def _add(servicer: Probe, server: grpc.aio.Server) -> None:
    handlers = {
        "Call": grpc.unary_unary_rpc_method_handler(
            servicer.Call,
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            servicer.Stream,
            request_deserializer=Request.FromString,
            response_serializer=Response.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


async def _build(runtime: Runtime) -> Probe:
    return Probe()


PROBE_SPEC = ServiceSpec(
    name="registration", full_name=SERVICE, add_to_server=_add, build_servicer=_build
)


def call(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        f"/{SERVICE}/Call",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


def stream(channel: grpc.aio.Channel) -> Any:
    return channel.unary_stream(
        f"/{SERVICE}/Stream",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
