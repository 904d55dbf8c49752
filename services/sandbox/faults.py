"""Failure injection rules shared by the three sandboxes.

A rule matches requests of one service (or all), optionally only those for one token
(APNs device token, FCM target, Web Push subscription id). It fires on the n-th matching
request counted from when it was added (`nth`), for `times` requests (default: once when
`nth` is set, forever otherwise). What it does is one of:

- `status`: answer with that status and reason, in the provider's own error format
  (optionally with Retry-After);
- `goaway`: send GOAWAY (error code, last_stream_id, debug data) and close the connection;
- `rst_stream`: reset the request's stream;
- `drop`: close the TCP connection without a word;
- `pass`: answer normally — useful with `delay` for slow answers.

Any action can be delayed by `delay` seconds (slow answers, timeouts).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

Service = Literal["apns", "fcm", "webpush", "any"]
Action = Literal["status", "goaway", "rst_stream", "drop", "pass"]
SERVICES: tuple[str, ...] = ("apns", "fcm", "webpush", "any")
ACTIONS: tuple[str, ...] = ("status", "goaway", "rst_stream", "drop", "pass")


class FaultRuleError(ValueError):
    """A rule that cannot be applied (unknown service or action, missing status...)."""


@dataclass(slots=True)
class FaultRule:
    service: Service
    action: Action
    token: str | None = None
    nth: int | None = None
    times: int | None = None
    status: int | None = None
    reason: str | None = None
    retry_after: int | None = None
    delay: float = 0.0
    last_stream_id: int | None = None
    error_code: int = 0
    id: str = ""
    seen: int = field(default=0)
    fired: int = field(default=0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def applies_to(self, service: str, token: str | None) -> bool:
        if self.service != "any" and self.service != service:
            return False
        return self.token is None or self.token == token

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


def rule_from_json(data: dict[str, Any]) -> FaultRule:
    """Build a rule from the control API / CLI representation, validating it."""
    known = set(FaultRule.__dataclass_fields__) - {"id", "seen", "fired"}
    unknown = set(data) - known
    if unknown:
        raise FaultRuleError(f"unknown fault rule fields: {', '.join(sorted(unknown))}")
    service = data.get("service", "any")
    action = data.get("action") or ("status" if data.get("status") else "pass")
    if service not in SERVICES:
        raise FaultRuleError(f"service must be one of {', '.join(SERVICES)}")
    if action not in ACTIONS:
        raise FaultRuleError(f"action must be one of {', '.join(ACTIONS)}")
    if action == "status" and not data.get("status"):
        raise FaultRuleError("action 'status' needs a status")
    try:
        rule = FaultRule(
            service=cast(Service, service),
            action=cast(Action, action),
            token=data.get("token") or None,
            nth=_optional_int(data.get("nth")),
            times=_optional_int(data.get("times")),
            status=_optional_int(data.get("status")),
            reason=data.get("reason") or None,
            retry_after=_optional_int(data.get("retry_after")),
            delay=float(data.get("delay") or 0.0),
            last_stream_id=_optional_int(data.get("last_stream_id")),
            error_code=int(data.get("error_code") or 0),
        )
    except (TypeError, ValueError) as exc:
        raise FaultRuleError(f"bad fault rule value: {exc}") from exc
    if rule.nth is not None and rule.nth < 1:
        raise FaultRuleError("nth counts from 1")
    if rule.nth is not None and rule.times is None:
        rule.times = 1
    return rule


def _optional_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


class FaultBook:
    """The active rules. Checked on every request, so the empty case is one attribute read."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        # The control API and tests may add rules from another thread (e.g. a CLI helper).
        self._lock = threading.Lock()

    def add(self, rule: FaultRule | None = None, /, **fields: Any) -> FaultRule:
        """Add a rule: `faults.add(service="apns", token=t, status=410, reason="Unregistered")`."""
        if rule is None:
            rule = rule_from_json(fields)
        with self._lock:
            rule.id = f"f{next(self._ids)}"
            self._rules = [*self._rules, rule]
        return rule

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def list(self) -> list[FaultRule]:
        return list(self._rules)

    def match(self, service: str, token: str | None) -> FaultRule | None:
        """The rule that fires for this request, if any. Every applicable rule counts the
        request (so `nth` means the n-th request the rule could see); the first one that
        is due fires."""
        rules = self._rules
        if not rules:
            return None
        chosen: FaultRule | None = None
        for rule in rules:
            if rule.exhausted or not rule.applies_to(service, token):
                continue
            rule.seen += 1
            if chosen is not None or (rule.nth is not None and rule.seen < rule.nth):
                continue
            rule.fired += 1
            chosen = rule
        return chosen
