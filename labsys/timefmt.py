"""Times are stored in UTC and shown in the lab's zone with its offset."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import current_app


def lab_zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["LAB_TIMEZONE"])


def to_lab(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(lab_zone())


def format_datetime(value: dt.datetime | None, seconds: bool = False) -> str:
    """e.g. ``2026-11-25 19:57 UTC+08:00`` (ISO order reads the same in English and Chinese)."""
    if value is None:
        return "—"
    local = to_lab(value)
    offset = local.strftime("%z")
    pattern = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return f"{local.strftime(pattern)} UTC{offset[:3]}:{offset[3:]}"


def lab_day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC start and end of a calendar day in the lab's zone."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=lab_zone())
    return start.astimezone(dt.timezone.utc), (start + dt.timedelta(days=1)).astimezone(dt.timezone.utc)


def parse_lab_datetime(value: dt.datetime | None) -> dt.datetime | None:
    """A naive date-time typed in a form is lab-local; return it in UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=lab_zone())
    return value.astimezone(dt.timezone.utc)
