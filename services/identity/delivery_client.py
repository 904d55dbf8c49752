"""Identity's view of Delivery: removing a deleted app's provider credentials.

Delivery keys credentials by app id, so without this an app deleted and created again
with the same id would send with the old app's APNs key, FCM account and VAPID key.
"""

from __future__ import annotations

import grpc

from herald.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc
from services.identity.dependency_errors import translate

CALL_TIMEOUT_SECONDS = 5.0


class Delivery:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)

    async def purge_app_credentials(self, app_id: str) -> int:
        """Deletes every credential the app has in Delivery; how many there were."""
        try:
            listed = await self.stub.ListCredentials(
                delivery_service_pb2.ListCredentialsRequest(app_id=app_id),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            for credentials in listed.credentials:
                try:
                    await self.stub.DeleteCredentials(
                        delivery_service_pb2.DeleteCredentialsRequest(
                            app_id=app_id,
                            provider=credentials.provider,
                            apns_environment=credentials.apns_environment,
                        ),
                        timeout=CALL_TIMEOUT_SECONDS,
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.NOT_FOUND:
                        raise  # NOT_FOUND: deleted meanwhile, which is the goal
        except grpc.aio.AioRpcError as error:
            raise translate(error, "Delivery") from None
        return len(listed.credentials)
