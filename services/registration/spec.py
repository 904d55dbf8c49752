"""How the Registration service plugs into the shared server bootstrap."""

from __future__ import annotations

from herald.registration.v1 import registration_service_pb2_grpc
from services.core.server import Runtime, ServiceSpec
from services.registration.servicer import RegistrationServicer


async def build(runtime: Runtime) -> RegistrationServicer:
    return RegistrationServicer(runtime)


SPEC = ServiceSpec(
    name="registration",
    full_name="herald.registration.v1.RegistrationService",
    add_to_server=registration_service_pb2_grpc.add_RegistrationServiceServicer_to_server,
    build_servicer=build,
)
