"""The APNs sender: one pool per (app, environment) and credential version.

Token auth adds the shared provider token to every request; certificate auth puts the
app's certificate on the TLS connection instead. When the credential's version
changes, new sends get a new pool (new connections, new token) and the old pool
drains: its in-flight sends finish, then it closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.core.config import Settings
from services.delivery.credentials import Credential
from services.delivery.payloads import ProviderRequest
from services.delivery.senders import ProviderAnswer, parse_retry_after
from services.delivery.senders.apns_jwt import ApnsTokenSigner
from services.delivery.transport.connection import never_indexed
from services.delivery.transport.errors import TransportError
from services.delivery.transport.pool import H2Pool, PoolOptions
from services.delivery.transport.tls import client_context

log = logging.getLogger(__name__)
# Answers after which the connection's provider token cannot be fixed in place.
RETIRE_CONNECTION = frozenset(
    {"TooManyProviderTokenUpdates", "ExpiredProviderToken", "UnrelatedKeyIdInToken"}
)


@dataclass
class _Route:
    version: int
    pool: H2Pool
    signer: ApnsTokenSigner | None


class ApnsSender:
    def __init__(
        self, settings: Settings, options: PoolOptions | None = None, drain_seconds: float = 30.0
    ) -> None:
        self.settings = settings
        self.options = options or PoolOptions()
        self.drain_seconds = drain_seconds
        self._routes: dict[tuple[str, str], _Route] = {}
        self._draining: set[asyncio.Task[None]] = set()
        # (event, provider) for metrics: "goaway", "token_refresh"; set by the Dispatcher.
        self.on_event: Callable[[str, str], None] = lambda _event, _provider: None

    def origin_for(self, environment: str) -> str:
        if environment == "production":
            return self.settings.apns_production_origin
        return self.settings.apns_development_origin

    def route(self, credential: Credential) -> _Route:
        key = (credential.slot.app_id, credential.slot.environment)
        route = self._routes.get(key)
        if route is not None and route.version == credential.version:
            return route
        if route is not None:
            self._retire(route)
        secret, public = credential.secret, credential.public
        if credential.kind == "apns_token":
            ctx = client_context(self.settings.provider_ca_file)
            signer: ApnsTokenSigner | None = ApnsTokenSigner(
                secret["private_key_pem"], public["key_id"], public["team_id"]
            )
        else:
            ctx = client_context(
                self.settings.provider_ca_file, secret["certificate_pem"], secret["private_key_pem"]
            )
            signer = None
        pool = H2Pool(self.origin_for(credential.slot.environment), ctx, self.options)
        pool.on_goaway = lambda: self.on_event("goaway", "apns")
        if signer is not None:
            signer.on_mint = lambda: self.on_event("token_refresh", "apns")
        route = _Route(credential.version, pool, signer)
        self._routes[key] = route
        return route

    def _retire(self, route: _Route) -> None:
        task = asyncio.get_running_loop().create_task(route.pool.close(self.drain_seconds))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def send(
        self, credential: Credential, request: ProviderRequest, origin: str, time_limit: float
    ) -> ProviderAnswer:
        route = self.route(credential)
        apns_id = ""
        headers: list[tuple[str, str]] = []
        for name, value in request.headers:
            if name == "apns-id":  # new per request: kept out of the HPACK table
                apns_id = value
                headers.append(never_indexed(name, value))
            else:
                headers.append((name, value))
        if route.signer is not None:
            headers.append(("authorization", route.signer.authorization()))
        try:
            exchange = await route.pool.request(
                "POST", request.path, headers, request.body, time_limit, unique_path=True
            )
        except TransportError as error:
            return ProviderAnswer(0, error.reason, apns_id, error=error.detail, transport=True)
        response = exchange.response
        provider_id = response.headers.get("apns-id", apns_id)
        if response.status == 200:
            return ProviderAnswer(200, "", provider_id, connection_id=exchange.connection_id)
        reason, timestamp = _error_body(response.body)
        if reason in RETIRE_CONNECTION:
            route.pool.retire(exchange.connection_id)
            if reason == "ExpiredProviderToken" and route.signer is not None:
                route.signer.expire()
        return ProviderAnswer(
            response.status,
            reason,
            provider_id,
            provider_time=timestamp / 1000 if timestamp else None,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            connection_id=exchange.connection_id,
            error=f"APNs {response.status} {reason or '(no reason)'}",
        )

    def pools(self) -> list[H2Pool]:
        return [route.pool for route in self._routes.values()]

    def signer_for(self, app_id: str, environment: str) -> ApnsTokenSigner | None:
        route = self._routes.get((app_id, environment))
        return route.signer if route else None

    def pool_for(self, app_id: str, environment: str) -> H2Pool | None:
        route = self._routes.get((app_id, environment))
        return route.pool if route else None

    async def close(self) -> None:
        for route in self._routes.values():
            await route.pool.close(1.0)
        self._routes.clear()
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)


def _error_body(body: bytes) -> tuple[str, int]:
    """(reason, timestamp ms) from an APNs error body; tolerates an empty or odd body."""
    try:
        data = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        return "", 0
    if not isinstance(data, dict):
        return "", 0
    timestamp = data.get("timestamp")
    return str(data.get("reason") or ""), int(timestamp) if isinstance(
        timestamp, int | float
    ) else 0
