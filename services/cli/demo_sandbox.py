"""The sandboxes' control API as `herald demo` uses it (docs/sandboxes.md, Control API):
`info` for the demo credentials, Web Push subscriptions created as a browser would,
and the received log to check what the providers actually got.

The same HTTP/1.1 + JSON calls `python -m services.sandbox` makes, with the standard
library only: the CLI does not import the sandbox (nor its HTTP/2 and crypto stack).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from services.cli.errors import CliError, UsageError

DEFAULT_CONTROL_URL = "http://127.0.0.1:8440"
SERVICES = ("apns", "fcm", "webpush")


class SandboxError(CliError):
    """The control API refused a call (exit 1) or could not be reached (exit 3)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self._exit_code = exit_code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self._exit_code


class SandboxControl:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--sandbox-control must be an http(s) URL, got {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise SandboxError(
                f"sandbox control API {method} {path}: {error.code} {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise SandboxError(
                f"cannot reach the sandboxes' control API at {self.url} ({reason}).\n"
                "  Is the stack running (`make run`)? Or point --sandbox-control at it.",
                exit_code=3,
            ) from None

    def info(self) -> dict[str, Any]:
        """Ports, CA file, and the demo credentials' files and ids."""
        return dict(self._call("GET", "/info"))

    def subscribe(self, application_server_key: str) -> dict[str, Any]:
        """A subscription as PushManager.subscribe() gives it: endpoint, p256dh, auth."""
        body = {"application_server_key": application_server_key}
        return dict(self._call("POST", "/webpush/subscriptions", body))

    def last_seq(self, service: str) -> int:
        """The sequence number of the newest entry in a sandbox's log (0 if empty)."""
        newest = self._call("GET", f"/received/{service}?limit=1")
        return int(newest[-1]["seq"]) if newest else 0

    def received(self, service: str, since: int) -> list[dict[str, Any]]:
        """Everything a sandbox received after `since`, oldest first."""
        return list(self._call("GET", f"/received/{service}?{urlencode({'since': since})}"))

    def counters(self, service: str) -> dict[str, int]:
        return dict(self._call("GET", f"/counters/{service}"))
