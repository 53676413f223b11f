"""The identity of one tile: what it shows and where it sits in the grid."""

from __future__ import annotations

from dataclasses import dataclass

from tiles.errors import InvalidTileRequest
from tiles.grid import MAX_ZOOM, MIN_ZOOM
from tiles.periods import Period, parse_period
from tiles.visparams import get_vis_param, validate_layer, validate_year


@dataclass(frozen=True, order=True)
class TileAddress:
    layer: str
    vis_param: str
    period: Period
    year: int
    # Only MONTH tiles have a month; it is None for DRY and WET.
    month: int | None
    z: int
    x: int
    y: int

    @classmethod
    def validated(
        cls,
        *,
        layer: str,
        vis_param: str,
        period: str | Period,
        year: int | str,
        month: int | str | None,
        z: int | str,
        x: int | str,
        y: int | str,
    ) -> TileAddress:
        """Build an address from untrusted values, raising ``InvalidTileRequest`` on any bad one."""
        validate_layer(layer)
        get_vis_param(vis_param, layer)
        parsed_period = parse_period(period) if not isinstance(period, Period) else period
        year_value = _integer("year", year)
        validate_year(layer, year_value)
        zoom = _integer("z", z)
        if not MIN_ZOOM <= zoom <= MAX_ZOOM:
            raise InvalidTileRequest(f"Invalid zoom {zoom}; use {MIN_ZOOM} to {MAX_ZOOM}.")
        side = 2**zoom
        column = _integer("x", x)
        row = _integer("y", y)
        if not 0 <= column < side:
            raise InvalidTileRequest(f"Invalid x {column} at zoom {zoom}; use 0 to {side - 1}.")
        if not 0 <= row < side:
            raise InvalidTileRequest(f"Invalid y {row} at zoom {zoom}; use 0 to {side - 1}.")
        month_value: int | None = None
        if parsed_period is Period.MONTH:
            if month in (None, ""):
                raise InvalidTileRequest("Missing month for period MONTH; use 1 to 12.")
            month_value = _integer("month", month)
            if not 1 <= month_value <= 12:
                raise InvalidTileRequest(f"Invalid month {month_value}; use 1 to 12.")
        return cls(layer, vis_param, parsed_period, year_value, month_value, zoom, column, row)


def _integer(name: str, value: int | str | None) -> int:
    if isinstance(value, bool):
        raise InvalidTileRequest(f"Invalid {name} {value!r}; use an integer.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = str(value).strip() if value is not None else ""
    if not text.lstrip("-").isdigit() or len(text) > 12:
        raise InvalidTileRequest(f"Invalid {name} {value!r}; use an integer.")
    return int(text)
