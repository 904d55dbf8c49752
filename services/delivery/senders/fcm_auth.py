"""FCM access tokens from a service account, cached and refreshed before they expire.

google-auth's `service_account.Credentials` signs the assertion and talks to the
token endpoint; its transport is synchronous (requests), so the refresh runs in a
worker thread and never blocks the event loop. One refresh at a time per credential;
every send in between reuses the cached token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from requests.adapters import HTTPAdapter

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
REFRESH_MARGIN = dt.timedelta(minutes=5)


class TokenUnavailable(Exception):
    """No access token: `permanent` when the provider rejected the service account."""

    def __init__(self, detail: str, permanent: bool) -> None:
        super().__init__(detail)
        self.permanent = permanent


class _TrustAdapter(HTTPAdapter):
    """Makes requests verify with our SSLContext (system store + provider CA)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


class FcmTokenSource:
    def __init__(self, info: dict[str, Any], ca_file: str = "") -> None:
        self._credentials = service_account.Credentials.from_service_account_info(
            info, scopes=[SCOPE]
        )
        context = ssl.create_default_context()
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        self._session = requests.Session()
        self._session.mount("https://", _TrustAdapter(context))
        self._lock = asyncio.Lock()
        self.refreshes = 0  # token fetches (tests, metrics)
        self.on_refresh: Callable[[], None] | None = None

    def _fresh(self) -> bool:
        creds = self._credentials
        if not creds.token or creds.expiry is None:
            return False
        # google-auth keeps expiry as a naive UTC datetime.
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return bool(creds.expiry - now > REFRESH_MARGIN)

    async def token(self) -> str:
        if self._fresh():
            return str(self._credentials.token)
        async with self._lock:
            if not self._fresh():
                try:
                    await asyncio.to_thread(
                        self._credentials.refresh,
                        google.auth.transport.requests.Request(self._session),
                    )
                except google.auth.exceptions.RefreshError as error:
                    # The endpoint answered and refused (invalid_grant...): bad credentials,
                    # unless it was a retryable server error.
                    retryable = bool(getattr(error, "retryable", False))
                    raise TokenUnavailable(
                        f"token refresh refused: {_first_line(error)}", not retryable
                    ) from None
                except google.auth.exceptions.TransportError as error:
                    raise TokenUnavailable(
                        f"token endpoint unreachable: {_first_line(error)}", False
                    ) from None
                self.refreshes += 1
                if self.on_refresh is not None:
                    self.on_refresh()
        return str(self._credentials.token)

    def invalidate(self) -> None:
        """FCM answered 401: fetch a new token for the next send."""
        self._credentials.token = None

    def close(self) -> None:
        self._session.close()


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__
