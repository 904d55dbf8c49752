"""When each recipient is due: now, at an instant, at a local wall-clock time, and
never inside quiet hours. Pure functions of the schedule, the recipient's time zone and
the clock's "now"; the fan-out holds a recipient whose due time is in the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from herald.campaign.v1 import campaign_pb2
from services.core.errors import FieldViolation

SCHEDULE_INVALID = "SCHEDULE_INVALID"
LOCAL_TIME_PASSED = "LOCAL_TIME_PASSED"
QUIET_HOURS_EXPIRED = "QUIET_HOURS_EXPIRED"
# The earliest and latest UTC offsets in use (Kiribati +14, Baker Island -12): a local
# schedule cannot be due for anyone before local time at +14.
EARLIEST_OFFSET = timedelta(hours=14)
LATEST_OFFSET = timedelta(hours=-12)


@dataclass(frozen=True)
class Due:
    """When a recipient gets the message (epoch seconds), or why it never will."""

    at: float = 0.0
    suppressed: str = ""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def validate(
    schedule: campaign_pb2.Schedule, now: float, prefix: str = "schedule"
) -> list[FieldViolation]:
    found: list[FieldViolation] = []

    def bad(path: str, description: str) -> None:
        found.append(FieldViolation(f"{prefix}.{path}", description, SCHEDULE_INVALID))

    when = schedule.WhichOneof("when")
    if when == "send_now" and not schedule.send_now:
        bad("send_now", "must be true when set (leave the schedule unset to send at launch)")
    if when == "local":
        local = schedule.local
        try:
            date.fromisoformat(local.date)
        except ValueError:
            bad("local.date", 'must be a date "YYYY-MM-DD"')
        _check_time(local.time, "local.time", bad)
    if schedule.HasField("quiet_hours"):
        quiet = schedule.quiet_hours
        _check_time(quiet.start, "quiet_hours.start", bad)
        _check_time(quiet.end, "quiet_hours.end", bad)
        if (quiet.start.hours, quiet.start.minutes) == (quiet.end.hours, quiet.end.minutes):
            bad("quiet_hours", "start and end must differ")
    return found


def _check_time(value: object, path: str, bad: object) -> None:
    hours, minutes = getattr(value, "hours", 0), getattr(value, "minutes", 0)
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        bad(path, "must be a time of day (hours 0-23, minutes 0-59)")  # type: ignore[operator]


def first_due(schedule: campaign_pb2.Schedule, launch: float) -> float:
    """When the fan-out should start (epoch seconds)."""
    when = schedule.WhichOneof("when")
    if when == "send_time":
        return max(launch, schedule.send_time.ToDatetime(tzinfo=UTC).timestamp())
    if when == "local":
        local = datetime.combine(
            date.fromisoformat(schedule.local.date),
            time(schedule.local.time.hours, schedule.local.time.minutes),
            tzinfo=UTC,
        )
        earliest = (local - EARLIEST_OFFSET).timestamp()
        return launch if schedule.local.send_if_passed else max(launch, earliest)
    return launch


def send_time_passed(schedule: campaign_pb2.Schedule, now: float) -> bool:
    """At launch: a fixed send time in the past, or a local time passed everywhere."""
    when = schedule.WhichOneof("when")
    if when == "send_time":
        return schedule.send_time.ToDatetime(tzinfo=UTC).timestamp() < now - 60
    if when == "local" and not schedule.local.send_if_passed:
        local = datetime.combine(
            date.fromisoformat(schedule.local.date),
            time(schedule.local.time.hours, schedule.local.time.minutes),
            tzinfo=UTC,
        )
        return (local - LATEST_OFFSET).timestamp() < now
    return False


def due_for(
    schedule: campaign_pb2.Schedule,
    time_zone: str,
    now: float,
    launch: float,
    max_hold: float | None = None,
) -> Due:
    """The recipient's due time in its zone, moved out of quiet hours.

    `max_hold` is the message's TTL when it has one: a message held by quiet hours for
    longer than it may live is suppressed (QUIET_HOURS_EXPIRED) instead of sent stale.
    """
    tz = zone(time_zone)
    at = now
    if schedule.WhichOneof("when") == "local":
        local = schedule.local
        wanted = datetime.combine(
            date.fromisoformat(local.date), time(local.time.hours, local.time.minutes), tzinfo=tz
        ).timestamp()
        if wanted < launch and not local.send_if_passed:
            return Due(suppressed=LOCAL_TIME_PASSED)
        at = max(now, wanted)
    if schedule.HasField("quiet_hours"):
        held = out_of_quiet_hours(schedule.quiet_hours, tz, at)
        if held > at and max_hold is not None and held - at > max_hold:
            return Due(suppressed=QUIET_HOURS_EXPIRED)
        at = held
    return Due(at=at)


def out_of_quiet_hours(quiet: campaign_pb2.QuietHours, tz: ZoneInfo, at: float) -> float:
    local = datetime.fromtimestamp(at, tz)
    start = time(quiet.start.hours, quiet.start.minutes)
    end = time(quiet.end.hours, quiet.end.minutes)
    now_t = local.time()
    if start < end:
        inside = start <= now_t < end
        end_day = local.date()
    else:  # spans midnight (22:00 to 08:00)
        inside = now_t >= start or now_t < end
        end_day = local.date() + timedelta(days=1) if now_t >= start else local.date()
    if not inside:
        return at
    return datetime.combine(end_day, end, tzinfo=tz).timestamp()
