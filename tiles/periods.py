"""Imagery periods of a year and the date windows they cover."""

from __future__ import annotations

import calendar
from datetime import date
from enum import StrEnum

from tiles.errors import InvalidTileRequest


class Period(StrEnum):
    DRY = "DRY"
    WET = "WET"
    MONTH = "MONTH"


def parse_period(value: str) -> Period:
    try:
        return Period(str(value).upper())
    except ValueError:
        allowed = ", ".join(period.value for period in Period)
        raise InvalidTileRequest(f"Invalid period {value!r}; use one of {allowed}.") from None


def period_window(period: Period, year: int, month: int | None = None) -> tuple[date, date]:
    """Return the first and last day (inclusive) of a period in a year."""
    if period is Period.DRY:
        return date(year, 6, 1), date(year, 10, 30)
    if period is Period.WET:
        return date(year, 1, 1), date(year, 4, 30)
    if month is None or not 1 <= month <= 12:
        raise InvalidTileRequest(f"Invalid month {month!r} for period MONTH; use 1 to 12.")
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
