"""`herald campaigns` against the real Campaign service, Delivery and the sandboxes:
create, launch --watch (the progress bar), report (table and chart), the campaign's
notifications (`herald notifications list`), cancel (of a sending campaign, and its
errors)."""

from __future__ import annotations

import asyncio

from services.campaign.spec import SPEC as CAMPAIGN_SPEC
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import create_app, create_campaign, run_cli
from .test_send_and_trace import _put_credentials


async def test_create_launch_watch_report_and_cancel(stack, sandbox):
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC, CAMPAIGN_SPEC)
    await create_app(addresses)
    await _put_credentials(addresses, sandbox)
    ios = ["--platform", "ios", "--os-version", "17.4", "--environment", "development"]
    await asyncio.gather(
        *(
            run_cli(
                "devices",
                "register",
                "shop",
                f"phone-{i}",
                *ios,
                "--apns-token",
                new_device_token(),
                "--authorization",
                "authorized",
                addresses=addresses,
            )
            for i in range(3)
        )
    )

    created = await run_cli(
        "campaigns",
        "create",
        "shop",
        "--name",
        "Spring sale",
        "--title",
        "Hi",
        "--body",
        "Hello {{ first_name | default: 'there' }}",
        "--platform",
        "ios",
        "--json",
        addresses=addresses,
    )
    assert created.code == 0, created.stderr
    campaign_id = created.json()["campaign_id"]
    assert created.json()["state"] == "CAMPAIGN_STATE_DRAFT"
    bad_template = await run_cli(
        "campaigns", "create", "shop", "--name", "x", "--body", "{{ oops", addresses=addresses
    )
    launched = await run_cli("campaigns", "launch", campaign_id, "--watch", addresses=addresses)
    report, report_json, cancel_done, missing, sent, sent_json, failed = await asyncio.gather(
        run_cli("campaigns", "report", campaign_id, addresses=addresses),
        run_cli("campaigns", "report", campaign_id, "--json", addresses=addresses),
        run_cli("campaigns", "cancel", campaign_id, addresses=addresses),
        run_cli("campaigns", "watch", "no-such-campaign", addresses=addresses),
        run_cli("notifications", "list", "shop", "--campaign-id", campaign_id, addresses=addresses),
        run_cli(
            "notifications", "list", "shop", "--campaign-id", campaign_id, "--outcome",
            "delivered", "--json", addresses=addresses,
        ),
        run_cli(
            "notifications", "list", "shop", "--campaign-id", campaign_id, "--outcome",
            "failed", "--json", addresses=addresses,
        ),
    )  # fmt: skip

    assert bad_template.code == 1
    assert bad_template.stderr.startswith("error: INVALID_ARGUMENT (TEMPLATE_SYNTAX_ERROR): ")
    assert "  campaign.message.content.body: line 1, column 1: " in bad_template.stderr
    assert launched.code == 0, launched.stderr
    assert f"campaign {campaign_id} launched" in launched.stdout
    assert "100%" in launched.stdout  # the progress bar's last frame
    assert f"campaign {campaign_id} COMPLETED: 3 delivered" in launched.stdout
    assert len(sandbox.received("apns")) == 3
    assert report.code == 0
    assert "delivered" in report.stdout
    assert "█" in report.stdout
    counters = report_json.json()
    assert (counters["targeted"], counters["sent"], counters["delivered"]) == ("3", "3", "3")
    # The campaign's notifications, each with the id `herald trace` takes.
    assert sent.code == 0, sent.stderr
    listed = sent_json.json()["notifications"]
    assert sorted(n["device_id"] for n in listed) == ["phone-0", "phone-1", "phone-2"]
    assert {n["campaign_id"] for n in listed} == {campaign_id}
    for notification in listed:
        assert notification["notification_id"] in sent.stdout
        assert notification["trace_id"] in sent.stdout
    assert sent.stdout.count("DELIVERED") == 3
    assert failed.code == 0, failed.stderr
    assert failed.json() == {"notifications": [], "next_page_token": ""}
    assert cancel_done.code == 1
    assert cancel_done.stderr.startswith("error: FAILED_PRECONDITION (CAMPAIGN_STATE_CONFLICT): ")
    assert "  state: " in cancel_done.stderr  # ErrorInfo metadata is shown too
    assert missing.code == 1
    assert missing.stderr.startswith("error: NOT_FOUND (CAMPAIGN_NOT_FOUND): ")
    assert missing.stdout == ""  # no empty progress bar before the error


async def test_cancel_stops_a_sending_campaign_and_watch_says_so(stack, sandbox):
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC, CAMPAIGN_SPEC)
    await create_app(addresses)
    await _put_credentials(addresses, sandbox)
    ios = ["--platform", "ios", "--os-version", "17.4", "--environment", "development"]
    for i in range(3):
        registered = await run_cli(
            "devices", "register", "shop", f"phone-{i}", *ios, "--apns-token",
            new_device_token(), "--authorization", "authorized", addresses=addresses,
        )  # fmt: skip
        assert registered.code == 0, registered.stderr
    # One message a minute: the first goes at once, the others wait for the throttle,
    # so the campaign is still SENDING when it is cancelled.
    campaign_id = await create_campaign(
        addresses, "Slow", "--title", "Hi", "--body", "x", "--throttle", "1"
    )
    launched = await run_cli("campaigns", "launch", campaign_id, addresses=addresses)
    assert launched.code == 0, launched.stderr
    assert "SENDING" in launched.stdout

    cancelled = await run_cli("campaigns", "cancel", campaign_id, addresses=addresses)
    watched, report = await asyncio.gather(
        run_cli("campaigns", "watch", campaign_id, addresses=addresses),
        run_cli("campaigns", "report", campaign_id, "--json", addresses=addresses),
    )

    assert cancelled.code == 0, cancelled.stderr
    assert "CANCELLED" in cancelled.stdout
    assert watched.code == 1  # a watched campaign that ended CANCELLED
    assert f"campaign {campaign_id} CANCELLED" in watched.stdout
    assert watched.stderr.strip().endswith(f"error: campaign {campaign_id} ended CANCELLED")
    assert report.code == 0, report.stderr
    counters = report.json()
    assert counters["state"] == "CAMPAIGN_STATE_CANCELLED"
    # At most the throttle's first minute went out; the rest were not sent.
    assert int(counters["sent"]) <= 1
    assert len(sandbox.received("apns", status=200)) <= 1
