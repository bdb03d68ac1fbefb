"""Times are stored in UTC and shown in the lab's zone with its offset; dates and numbers are
written the way the page's language writes them."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import dates as babel_dates, numbers as babel_numbers
from flask import current_app


def lab_zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["LAB_TIMEZONE"])


def lab_today() -> dt.date:
    """The lab's calendar date (Shanghai), not the server's or UTC's: from 16:00 UTC onwards the
    lab is already on the next day, and dates typed by its staff are lab dates."""
    return dt.datetime.now(lab_zone()).date()


def to_lab(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(lab_zone())


def current_locale() -> str:
    """The language pages are being shown in (``en`` or ``zh_CN``), the default outside requests."""
    from labsys.i18n import locale_name

    return locale_name() or current_app.config["BABEL_DEFAULT_LOCALE"]


def zone_label(value: dt.datetime) -> str:
    """The lab zone's UTC offset, e.g. ``UTC+08:00``: unambiguous, unlike abbreviations such as CST."""
    return _offset_label(value.utcoffset())


@lru_cache(maxsize=64)
def _offset_label(offset: dt.timedelta | None) -> str:
    """``UTC+08:00`` for an offset (what ``%z`` writes depends on the offset alone; a list page
    writes the same one or two offsets on every row)."""
    text = dt.datetime(2000, 1, 1, tzinfo=dt.timezone(offset) if offset is not None else None).strftime("%z")
    return f"UTC{text[:3]}:{text[3:]}"


def format_date(value: dt.date | None) -> str:
    """A calendar date in the page's language: ``Nov 25, 2026`` or ``2026年11月25日``."""
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        value = to_lab(value).date()
    return _date_text(value, current_locale())


@lru_cache(maxsize=4096)
def _date_text(value: dt.date, locale: str) -> str:
    """A calendar date as the locale writes it: a pure function of its arguments, remembered
    because a list page writes the same few days over and over (babel rebuilds it each time)."""
    return babel_dates.format_date(value, format="medium", locale=locale)


def format_datetime(value: dt.datetime | None, seconds: bool = False) -> str:
    """A stored UTC time shown in the lab's zone, in the page's language, with the zone's offset:
    ``Nov 25, 2026 22:52 UTC+08:00`` or ``2026年11月25日 22:52 UTC+08:00``. The clock is 24-hour in
    both languages (no AM/PM to misread on a GMP record)."""
    if value is None:
        return "—"
    local = to_lab(value)
    clock = f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}" if seconds else f"{local.hour:02d}:{local.minute:02d}"
    return f"{_date_text(local.date(), current_locale())} {clock} {zone_label(local)}"


def format_number(value: int | float | Decimal | None, decimals: int | None = None) -> str:
    """A number in the page's language (digit grouping and decimal sign from the locale);
    ``decimals`` fixes the count of decimal places."""
    if value is None:
        return "—"
    if type(value) is int:  # counts of cells, vials …: one text per value, remembered
        return _integer_text(value, decimals, current_locale())
    return _decimal_text(value, decimals, current_locale())


def _decimal_text(value: int | float | Decimal, decimals: int | None, locale: str) -> str:
    pattern = None if decimals is None else "#,##0" + ("." + "0" * decimals if decimals else "")
    return babel_numbers.format_decimal(value, format=pattern, locale=locale)


# A pure function of its arguments; babel takes ~30 µs a number and a list page repeats values.
_integer_text = lru_cache(maxsize=4096)(_decimal_text)


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
