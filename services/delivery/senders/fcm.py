"""The FCM HTTP v1 sender.

One pool per FCM origin, shared by every app: authentication is per request (each
app's access token), so apps need not pay for separate connections. Access tokens are
cached per (app, credential version).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from services.core.config import Settings
from services.delivery.credentials import Credential
from services.delivery.payloads import ProviderRequest
from services.delivery.senders import ProviderAnswer, parse_retry_after
from services.delivery.senders.fcm_auth import FcmTokenSource, TokenUnavailable
from services.delivery.transport.errors import TransportError
from services.delivery.transport.pool import H2Pool, PoolOptions
from services.delivery.transport.tls import client_context

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


class FcmSender:
    def __init__(self, settings: Settings, options: PoolOptions | None = None) -> None:
        self.settings = settings
        self.pool = H2Pool(settings.fcm_origin, client_context(settings.provider_ca_file), options)
        self._sources: dict[str, tuple[int, FcmTokenSource]] = {}
        # (event, provider) for metrics: "goaway", "token_refresh"; set by the Dispatcher.
        self.on_event: Callable[[str, str], None] = lambda _event, _provider: None
        self.pool.on_goaway = lambda: self.on_event("goaway", "fcm")

    def pools(self) -> list[H2Pool]:
        return [self.pool]

    def token_source(self, credential: Credential) -> FcmTokenSource:
        app_id = credential.slot.app_id
        known = self._sources.get(app_id)
        if known is not None and known[0] == credential.version:
            return known[1]
        if known is not None:
            known[1].close()
        info = json.loads(credential.secret["service_account_json"])
        source = FcmTokenSource(info, self.settings.provider_ca_file)
        source.on_refresh = lambda: self.on_event("token_refresh", "fcm")
        self._sources[app_id] = (credential.version, source)
        return source

    async def send(
        self, credential: Credential, request: ProviderRequest, origin: str, time_limit: float
    ) -> ProviderAnswer:
        source = self.token_source(credential)
        try:
            token = await source.token()
        except TokenUnavailable as error:
            reason = "AUTH_REFUSED" if error.permanent else "AUTH_UNAVAILABLE"
            return ProviderAnswer(0, reason, error=str(error), transport=not error.permanent)
        headers = [*request.headers, ("authorization", f"Bearer {token}")]
        try:
            exchange = await self.pool.request(
                "POST", request.path, headers, request.body, time_limit
            )
        except TransportError as error:
            return ProviderAnswer(0, error.reason, error=error.detail, transport=True)
        response = exchange.response
        data = _json(response.body)
        if response.status == 200:
            return ProviderAnswer(
                200, "", str(data.get("name", "")), connection_id=exchange.connection_id
            )
        if response.status == 401:
            source.invalidate()
        status_body = data.get("error")
        if not isinstance(status_body, dict):
            status_body = {}
        code, violations = _details(status_body.get("details"))
        status_name = str(status_body.get("status", ""))
        reason = code or status_name or f"HTTP {response.status}"
        message = str(status_body.get("message", ""))[:200]
        return ProviderAnswer(
            response.status,
            reason,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            connection_id=exchange.connection_id,
            error=f"FCM {response.status} {reason}: {message}".strip(),
            violations=violations,
        )

    async def close(self) -> None:
        await self.pool.close(1.0)
        for _, source in self._sources.values():
            source.close()
        self._sources.clear()


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        return {}  # a 502 from a proxy is an HTML page
    return data if isinstance(data, dict) else {}


def _details(details: Any) -> tuple[str, tuple[str, ...]]:
    code = ""
    fields: list[str] = []
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == FCM_ERROR_TYPE:
            code = str(detail.get("errorCode", ""))
        elif detail.get("@type") == BAD_REQUEST_TYPE:
            for violation in detail.get("fieldViolations") or ():
                if isinstance(violation, dict):
                    fields.append(str(violation.get("field", "")))
    return code, tuple(fields)
