"""What Registration asks Identity: does the app exist, is this client secret right.

App existence is cached in process (positive answers only, APP_CACHE_SECONDS) so that
RegisterDevice, called at every session start, does not pay a round trip to Identity
each time for it; a new app works at once, a deleted app stops being accepted within
APP_CACHE_SECONDS (its devices are purged by Identity's DeleteApp through
PurgeAppDevices, and "every app" audiences ask Identity afresh).

Client secrets are never cached: a revoked secret (RotateClientSecret with a zero
overlap, or past its window) must stop working at once, and Identity's check is one
HMGET. Only user-bound calls pay it (an anonymous flush does not).
"""

from __future__ import annotations

import time

import grpc

from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc
from services.core.errors import NotFound, PermissionDenied, Unauthenticated, Unavailable
from services.core.server import Runtime

APP_CACHE_SECONDS = 30.0
IDENTITY_TIMEOUT_SECONDS = 3.0
_CACHE_LIMIT = 100_000


def app_not_found(app_id: str) -> NotFound:
    return NotFound("APP_NOT_FOUND", f"app {app_id!r} does not exist", {"app_id": app_id})


def _identity_unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(
        "DEPENDENCY_UNAVAILABLE",
        f"the Identity service did not answer ({error.code().name})",
        {"service": "identity"},
    )


class AppDirectory:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._apps: dict[str, float] = {}

    def _stub(self) -> identity_service_pb2_grpc.IdentityServiceAsyncStub:
        stub: identity_service_pb2_grpc.IdentityServiceAsyncStub = (
            identity_service_pb2_grpc.IdentityServiceStub(self._runtime.channel("identity"))
        )
        return stub

    @staticmethod
    def _fresh(cache: dict, key: object) -> bool:
        expiry = cache.get(key)
        return expiry is not None and expiry > time.monotonic()

    @staticmethod
    def _remember(cache: dict, key: object) -> None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()  # a crude bound; entries are cheap to fetch again
        cache[key] = time.monotonic() + APP_CACHE_SECONDS

    async def require_app(self, app_id: str) -> None:
        """Raises APP_NOT_FOUND unless Identity knows the app."""
        if self._fresh(self._apps, app_id):
            return
        try:
            await self._stub().GetApp(
                identity_service_pb2.GetAppRequest(app_id=app_id),
                timeout=IDENTITY_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise app_not_found(app_id) from None
            raise _identity_unavailable(error) from None
        self._remember(self._apps, app_id)

    async def require_client_secret(self, app_id: str, client_secret: str) -> None:
        """Binding a device to a user needs the app's client secret (docs/api.md)."""
        if not client_secret:
            raise Unauthenticated(
                "CLIENT_SECRET_REQUIRED",
                "binding a device to a user needs the app's client_secret",
                {"app_id": app_id},
            )
        try:
            answer = await self._stub().VerifyClientSecret(
                identity_service_pb2.VerifyClientSecretRequest(
                    app_id=app_id, client_secret=client_secret
                ),
                timeout=IDENTITY_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise app_not_found(app_id) from None
            raise _identity_unavailable(error) from None
        if not answer.valid:
            raise PermissionDenied(
                "CLIENT_SECRET_INVALID", "the client secret is not valid", {"app_id": app_id}
            )
        # A valid secret proves the app exists: refresh that (app-only) cache entry.
        self._remember(self._apps, app_id)

    def forget_app(self, app_id: str) -> None:
        """Drops a cached "the app exists" (the app was just deleted)."""
        self._apps.pop(app_id, None)

    async def app_exists(self, app_id: str) -> bool:
        """Asks Identity without the cache (for "every app" audiences, which must not
        stream a deleted app's devices)."""
        try:
            await self._stub().GetApp(
                identity_service_pb2.GetAppRequest(app_id=app_id),
                timeout=IDENTITY_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                self.forget_app(app_id)
                return False
            raise _identity_unavailable(error) from None
        self._remember(self._apps, app_id)
        return True
