"""The Web Push sender: one pool per push-service origin, shared by every app.

Endpoints are arbitrary https origins chosen by browsers (FCM, Mozilla, Apple, ...);
pools are created on first use and the least recently used ones are closed beyond
`max_origins`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from services.core.config import Settings
from services.delivery.credentials import Credential
from services.delivery.payloads import ProviderRequest
from services.delivery.senders import ProviderAnswer, parse_retry_after
from services.delivery.senders.vapid import VapidSigner
from services.delivery.transport.errors import TransportError
from services.delivery.transport.pool import H2Pool, PoolOptions
from services.delivery.transport.tls import client_context


class WebPushSender:
    def __init__(
        self, settings: Settings, options: PoolOptions | None = None, max_origins: int = 256
    ) -> None:
        self.options = options or PoolOptions(max_connections=2)
        self.max_origins = max_origins
        self._context = client_context(settings.provider_ca_file)
        self._pools: OrderedDict[str, H2Pool] = OrderedDict()
        self._signers: dict[str, tuple[int, VapidSigner]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # (event, provider) for metrics: "goaway"; set by the Dispatcher.
        self.on_event: Callable[[str, str], None] = lambda _event, _provider: None

    def pools(self) -> list[H2Pool]:
        return list(self._pools.values())

    def pool_for(self, origin: str) -> H2Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = H2Pool(origin, self._context, self.options)
            pool.on_goaway = lambda: self.on_event("goaway", "webpush")
            while len(self._pools) > self.max_origins:
                _, old = self._pools.popitem(last=False)
                task = asyncio.get_running_loop().create_task(old.close(5.0))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        else:
            self._pools.move_to_end(origin)
        return pool

    def signer(self, credential: Credential) -> VapidSigner:
        known = self._signers.get(credential.slot.app_id)
        if known is not None and known[0] == credential.version:
            return known[1]
        signer = VapidSigner(
            credential.secret["private_key_pem"],
            credential.public["public_key"],
            credential.public["subject"],
        )
        self._signers[credential.slot.app_id] = (credential.version, signer)
        return signer

    async def send(
        self, credential: Credential, request: ProviderRequest, origin: str, time_limit: float
    ) -> ProviderAnswer:
        headers = [
            *request.headers,
            ("authorization", self.signer(credential).authorization(origin)),
        ]
        try:
            exchange = await self.pool_for(origin).request(
                "POST", request.path, headers, request.body, time_limit
            )
        except TransportError as error:
            return ProviderAnswer(0, error.reason, error=error.detail, transport=True)
        response = exchange.response
        location = response.headers.get("location", "")
        if response.status in (200, 201, 202):
            return ProviderAnswer(
                response.status, "", location, connection_id=exchange.connection_id
            )
        return ProviderAnswer(
            response.status,
            str(response.status),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            connection_id=exchange.connection_id,
            error=f"Web Push {response.status}: {response.body[:200].decode('utf-8', 'replace')}",
        )

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close(1.0)
        self._pools.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
