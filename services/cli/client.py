"""One gRPC channel per service, the caller's credentials as metadata, and every
failed call turned into a ServerError that names the service and its address.

Channels use TLS when the TLS options ask for it (services/cli/tls.py).

The CLI is a short-lived process, so it uses the synchronous gRPC API: no event loop
to manage, and server streams (ExportUsers, WatchCampaign) are plain iterators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from herald.campaign.v1 import campaign_service_pb2_grpc
from herald.delivery.v1 import delivery_service_pb2_grpc
from herald.identity.v1 import identity_service_pb2_grpc
from herald.registration.v1 import registration_service_pb2_grpc
from services.cli.errors import ServerError
from services.cli.tls import ChannelSecurity
from services.core.status import parse_error

SERVICES = ("registration", "identity", "campaign", "delivery")

_STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "registration": registration_service_pb2_grpc.RegistrationServiceStub,
    "identity": identity_service_pb2_grpc.IdentityServiceStub,
    "campaign": campaign_service_pb2_grpc.CampaignServiceStub,
    "delivery": delivery_service_pb2_grpc.DeliveryServiceStub,
}


@dataclass
class Client:
    addresses: dict[str, str]
    api_key: str = ""
    admin_key: str = ""
    timeout: float = 30.0
    security: ChannelSecurity = field(default_factory=ChannelSecurity)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    def _metadata(self) -> list[tuple[str, str]]:
        # Both keys may be sent: the server picks the one the RPC needs (docs/api.md,
        # Authentication). Neither is ever printed.
        metadata = []
        if self.api_key:
            metadata.append(("x-api-key", self.api_key))
        if self.admin_key:
            metadata.append(("x-admin-key", self.admin_key))
        return metadata

    def _stub(self, service: str) -> Any:
        channel = self._channels.get(service)
        if channel is None:
            address, options = self.addresses[service], list(self.security.options)
            if self.security.credentials is None:
                channel = grpc.insecure_channel(address, options=options)
            else:
                channel = grpc.secure_channel(address, self.security.credentials, options=options)
            self._channels[service] = channel
        return _STUBS[service](channel)

    def _error(self, error: grpc.RpcError, service: str, method: str) -> ServerError:
        return ServerError(
            parse_error(error), service, self.addresses[service], method, tls=self.security.tls
        )

    def call(self, service: str, method: str, request: Any, timeout: float | None = None) -> Any:
        """A unary call; raises ServerError on any non-OK status."""
        rpc = getattr(self._stub(service), method)
        try:
            return rpc(request, timeout=timeout or self.timeout, metadata=self._metadata())
        except grpc.RpcError as error:
            raise self._error(error, service, method) from None

    def stream(
        self,
        service: str,
        method: str,
        request: Any,
        resume: Callable[[Any], Any] | None = None,
    ) -> Iterator[Any]:
        """A server stream without a deadline (exports and watches run as long as
        they need); the caller may stop iterating at any time.

        Servers end every connection after a while (HERALD_CONNECTION_MAX_AGE_SECONDS),
        and a stream still open then fails UNAVAILABLE from the transport. With
        `resume`, such a stream that had answered is reopened with the request
        `resume(last response)` builds (the same watch, the export from its cursor);
        a stream that fails before any answer, or with a server's own error, raises.
        """
        rpc = getattr(self._stub(service), method)
        while True:
            responses = rpc(request, metadata=self._metadata())
            last: Any = None
            try:
                for last in responses:
                    yield last
                return
            except grpc.RpcError as error:
                failure = self._error(error, service, method)
                if resume is None or last is None or not failure.unreachable:
                    raise failure from None
                request = resume(last)
            finally:
                responses.cancel()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
