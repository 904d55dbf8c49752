"""Did the providers get what the report says was delivered? `herald demo`'s last step.

The sandboxes log every request they answer (docs/sandboxes.md, Inspection). Each
notification of a campaign carries the campaign id in its custom data (`herald_cid`),
so the demo's deliveries are told apart from anything else the sandboxes saw. For
every accepted request the rendered text is compared with what the template must give
for the device's user, and a Web Push request must have been decrypted by the
sandbox (RFC 8291) to exactly that text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.cli.demo_data import TITLE, SimDevice

CAMPAIGN_KEY = "herald_cid"  # services/campaign/messages.py: added to every campaign push
PROVIDER_NAMES = {"apns": "APNs", "fcm": "FCM", "webpush": "Web"}
MAX_PROBLEMS_SHOWN = 10


@dataclass
class Check:
    received: Counter[str] = field(default_factory=Counter)  # accepted (2xx), per service
    refused: Counter[str] = field(default_factory=Counter)  # answered with an error
    decrypted: int = 0  # Web Push plaintexts that are this campaign's rendered message
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def shown(service: str, entry: Mapping[str, Any]) -> tuple[str, str, str]:
    """(campaign id, title, body) as the provider received them."""
    if service == "apns":
        payload = entry.get("payload") or {}
        alert = (payload.get("aps") or {}).get("alert") or {}
        return str(payload.get(CAMPAIGN_KEY, "")), alert.get("title", ""), alert.get("body", "")
    if service == "fcm":
        message = entry.get("message") or {}
        shown = message.get("notification") or {}
        data = message.get("data") or {}
        return str(data.get(CAMPAIGN_KEY, "")), shown.get("title", ""), shown.get("body", "")
    payload = entry.get("payload")
    if not isinstance(payload, dict):
        return "", "", ""
    data = payload.get("data") or {}
    return str(data.get(CAMPAIGN_KEY, "")), payload.get("title", ""), payload.get("body", "")


def _token(device: SimDevice, subscription_ids: Mapping[str, str]) -> str:
    """How the sandbox log names the device: APNs/FCM token, Web Push subscription id."""
    return subscription_ids.get(device.device_id, "") if device.platform == "web" else device.token


def check(
    received: Mapping[str, Sequence[Mapping[str, Any]]],
    campaign_id: str,
    devices: Sequence[SimDevice],
    subscription_ids: Mapping[str, str],
    delivered: Mapping[str, int],
) -> Check:
    """`received`: each sandbox's log since the launch; `delivered`: the report's
    delivered count per service (apns, fcm, webpush)."""
    result = Check()
    by_token = {_token(d, subscription_ids): d for d in devices}
    seen: Counter[tuple[str, str]] = Counter()
    for service in PROVIDER_NAMES:
        for entry in received.get(service, ()):
            cid, title, body = shown(service, entry)
            if service == "webpush" and not cid and entry.get("reason") == "UndecryptablePayload":
                # Unreadable, so it cannot be attributed; if it was ours the counts differ.
                result.problems.append(f"Web Push payload not decrypted: {entry.get('error')}")
                continue
            if cid != campaign_id:
                continue
            status = int(entry.get("status") or 0)
            if not 200 <= status < 300:
                result.refused[service] += 1
                continue
            result.received[service] += 1
            token = str(entry.get("token", ""))
            seen[(service, token)] += 1
            device = by_token.get(token)
            if device is None:
                continue  # another device of the app (not registered by this demo run)
            want = device.user.greeting()
            if title != TITLE or body != want:
                result.problems.append(
                    f"{device.device_id}: {PROVIDER_NAMES[service]} received "
                    f"{title!r} / {body!r}, expected {TITLE!r} / {want!r}"
                )
            elif service == "webpush":
                if entry.get("plaintext") is None:
                    result.problems.append(f"{device.device_id}: Web Push payload not decrypted")
                else:
                    result.decrypted += 1
    for (service, token), times in seen.items():
        if times > 1:
            result.problems.append(
                f"{PROVIDER_NAMES[service]} received the campaign {times} times for {token[:12]}…"
            )
    for service, name in PROVIDER_NAMES.items():
        if result.received[service] != delivered.get(service, 0):
            result.problems.append(
                f"{name}: the report says {delivered.get(service, 0):,} delivered, "
                f"the sandbox accepted {result.received[service]:,}"
            )
    return result
