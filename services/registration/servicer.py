"""The gRPC edge of the Registration service: proto in, domain call, proto out.

RPCs not overridden here answer UNIMPLEMENTED (NOT_IMPLEMENTED_YET) until issue #3
brings them; see services/core/pending.py.
"""

from __future__ import annotations

from herald.registration.v1 import registration_service_pb2, registration_service_pb2_grpc
from services.core.pending import fill_pending
from services.core.server import Runtime

ISSUE = "issue #3"


class RegistrationServicer(registration_service_pb2_grpc.RegistrationServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        fill_pending(
            self,
            registration_service_pb2_grpc.RegistrationServiceServicer,
            registration_service_pb2.DESCRIPTOR.services_by_name["RegistrationService"],
            ISSUE,
        )
