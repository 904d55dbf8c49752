"""Who is calling, and may they: API keys with scopes, the admin key, the services' key.

With `require_api_keys`, `AuthInterceptor` admits a call only with one of:
- `x-herald-internal`: the key the services share to call each other (every RPC);
- `x-admin-key`: the operator's key (every RPC, and the only way to CreateApp,
  ListApps and DeleteApp, and to DeleteUser, ListUsers and ExportUsers: see
  DIRECTORY_RPCS);
- `x-api-key`: an app's key, verified by Identity (VerifyApiKey) and trusted for
  `api_key_cache_seconds`. Scope REGISTER reaches only the mobile-gateway RPCs, scope
  FULL every RPC of its own app; neither reaches the services' internal RPCs.
A request naming an app (an `app_id` field at the top level or in a message it
carries) must name the key's own app; a list of apps (`app_ids`, where empty means
every app: audiences) must name only it, and an empty one is narrowed to it, so an app
key's "every app" is its own app. RPCs that address a resource by id alone
(GetCampaign, GetNotification) check the owner with `require_app_access` once they have
loaded it. Users belong to no app: they are one directory shared by the deployment's
apps, so an app key reads and writes one user by id, and the RPCs that span the
directory or reach into other apps are the operator's (DIRECTORY_RPCS). Keys and
secrets are compared in constant time and never logged.
"""

from __future__ import annotations

import enum
import functools
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from services.core.config import Settings
from services.core.errors import PermissionDenied, Unauthenticated
from services.core.handlers import Behavior, Decorator, WrappingInterceptor, answer, answers

API_KEY_HEADER = "x-api-key"
ADMIN_KEY_HEADER = "x-admin-key"
INTERNAL_KEY_HEADER = "x-herald-internal"


class Need(enum.Enum):
    OPEN = "open"  # health and reflection
    REGISTER = "register"  # mobile gateways
    FULL = "full"  # backends, on their own app
    ADMIN = "admin"  # the operator
    INTERNAL = "internal"  # Herald's services only


REGISTER_RPCS = frozenset(
    {
        "RegisterDevice",
        "UpdatePermission",
        "UnregisterDevice",
        "ChangeUser",
        "Logout",
        "RecordEngagement",
    }
)
# The user directory is shared by the apps of one deployment (like a Braze workspace):
# an app key may read and write one user by id (the shared profile), but an RPC that
# acts on the whole directory or across apps would let one app's key change or read
# every other app's part, so it is the operator's. DeleteUser erases the profile and
# unbinds the user's devices in every app; ListUsers and ExportUsers read every user.
DIRECTORY_RPCS = frozenset({"DeleteUser", "ListUsers", "ExportUsers"})
ADMIN_RPCS = frozenset({"CreateApp", "ListApps", "DeleteApp"}) | DIRECTORY_RPCS
INTERNAL_RPCS = frozenset(
    {
        "VerifyClientSecret",
        "VerifyApiKey",
        "AssignDeviceUser",
        "InvalidateTokens",
        "BatchListUserDevices",
        "PurgeAppDevices",
    }
)
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def need_of(method: str) -> Need:
    """What a full gRPC method name (`/pkg.Service/Rpc`) requires of its caller."""
    if method.startswith(OPEN_SERVICES):
        return Need.OPEN
    rpc = method.rsplit("/", 1)[-1]
    if rpc in ADMIN_RPCS:
        return Need.ADMIN
    if rpc in INTERNAL_RPCS:
        return Need.INTERNAL
    if rpc in REGISTER_RPCS:
        return Need.REGISTER
    return Need.FULL


@dataclass(frozen=True)
class Caller:
    kind: str  # "app", "admin", "internal" or "anyone" (auth off)
    app_id: str = ""
    full_scope: bool = False

    def may(self, need: Need) -> bool:
        if self.kind in ("admin", "internal", "anyone"):
            return need is not Need.INTERNAL or self.kind != "admin"
        if need is Need.REGISTER:
            return True
        return need is Need.FULL and self.full_scope


ANYONE = Caller("anyone")
caller_var: ContextVar[Caller] = ContextVar("herald_caller", default=ANYONE)


def require_app_access(app_id: str, caller: Caller | None = None) -> None:
    """Raise PERMISSION_DENIED unless the caller (default: the current one) may touch
    `app_id`'s data."""
    caller = caller or caller_var.get()
    if caller.kind == "app" and not hmac.compare_digest(caller.app_id, app_id):
        raise PermissionDenied(
            "APP_ACCESS_DENIED", "this API key belongs to another app", {"app_id": app_id}
        )


def caller_app() -> str:
    """The app an app key belongs to; "" for the operator, the services, or auth off.

    RPCs that read across apps (a user's devices, a user's change log, subscription
    state) narrow their answer to this app for an app key.
    """
    caller = caller_var.get()
    return caller.app_id if caller.kind == "app" else ""


def app_ids_in(message: Message) -> set[str]:
    """Every `app_id` the request names, at the top level or one message deep."""
    found: set[str] = set()
    for field, value in message.ListFields():
        if field.name == "app_id" and isinstance(value, str) and value:
            found.add(value)
        elif field.message_type is not None:
            values = value if field.is_repeated else [value]
            for item in values:
                if isinstance(item, Message) and "app_id" in item.DESCRIPTOR.fields_by_name:
                    nested = getattr(item, "app_id")  # noqa: B009 - a proto field by name
                    if nested:
                        found.add(nested)
    return found


APP_LIST = "app_ids"


@functools.cache
def _app_list_holders(message_type: Descriptor) -> tuple[tuple[str, bool], ...]:
    """(name, repeated) of the fields of `message_type` whose message carries an
    `app_ids` list, outside any oneof (setting one of those would change which choice
    the request made)."""
    return tuple(
        (field.name, field.is_repeated)
        for field in message_type.fields
        if field.message_type is not None
        and APP_LIST in field.message_type.fields_by_name
        and (field.is_repeated or field.containing_oneof is None)
    )


def hold_app_lists(message: Message, caller: Caller) -> None:
    """Holds every `app_ids` list of the request (at the top or one message deep) to
    the caller's app: another app named is PERMISSION_DENIED `APP_ACCESS_DENIED`, and
    an empty list (every app) becomes the caller's own app. A message left unset counts
    as empty: an audience query without one means every app too."""
    lists = [message] if APP_LIST in message.DESCRIPTOR.fields_by_name else []
    for name, repeated in _app_list_holders(message.DESCRIPTOR):
        value = getattr(message, name)
        lists += list(value) if repeated else [value]
    for holder in lists:
        named = getattr(holder, APP_LIST)
        for app_id in named:
            require_app_access(app_id, caller)
        if not named:
            named.append(caller.app_id)


VerifyKey = Callable[[str], Awaitable[Caller]]


class KeyCache:
    """Verified keys for a short while, so a busy gateway does not ask Identity each call."""

    def __init__(self, verify: VerifyKey, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._verify = verify
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, tuple[float, Caller]] = {}

    async def caller_for(self, key: str) -> Caller:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        caller = await self._verify(key)  # raises UNAUTHENTICATED for a bad key
        if len(self._entries) >= self._max:
            self._entries.clear()  # bounded memory; a refill costs one verify per key
        self._entries[key] = (now + self._ttl, caller)
        return caller


def _metadata(context: grpc.aio.ServicerContext, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return ""


class AuthInterceptor(WrappingInterceptor):
    """Admits or refuses each call; binds the caller for `require_app_access`."""

    def __init__(self, settings: Settings, keys: KeyCache) -> None:
        self.settings = settings
        self.keys = keys

    def decorators(self, method: str) -> tuple[Decorator, Decorator] | None:
        need = need_of(method)
        if need is Need.OPEN or not self.settings.require_api_keys:
            return None
        rpc = method.rsplit("/", 1)[-1]
        return _admitting(lambda context: self._admit(context, need, rpc))

    async def _admit(self, context: grpc.aio.ServicerContext, need: Need, rpc: str) -> Caller:
        internal = _metadata(context, INTERNAL_KEY_HEADER)
        if internal:
            if hmac.compare_digest(internal, self.settings.internal_key):
                return Caller("internal")
            raise Unauthenticated("INTERNAL_KEY_INVALID", "the internal service key is wrong")
        admin = _metadata(context, ADMIN_KEY_HEADER)
        if admin:
            if self.settings.admin_key and hmac.compare_digest(admin, self.settings.admin_key):
                caller = Caller("admin")
            else:
                raise Unauthenticated("ADMIN_KEY_INVALID", "the admin key is wrong")
        else:
            key = _metadata(context, API_KEY_HEADER)
            if not key:
                raise Unauthenticated(
                    "API_KEY_MISSING", f"send an API key in the {API_KEY_HEADER!r} metadata"
                )
            caller = await self.keys.caller_for(key)
        if not caller.may(need):
            if need is Need.ADMIN:
                raise admin_key_required(rpc)
            raise PermissionDenied(
                "API_KEY_SCOPE_INSUFFICIENT",
                "this API key's scope does not allow this RPC",
                {"needs": need.value},
            )
        return caller


def admin_key_required(rpc: str) -> PermissionDenied:
    """The refusal of an operator RPC to an app key, saying why it is the operator's."""
    shared = rpc in DIRECTORY_RPCS
    why = "it acts on the user directory every app shares" if shared else "it manages apps"
    return PermissionDenied("ADMIN_KEY_REQUIRED", f"{rpc} needs the admin key: {why}", {"rpc": rpc})


def _check_request(caller: Caller, request: Any) -> None:
    if caller.kind == "app" and isinstance(request, Message):
        for app_id in app_ids_in(request):
            require_app_access(app_id, caller)
        hold_app_lists(request, caller)


def _admitting(
    admit: Callable[[grpc.aio.ServicerContext], Awaitable[Caller]],
) -> tuple[Decorator, Decorator]:
    """Decorators that admit the caller and bind it before the servicer runs."""

    async def enter(request: Any, streaming: bool, context: Any) -> tuple[Any, Any]:
        caller = await admit(context)
        if streaming:
            request = _checked(caller, request)
        else:
            _check_request(caller, request)
        return request, caller_var.set(caller)

    def answer_once(behavior: Behavior, request_streaming: bool) -> Behavior:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            request, token = await enter(request, request_streaming, context)
            try:
                return await answer(behavior(request, context))
            finally:
                caller_var.reset(token)

        return unary

    def answer_stream(behavior: Behavior, request_streaming: bool) -> Behavior:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request, token = await enter(request, request_streaming, context)
            try:
                async for item in answers(behavior(request, context)):
                    yield item
            finally:
                caller_var.reset(token)

        return stream

    return answer_once, answer_stream


async def _checked(caller: Caller, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream whose every message is held to the caller's app."""
    async for request in requests:
        _check_request(caller, request)
        yield request


class InternalKeyInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds the services' shared key to every call one Herald service makes to another."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _with_key(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(INTERNAL_KEY_HEADER, self.key)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_key(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_key(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_key(details), requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_key(details), requests)


def identity_key_verifier(channel: Callable[[], grpc.aio.Channel]) -> VerifyKey:
    """Verifies an app's API key by asking Identity (the owner of keys)."""
    from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
    from services.core.errors import Unavailable
    from services.core.status import parse_error

    async def verify(key: str) -> Caller:
        stub = identity_service_pb2_grpc.IdentityServiceStub(channel())
        try:
            answer = await stub.VerifyApiKey(
                identity_service_pb2.VerifyApiKeyRequest(key=key), timeout=3
            )
        except grpc.aio.AioRpcError as error:
            details = parse_error(error)
            if details.code == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(
                    details.reason or "API_KEY_INVALID", details.message
                ) from None
            raise Unavailable(
                "DEPENDENCY_UNAVAILABLE",
                "Identity could not verify the API key",
                {"service": "identity"},
            ) from None
        api_key = answer.api_key
        return Caller("app", api_key.app_id, full_scope=api_key.scope == app_pb2.API_KEY_SCOPE_FULL)

    return verify
