"""`herald demo`: the whole product in one command, against a running stack (`make run`).

1. an app through Identity (created once, its client secret rotated on later runs) and
   the sandboxes' demo credentials (APNs .p8, FCM service account, VAPID) through
   Delivery;
2. simulated devices (iOS, Android, and Web subscriptions made through the Web Push
   sandbox as a browser would) with users, attributes and realistic permission states,
   registered with the app's client secret, many calls in flight;
3. a personalised campaign to "push enabled for this app": launch, the live progress
   bar (`campaigns watch`), the report (`campaigns report`);
4. the sandboxes' received logs checked against the report: every delivered
   notification received once, with the text its user's template gives, Web Push
   payloads decrypted. Exit 1 if they disagree.

Re-running is safe: same device ids and tokens for the same seed, demo devices from an
earlier, larger run are unregistered, and each run launches a new campaign.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from herald.campaign.v1 import (
    audience_pb2,
    campaign_pb2,
    campaign_service_pb2,
    push_message_pb2,
    report_pb2,
)
from herald.delivery.v1 import credentials_pb2, delivery_service_pb2
from herald.identity.v1 import app_pb2, identity_service_pb2, user_pb2
from herald.registration.v1 import registration_service_pb2
from herald.type.v1 import platform_pb2, push_token_pb2
from services.cli import campaign_views, demo_check, demo_data, formatting, inputs
from services.cli.commands import command
from services.cli.context import Context
from services.cli.demo_sandbox import DEFAULT_CONTROL_URL, SandboxControl
from services.cli.errors import OutcomeError, ServerError, UsageError

CS = campaign_service_pb2
DS = delivery_service_pb2
ID = identity_service_pb2
RS = registration_service_pb2
T = TypeVar("T")
R = TypeVar("R")

PLATFORM_SERVICE = {
    platform_pb2.PLATFORM_IOS: "apns",
    platform_pb2.PLATFORM_ANDROID: "fcm",
    platform_pb2.PLATFORM_WEB: "webpush",
}
SETTLE_SECONDS = 60.0  # after COMPLETED, how long outcomes may take to be counted


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    demo = command(
        commands,
        common,
        "demo",
        run,
        help="simulated devices, a personalised campaign, its progress and report",
        description="With the stack running (`make run`): create a demo app with the "
        "sandboxes' credentials, register simulated iOS, Android and Web devices with "
        "users, launch a personalised campaign to every push-enabled device, show its "
        "progress and report, and check that the provider sandboxes received (and for "
        "Web Push decrypted) every notification the report calls delivered. Exit 1 if "
        "they disagree. Safe to re-run.",
    )
    demo.add_argument("--devices", type=int, default=3000, help="simulated devices (default 3000)")
    demo.add_argument("--app-id", default="demo", help="the demo app's id (default demo)")
    demo.add_argument(
        "--seed", type=int, default=1, help="the population's random seed (default 1)"
    )
    demo.add_argument(
        "--sandbox-control",
        metavar="URL",
        default=os.environ.get("HERALD_SANDBOX_CONTROL_URL", DEFAULT_CONTROL_URL),
        help=f"the sandboxes' control API (HERALD_SANDBOX_CONTROL_URL, else {DEFAULT_CONTROL_URL})",
    )
    demo.add_argument(
        "--concurrency", type=int, default=32, help="calls in flight while registering"
    )


# -- helpers ----------------------------------------------------------------------------
def _parallel(
    progress: Progress,
    label: str,
    items: Sequence[T],
    work: Callable[[T], R],
    concurrency: int,
) -> list[R]:
    """`work` on every item, `concurrency` at a time, a bar advancing as they finish.
    The first failure is raised (after the calls in flight end)."""
    task = progress.add_task(label, total=len(items))
    results: list[R] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for result in pool.map(work, items):
            results.append(result)
            progress.advance(task)
    return results


def _is(error: ServerError, code: grpc.StatusCode) -> bool:
    return error.details.code == code


def _step(ctx: Context, text: str) -> None:
    if not ctx.out.json_mode:
        ctx.out.line(f"[bold cyan]▸[/] {text}")


# -- 1. app and credentials -------------------------------------------------------------
def ensure_app(ctx: Context, app_id: str) -> tuple[str, bool]:
    """The app's client secret, and whether the app was created by this call. An app
    that exists gets a new secret (the previous one keeps working for the overlap)."""
    try:
        ctx.client.call("identity", "GetApp", ID.GetAppRequest(app_id=app_id))
    except ServerError as error:
        if not _is(error, grpc.StatusCode.NOT_FOUND):
            raise
        request = ID.CreateAppRequest(
            app=app_pb2.App(display_name="Herald demo"),
            app_id=app_id,
            request_id=str(uuid.uuid4()),
        )
        answer = ctx.client.call("identity", "CreateApp", request)
        return str(answer.client_secret), True
    answer = ctx.client.call(
        "identity", "RotateClientSecret", ID.RotateClientSecretRequest(app_id=app_id)
    )
    return str(answer.client_secret), False


def put_credentials(ctx: Context, app_id: str, demo: dict[str, str]) -> None:
    """The sandboxes' demo credentials (files in the sandbox's state directory)."""

    def text(name: str, what: str) -> str:
        path = demo.get(name, "")
        if not path or not Path(path).is_file():
            raise UsageError(
                f"the sandboxes' demo {what} is not readable here ({path or 'no path'}): "
                "run the demo on the machine that runs the sandboxes"
            )
        return inputs.read_text(path, what)

    C = credentials_pb2
    items = [
        C.Credentials(
            app_id=app_id,
            apns_token=C.ApnsTokenAuth(
                private_key_pem=text("apns_key_file", "APNs key"),
                key_id=demo["apns_key_id"],
                team_id=demo["apns_team_id"],
                bundle_id=demo["apns_bundle_id"],
                environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
            ),
        ),
        C.Credentials(
            app_id=app_id,
            fcm=C.FcmServiceAccount(
                service_account_json=text("fcm_service_account_file", "FCM service account")
            ),
        ),
        C.Credentials(
            app_id=app_id,
            web_push=C.WebPushVapid(
                private_key=text("vapid_private_key_file", "VAPID key"),
                subject=demo["vapid_subject"],
            ),
        ),
    ]
    for credentials in items:
        ctx.client.call(
            "delivery", "PutCredentials", DS.PutCredentialsRequest(credentials=credentials)
        )


# -- 2. devices and users ---------------------------------------------------------------
def _user_request(user: demo_data.SimUser) -> ID.UpsertUserRequest:
    return ID.UpsertUserRequest(
        user=user_pb2.User(
            external_id=user.external_id,
            attributes=inputs.struct(user.attributes()),
            time_zone=user.time_zone,
            locale=user.locale,
        )
    )


def _device_request(
    app_id: str,
    device: demo_data.SimDevice,
    subscription: dict[str, Any] | None,
    client_secret: str,
) -> RS.RegisterDeviceRequest:
    request = RS.RegisterDeviceRequest(
        app_id=app_id,
        device_id=device.device_id,
        platform=inputs.PLATFORMS[device.platform],
        os_version=device.os_version,
        app_version="4.12.0",
        locale=device.user.locale,
        time_zone=device.user.time_zone,
        user_id=device.user.external_id,
        client_secret=client_secret,
    )
    if device.authorization:
        request.authorization_status = inputs.AUTHORIZATIONS[device.authorization]
    if device.platform == "ios" and device.token:
        request.token.apns.device_token = device.token
        request.apns_environment = platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT
    elif device.platform == "android":
        request.token.fcm.registration_token = device.token
    elif subscription is not None:
        request.token.web_push.CopyFrom(
            push_token_pb2.WebPushSubscription(
                endpoint=subscription["endpoint"],
                p256dh=subscription["keys"]["p256dh"],
                auth=subscription["keys"]["auth"],
            )
        )
    return request


def _existing_demo_devices(ctx: Context, app_id: str) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        request = RS.ListDevicesRequest(app_id=app_id, page_size=1000, page_token=token)
        answer = ctx.client.call("registration", "ListDevices", request)
        ids += [
            d.device_id for d in answer.devices if d.device_id.startswith(demo_data.DEVICE_PREFIX)
        ]
        token = answer.next_page_token
        if not token:
            return ids


def populate(
    ctx: Context,
    control: SandboxControl,
    app_id: str,
    client_secret: str,
    devices: list[demo_data.SimDevice],
    vapid_public_key: str,
    concurrency: int,
) -> dict[str, str]:
    """Registers everything; returns the Web Push subscription id of each web device."""
    client = ctx.client
    wanted = {d.device_id for d in devices}
    stale = [i for i in _existing_demo_devices(ctx, app_id) if i not in wanted]
    # Devices without a token this run are unregistered first: "absent keeps the stored
    # token", and a token from an earlier run with another seed must not linger.
    tokenless = [d.device_id for d in devices if not d.token and not d.wants_subscription]
    people = list({d.user.external_id: d.user for d in devices}.values())
    web = [d for d in devices if d.wants_subscription]

    def unregister(device_id: str) -> None:
        request = RS.UnregisterDeviceRequest(
            app_id=app_id, device_id=device_id, reason="demo", allow_missing=True
        )
        client.call("registration", "UnregisterDevice", request)

    columns = (
        TextColumn("  {task.description:<22}"),
        BarColumn(bar_width=campaign_views.BAR_WIDTH),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=ctx.out.out, disable=ctx.out.json_mode) as progress:
        subscriptions = _parallel(
            progress,
            "Web Push subscriptions",
            web,
            lambda _: control.subscribe(vapid_public_key),
            concurrency,
        )
        by_device = {d.device_id: s for d, s in zip(web, subscriptions, strict=True)}
        _parallel(
            progress,
            "users",
            people,
            lambda u: client.call("identity", "UpsertUser", _user_request(u)),
            concurrency,
        )
        if stale or tokenless:
            _parallel(progress, "unregister (reset)", stale + tokenless, unregister, concurrency)
        _parallel(
            progress,
            "devices",
            devices,
            lambda d: client.call(
                "registration",
                "RegisterDevice",
                _device_request(app_id, d, by_device.get(d.device_id), client_secret),
            ),
            concurrency,
        )
    return {device_id: str(s["id"]) for device_id, s in by_device.items()}


def _population_table(ctx: Context, devices: Iterable[demo_data.SimDevice]) -> None:
    counts: dict[tuple[str, str], int] = {}
    for d in devices:
        counts[(d.platform, d.state)] = counts.get((d.platform, d.state), 0) + 1
    states = ("authorized", "provisional", "background-only", "no-permission")
    platforms = ("ios", "android", "web")
    ctx.out.table(
        ["platform", *states, "total"],
        [
            [p]
            + [f"{counts.get((p, s), 0):,}" for s in states]
            + [f"{sum(counts.get((p, s), 0) for s in states):,}"]
            for p in platforms
        ],
        title="Simulated devices by permission state (only 'authorized' is push enabled)",
    )


# -- 3. the campaign --------------------------------------------------------------------
def create_campaign(ctx: Context, app_id: str) -> str:
    campaign = campaign_pb2.Campaign(
        app_id=app_id,
        display_name=f"Herald demo {datetime.now(UTC):%Y-%m-%d %H:%M:%S}",
        message=push_message_pb2.PushMessage(
            content=push_message_pb2.Content(title=demo_data.TITLE, body=demo_data.BODY)
        ),
        audience=audience_pb2.Audience(filter=audience_pb2.AudienceFilter(push_enabled=True)),
    )
    request = CS.CreateCampaignRequest(campaign=campaign, request_id=str(uuid.uuid4()))
    return str(ctx.client.call("campaign", "CreateCampaign", request).campaign.campaign_id)


def _follow_quietly(ctx: Context, campaign_id: str) -> None:
    """--json: wait for the end without drawing anything."""
    request = CS.WatchCampaignRequest(campaign_id=campaign_id, min_interval=inputs.seconds(0.5))
    last = None
    for snapshot in ctx.client.stream("campaign", "WatchCampaign", request):
        last = snapshot.progress
    if last is not None and last.state != campaign_pb2.CAMPAIGN_STATE_COMPLETED:
        state = formatting.enum_name(campaign_pb2.CampaignState.DESCRIPTOR, last.state)
        raise OutcomeError(f"campaign {campaign_id} ended {state}")


def settled_report(ctx: Context, campaign_id: str) -> report_pb2.CampaignReport:
    """The report once every sent notification has its outcome (COMPLETED may come
    before Delivery's last outcomes are counted)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    request = CS.GetCampaignReportRequest(campaign_id=campaign_id)
    waited = False
    while True:
        report: report_pb2.CampaignReport = ctx.client.call(
            "campaign", "GetCampaignReport", request
        ).report
        if (report.in_flight == 0 and report.pending == 0) or time.monotonic() > deadline:
            return report
        if not waited:
            ctx.out.note(
                f"  waiting for the providers' last answers ({report.in_flight:,} in flight)…"
            )
            waited = True
        time.sleep(0.25)


# -- the command ------------------------------------------------------------------------
def run(args: argparse.Namespace, ctx: Context) -> int:
    if not 1 <= args.devices <= 1_000_000:
        raise UsageError("--devices must be between 1 and 1,000,000")
    control = SandboxControl(args.sandbox_control, timeout=ctx.client.timeout)
    out = ctx.out
    started = time.monotonic()

    info = control.info()
    demo_creds = info["credentials"]
    _step(ctx, f"app [bold]{escape(args.app_id)}[/] and the sandboxes' demo credentials")
    client_secret, created = ensure_app(ctx, args.app_id)
    put_credentials(ctx, args.app_id, demo_creds)
    out.note(
        f"  app {'created' if created else 'exists: client secret rotated'}; "
        f"APNs key {demo_creds['apns_key_id']} (team {demo_creds['apns_team_id']}, "
        f"{demo_creds['apns_bundle_id']}), FCM project {demo_creds['fcm_project_id']}, VAPID key"
    )

    devices = demo_data.devices(args.devices, args.seed)
    users = len({d.user.external_id for d in devices})
    _step(ctx, f"{len(devices):,} simulated devices and {users:,} users (seed {args.seed})")
    subscription_ids = populate(
        ctx,
        control,
        args.app_id,
        client_secret,
        devices,
        demo_creds["vapid_public_key"],
        args.concurrency,
    )
    if not out.json_mode:
        _population_table(ctx, devices)

    _step(ctx, f'campaign "{demo_data.TITLE}": [italic]{demo_data.BODY}[/]')
    campaign_id = create_campaign(ctx, args.app_id)
    since = {service: control.last_seq(service) for service in demo_check.PROVIDER_NAMES}
    launch = CS.LaunchCampaignRequest(campaign_id=campaign_id, request_id=str(uuid.uuid4()))
    launched = ctx.client.call("campaign", "LaunchCampaign", launch)
    out.note(f"  campaign {campaign_id} launched, about {launched.estimated_devices:,} devices")
    if out.json_mode:
        _follow_quietly(ctx, campaign_id)
    else:
        campaign_views.watch(ctx, campaign_id, interval=0.5)
    report = settled_report(ctx, campaign_id)
    if not out.json_mode:
        campaign_views.show_report(argparse.Namespace(campaign_id=campaign_id), ctx)

    _step(ctx, "what the provider sandboxes received")
    received = {service: control.received(service, since[service]) for service in since}
    delivered = {
        PLATFORM_SERVICE[p.platform]: int(p.delivered)
        for p in report.platform_reports
        if p.platform in PLATFORM_SERVICE
    }
    result = demo_check.check(received, campaign_id, devices, subscription_ids, delivered)
    return _summary(ctx, args, report, devices, result, time.monotonic() - started)


def _summary(
    ctx: Context,
    args: argparse.Namespace,
    report: report_pb2.CampaignReport,
    devices: Sequence[demo_data.SimDevice],
    result: demo_check.Check,
    seconds: float,
) -> int:
    expected = sum(d.push_enabled for d in devices)
    got = ", ".join(
        f"{name} {result.received[s]:,}" for s, name in demo_check.PROVIDER_NAMES.items()
    )
    web = (
        "web payloads decrypted"
        if result.decrypted == result.received["webpush"]
        else f"{result.decrypted:,} of {result.received['webpush']:,} web payloads decrypted"
    )
    line = (
        f"{len(devices):,} devices, {report.targeted:,} targeted, {report.delivered:,} delivered; "
        f"{got.replace(', ', ' / ')} received; {web}"
    )
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "app_id": args.app_id,
                "campaign_id": report.campaign_id,
                "devices": len(devices),
                "push_enabled": expected,
                "targeted": report.targeted,
                "delivered": report.delivered,
                "bounced": report.bounced,
                "failed": report.failed,
                "received": {s: result.received[s] for s in demo_check.PROVIDER_NAMES},
                "refused": {s: result.refused[s] for s in demo_check.PROVIDER_NAMES},
                "web_decrypted": result.decrypted,
                "ok": result.ok,
                "problems": result.problems,
                "seconds": round(seconds, 1),
            }
        )
    else:
        ctx.out.line(f"[bold]{line}[/]")
        if report.targeted != expected:
            ctx.out.note(
                f"  {expected:,} of the simulated devices are push enabled; the app has "
                "other push-enabled devices too"
            )
    if not result.ok:
        shown = result.problems[: demo_check.MAX_PROBLEMS_SHOWN]
        more = len(result.problems) - len(shown)
        text = "the sandboxes disagree with the report:\n" + "\n".join(f"  {p}" for p in shown)
        if more:
            text += f"\n  … and {more} more"
        raise OutcomeError(text)
    if not ctx.out.json_mode:
        ctx.out.line(
            f"[green]✓[/] every delivered notification was received by its sandbox "
            f"({seconds:.0f} s). Try: herald campaigns report {report.campaign_id}"
        )
    return 0
