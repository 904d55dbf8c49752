"""The gRPC edge of the Identity service: proto in, domain call, proto out.

RPCs not overridden here answer UNIMPLEMENTED (NOT_IMPLEMENTED_YET) until issue #3
brings them; see services/core/pending.py.
"""

from __future__ import annotations

from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from services.core.pending import fill_pending
from services.core.server import Runtime

ISSUE = "issue #3"


class IdentityServicer(identity_service_pb2_grpc.IdentityServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        fill_pending(
            self,
            identity_service_pb2_grpc.IdentityServiceServicer,
            identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"],
            ISSUE,
        )
