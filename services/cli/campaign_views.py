"""`herald campaigns watch|report`: a live progress bar from WatchCampaign, and the
report as a table with a small bar chart, drawn with rich."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from herald.campaign.v1 import campaign_pb2, campaign_service_pb2, report_pb2
from herald.type.v1 import platform_pb2
from services.cli import formatting, inputs
from services.cli.commands import Group, json_answered
from services.cli.context import Context
from services.cli.errors import OutcomeError

CS = campaign_service_pb2
STATE = campaign_pb2.CampaignState
BAR_WIDTH = 40
FINAL_STATES = (
    campaign_pb2.CAMPAIGN_STATE_COMPLETED,
    campaign_pb2.CAMPAIGN_STATE_CANCELLED,
    campaign_pb2.CAMPAIGN_STATE_FAILED,
)
# What the chart shows, in the order of the funnel (targeted -> sent -> answers).
CHART = (
    ("targeted", "cyan"),
    ("suppressed", "magenta"),
    ("sent", "blue"),
    ("delivered", "green"),
    ("bounced", "yellow"),
    ("failed", "red"),
    ("in_flight", "white"),
    ("pending", "white"),
    ("opened", "green"),
    ("dismissed", "white"),
    ("conversions", "green"),
)


def register(campaigns: Group) -> None:
    watch_ = campaigns.command(
        "watch",
        lambda args, ctx: watch(ctx, args.campaign_id, args.interval),
        help="a live progress bar until the campaign is final",
        description="Follow WatchCampaign until the campaign is COMPLETED, CANCELLED or "
        "FAILED (exit 1 for the last two). With --json: one snapshot per line.",
    )
    watch_.add_argument("campaign_id")
    watch_.add_argument("--interval", type=float, default=0.5, help="seconds between snapshots")

    report = campaigns.command("report", show_report, help="counters as a table and a chart")
    report.add_argument("campaign_id")


def _state(state: int) -> str:
    return formatting.enum_name(STATE.DESCRIPTOR, state)


def _final(progress: report_pb2.CampaignProgress | None) -> int:
    if progress is None or progress.state == campaign_pb2.CAMPAIGN_STATE_COMPLETED:
        return 0
    if progress.state in (
        campaign_pb2.CAMPAIGN_STATE_CANCELLED,
        campaign_pb2.CAMPAIGN_STATE_FAILED,
    ):
        raise OutcomeError(f"campaign {progress.campaign_id} ended {_state(progress.state)}")
    return 0


def watch(ctx: Context, campaign_id: str, interval: float) -> int:
    request = CS.WatchCampaignRequest(
        campaign_id=campaign_id, min_interval=inputs.seconds(max(interval, 0.1))
    )
    # Every snapshot is the whole progress: after a connection recycle the same watch
    # simply starts again.
    stream = ctx.client.stream("campaign", "WatchCampaign", request, resume=lambda _: request)
    # The first snapshot before any bar: a refused watch (an unknown campaign, another
    # app's) is then only its error, not an empty bar followed by the error.
    first = next(stream, None)
    if first is not None:
        stream = itertools.chain([first], stream)
    last: report_pb2.CampaignProgress | None = None
    if ctx.out.json_mode:
        for snapshot in stream:
            last = snapshot.progress
            ctx.out.json(formatting.to_json(last), compact=True)
        return _final(last)
    columns = (
        TextColumn("[bold]{task.fields[state]:<10}"),
        BarColumn(bar_width=BAR_WIDTH),
        TaskProgressColumn(),
        TextColumn(
            "{task.fields[delivered]} delivered, {task.fields[bounced]} bounced, "
            "{task.fields[failed]} failed, {task.fields[suppressed]} suppressed "
            "of {task.fields[targeted]} · {task.fields[rate]}"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=ctx.out.out, transient=False) as bar:
        task = bar.add_task(campaign_id, total=1000, state="…", **_fields(None))
        rate = _AverageRate()
        for snapshot in stream:
            last = snapshot.progress
            rate.add(last)
            # The server's fraction accounts for suppressions and an audience still
            # being resolved; the bar trusts it rather than guessing a denominator.
            bar.update(
                task,
                completed=round(last.fraction_complete * 1000),
                state=_state(last.state),
                **_fields(last, rate),
            )
    if last is not None:
        ctx.out.line(
            f"campaign {campaign_id} {_state(last.state)}: {last.delivered} delivered, "
            f"{last.bounced} bounced, {last.failed} failed, {last.suppressed} suppressed"
        )
        ctx.out.note(f"details: herald campaigns report {campaign_id}")
    return _final(last)


class _AverageRate:
    """Sends per second over the watch, for the last line: once a campaign is final
    the server's current rate is 0/s, which says nothing about how fast it went."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None
        self._last: tuple[float, int] | None = None

    def add(self, progress: report_pb2.CampaignProgress) -> None:
        point = (progress.snapshot_time.ToNanoseconds() / 1e9, progress.sent)
        if self._first is None and progress.state == campaign_pb2.CAMPAIGN_STATE_SENDING:
            self._first = point
        self._last = point

    def per_second(self) -> float | None:
        if self._first is None or self._last is None:
            return None
        seconds = self._last[0] - self._first[0]
        sent = self._last[1] - self._first[1]
        return sent / seconds if seconds > 0 and sent > 0 else None


def _fields(
    progress: report_pb2.CampaignProgress | None, rate: _AverageRate | None = None
) -> dict[str, Any]:
    p = progress or report_pb2.CampaignProgress()
    average = rate.per_second() if rate is not None else None
    if p.state not in FINAL_STATES:
        speed = f"{p.send_rate:.0f}/s"
    elif average is not None:
        speed = f"avg {average:.0f}/s"
    else:  # watched only once it was over: how fast it went is not known here
        speed = "done"
    return {
        "delivered": p.delivered,
        "bounced": p.bounced,
        "failed": p.failed,
        "suppressed": p.suppressed,
        "targeted": max(p.targeted, p.estimated_targeted),
        "rate": speed,
    }


def bar_chart(values: Sequence[tuple[str, int, str]], width: int = BAR_WIDTH) -> Table:
    """Horizontal bars scaled to the largest value; a non-zero value gets at least one
    cell so a handful of failures stays visible next to a million deliveries."""
    top = max((v for _, v, _ in values), default=0) or 1
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    for name, value, colour in values:
        cells = max(1, round(value / top * width)) if value else 0
        table.add_row(name, f"{value:,}", Text("█" * cells, style=colour))
    return table


def _reasons(title: str, counts: Sequence[report_pb2.ReasonCount]) -> list[list[str]]:
    return [[title, c.reason, f"{c.count:,}"] for c in counts]


def show_report(args: argparse.Namespace, ctx: Context) -> int:
    request = CS.GetCampaignReportRequest(campaign_id=args.campaign_id)
    report = ctx.client.call("campaign", "GetCampaignReport", request).report
    if json_answered(ctx, report):
        return 0
    ctx.out.line(
        Text(
            f"Campaign {report.campaign_id}: {_state(report.state)} "
            f"(at {formatting.timestamp(report.report_time)})",
            style="bold",
        )
    )
    ctx.out.line(bar_chart([(name, getattr(report, name), colour) for name, colour in CHART]))
    if report.platform_reports:
        names = ("targeted", "suppressed", "sent", "delivered", "bounced", "failed", "opened")
        ctx.out.table(
            ["platform", *names],
            [
                [formatting.enum_name(platform_pb2.Platform.DESCRIPTOR, p.platform)]
                + [f"{getattr(p, n):,}" for n in names]
                for p in report.platform_reports
            ],
            title="By platform",
        )
    reasons = (
        _reasons("suppressed", report.suppressed_by_reason)
        + _reasons("bounced", report.bounced_by_reason)
        + _reasons("failed", report.failed_by_reason)
        + _reasons("conversion", report.conversions_by_event)
    )
    if reasons:
        ctx.out.table(["counter", "reason", "count"], reasons, title="By reason")
    return 0
