"""`herald demo` against the four real services and the sandboxes: the summary line
agrees with what the sandboxes received, and a second run (same app) succeeds too."""

from __future__ import annotations

import json
import re
from collections import Counter

from services.campaign.spec import SPEC as CAMPAIGN_SPEC
from services.cli import demo_check, demo_data
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC

from .conftest import run_cli

SUMMARY = re.compile(
    r"^([\d,]+) devices, ([\d,]+) targeted, ([\d,]+) delivered; "
    r"APNs ([\d,]+) / FCM ([\d,]+) / Web ([\d,]+) received; web payloads decrypted$",
    re.MULTILINE,
)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _campaign_of(service: str, entry: dict) -> str:
    return demo_check.shown(service, entry)[0]


def _accepted(sandbox, campaign_id: str | None = None) -> Counter[str]:
    """Requests each sandbox answered 2xx (for one campaign, or all)."""
    counts: Counter[str] = Counter()
    for service in ("apns", "fcm", "webpush"):
        for entry in sandbox.received(service):
            if 200 <= entry["status"] < 300 and (
                campaign_id is None or _campaign_of(service, entry) == campaign_id
            ):
                counts[service] += 1
    return counts


async def test_demo_runs_twice_and_agrees_with_the_sandboxes(stack, sandbox):
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC, CAMPAIGN_SPEC)
    control = ["--sandbox-control", f"http://127.0.0.1:{sandbox.control_port}"]

    first = await run_cli("demo", "--devices", "60", *control, addresses=addresses)

    assert first.code == 0, first.stdout + first.stderr
    match = SUMMARY.search(first.stdout)
    assert match, first.stdout
    devices, targeted, delivered, apns, fcm, web = (_number(g) for g in match.groups())
    population = demo_data.devices(60, 1)
    assert devices == 60
    assert targeted == delivered == sum(d.push_enabled for d in population) > 0
    assert _accepted(sandbox) == {"apns": apns, "fcm": fcm, "webpush": web}
    assert apns + fcm + web == delivered
    assert min(apns, fcm, web) > 0
    # The progress bar's last frame and the report's chart and table were shown.
    assert "100%" in first.stdout
    assert "█" in first.stdout
    assert "By platform" in first.stdout
    # Web Push was decrypted by the sandbox to the personalised text.
    bodies = [json.loads(e["plaintext"])["body"] for e in sandbox.received("webpush")]
    assert len(bodies) == web
    assert all(re.fullmatch(r"Hi \S+, news from [^,]+", body) for body in bodies), bodies
    greetings = {d.user.greeting() for d in population if d.push_enabled}
    assert set(bodies) <= greetings

    second = await run_cli("demo", "--devices", "60", "--json", *control, addresses=addresses)

    assert second.code == 0, second.stderr
    summary = second.json()
    assert summary["ok"] is True, summary["problems"]
    assert summary["devices"] == 60
    assert summary["targeted"] == summary["delivered"] == targeted
    assert summary["received"] == dict(_accepted(sandbox, summary["campaign_id"]))
    assert summary["web_decrypted"] == summary["received"]["webpush"]
    # Both campaigns are in the logs: nothing from the first run was sent twice.
    assert sum(_accepted(sandbox).values()) == 2 * delivered


async def test_demo_without_sandboxes_says_where_it_looked(stack):
    addresses = await stack(IDENTITY_SPEC)
    result = await run_cli("demo", "--sandbox-control", "http://127.0.0.1:9", addresses=addresses)
    assert result.code == 3
    assert "cannot reach the sandboxes' control API at http://127.0.0.1:9" in result.stderr


def test_check_reports_a_missing_delivery_and_a_wrong_text():
    population = demo_data.devices(20, 3)
    ios = [d for d in population if d.platform == "ios" and d.push_enabled][:2]
    assert len(ios) == 2

    def apns_entry(device: demo_data.SimDevice, body: str) -> dict:
        payload = {"aps": {"alert": {"title": demo_data.TITLE, "body": body}}, "herald_cid": "c1"}
        return {"status": 200, "token": device.token, "payload": payload}

    received = {
        "apns": [
            apns_entry(ios[0], ios[0].user.greeting()),
            apns_entry(ios[1], "Hi {{ first_name }}"),
            {**apns_entry(ios[1], "other campaign"), "payload": {"herald_cid": "c0"}},
        ]
    }
    result = demo_check.check(received, "c1", population, {}, {"apns": 3})

    assert result.received["apns"] == 2
    assert not result.ok
    assert any("expected" in p and ios[1].device_id in p for p in result.problems)
    assert any("report says 3 delivered, the sandbox accepted 2" in p for p in result.problems)
