"""Validation of WGS84 longitude/latitude pairs read from a file."""

from __future__ import annotations

import math

from django.utils.translation import gettext as _

MIN_LONGITUDE, MAX_LONGITUDE = -180.0, 180.0
MIN_LATITUDE, MAX_LATITUDE = -90.0, 90.0

LONGITUDE = "longitude"
LATITUDE = "latitude"


class CoordinateError(ValueError):
    """A longitude/latitude pair that is not a valid WGS84 position."""


def axis_label(axis: str) -> str:
    return _("longitude") if axis == LONGITUDE else _("latitude")


def parse_coordinate(raw: object, axis: str) -> float:
    """Convert one coordinate to a finite float, or raise CoordinateError naming the axis and the value.

    ``axis`` is LONGITUDE or LATITUDE. Numbers and decimal text such as
    ``"-48.16"`` are accepted. Booleans, null, empty text, NaN and infinities
    are rejected.
    """
    if isinstance(raw, float) or (isinstance(raw, int) and not isinstance(raw, bool)):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise CoordinateError(_("%(axis)s is missing.") % {"axis": axis_label(axis)})
        try:
            # float() also accepts "1_000", which no coordinate file means.
            if "_" in text:
                raise ValueError(text)
            value = float(text)
        except ValueError:
            raise CoordinateError(_not_a_number(raw, axis)) from None
    else:
        raise CoordinateError(_not_a_number(raw, axis))
    if not math.isfinite(value):
        raise CoordinateError(
            _("%(axis)s %(value)s is not a finite number.") % {"axis": axis_label(axis), "value": display_value(raw)}
        )
    return value


def validate_position(raw_lon: object, raw_lat: object) -> tuple[float, float]:
    """Return (lon, lat) as floats in WGS84 degrees, or raise CoordinateError saying what is wrong.

    A pair whose latitude is out of range but which would be valid with the two
    values exchanged is reported as swapped, the usual mistake behind it.
    """
    lon = parse_coordinate(raw_lon, LONGITUDE)
    lat = parse_coordinate(raw_lat, LATITUDE)
    lat_valid = MIN_LATITUDE <= lat <= MAX_LATITUDE
    if not lat_valid and MIN_LATITUDE <= lon <= MAX_LATITUDE and MIN_LONGITUDE <= lat <= MAX_LONGITUDE:
        raise CoordinateError(
            _(
                "longitude %(lon)s and latitude %(lat)s look swapped: the latitude is outside -90 to 90, "
                "but the pair is valid the other way round. Put the longitude first."
            )
            % {"lon": display_value(raw_lon), "lat": display_value(raw_lat)}
        )
    if not MIN_LONGITUDE <= lon <= MAX_LONGITUDE:
        raise CoordinateError(_("longitude %(value)s is outside -180 to 180.") % {"value": display_value(raw_lon)})
    if not lat_valid:
        raise CoordinateError(_("latitude %(value)s is outside -90 to 90.") % {"value": display_value(raw_lat)})
    return lon, lat


def _not_a_number(raw: object, axis: str) -> str:
    return _("%(axis)s %(value)s is not a number.") % {"axis": axis_label(axis), "value": display_value(raw)}


def display_value(raw: object) -> str:
    """Format a value from a file for an error message: text quoted, JSON literals as JSON writes them."""
    if isinstance(raw, str):
        return repr(raw)
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)
