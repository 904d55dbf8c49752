"""What each sandbox received, and counters per outcome.

Entries are plain dicts (they are served as JSON by the control API as they are). The log
is bounded so a long demo or benchmark cannot grow memory without limit; counters are
exact whatever the bound.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

DEFAULT_MAX_ENTRIES = 100_000


class Ledger:
    def __init__(self, service: str, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.service = service
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._counters: Counter[str] = Counter()
        self._sequence = 0

    def record(self, status: int, reason: str | None, **fields: Any) -> dict[str, Any]:
        """Log one request and its answer. `reason` names the outcome in the provider's
        vocabulary (APNs reason, FCM errorCode, ...); successes count under their status."""
        self._sequence += 1
        outcome = f"{status} {reason}" if reason else str(status)
        self._counters[outcome] += 1
        entry = {
            "seq": self._sequence,
            "service": self.service,
            "time": time.time(),
            "status": status,
            "reason": reason,
            **fields,
        }
        self._entries.append(entry)
        return entry

    def count(self, event: str) -> None:
        """Count something that is not an answer (a connection, an injected disruption)."""
        self._counters[event] += 1

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def query(
        self,
        token: str | None = None,
        status: int | None = None,
        since_seq: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Entries in arrival order, filtered; `limit` keeps the most recent ones."""
        found = [
            e
            for e in self._entries
            if e["seq"] > since_seq
            and (token is None or e.get("token") == token)
            and (status is None or e["status"] == status)
        ]
        return found[-limit:] if limit else found

    def reset(self) -> None:
        self._entries.clear()
        self._counters.clear()


def redact(secret: str, keep: int = 6) -> str:
    """Tokens and keys never appear in full in logs."""
    return secret if len(secret) <= keep else f"{secret[:keep]}…({len(secret)})"
