"""Tile plans: which XYZ tiles a point needs, and the presets that shape them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import mercantile
from django.conf import settings

from tiles.errors import InvalidTileRequest
from tiles.periods import Period, parse_period

MIN_ZOOM = 0
MAX_ZOOM = 22
# Web mercator covers latitudes up to this value; points beyond it belong to
# the edge row of tiles.
MAX_LATITUDE = 85.0511287798066
# Most rings of neighbour tiles a preset may add around a point's tile.
MAX_BUFFER = 5


@dataclass(frozen=True)
class TilePlanPreset:
    name: str
    zooms: tuple[int, ...]
    buffer: int
    periods: tuple[Period, ...]
    months: tuple[int, ...] = field(default=())

    def tiles_per_location(self) -> int:
        """Upper bound of tiles per (year, vis param) for one point, before wrap and edge clipping."""
        side = 2 * self.buffer + 1
        return len(self.zooms) * side * side * self.period_slots()

    def period_slots(self) -> int:
        return sum(len(self.months) if period is Period.MONTH else 1 for period in self.periods)

    def period_months(self) -> Iterator[tuple[Period, int | None]]:
        for period in self.periods:
            if period is Period.MONTH:
                for month in self.months:
                    yield period, month
            else:
                yield period, None

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "zooms": list(self.zooms),
            "buffer": self.buffer,
            "periods": [period.value for period in self.periods],
            "months": list(self.months),
        }


BUILTIN_PRESETS = {
    # The original service: zooms 12 to 14, the tile under the point.
    "seed": {"zooms": [12, 13, 14], "buffer": 0, "periods": ["DRY"]},
    # TVI's inspector: zoom 13 with the 3x3 block around the point, dry and wet season.
    "tvi": {"zooms": [13], "buffer": 1, "periods": ["DRY", "WET"]},
}


def build_preset(name: str, spec: dict) -> TilePlanPreset:
    try:
        zooms = tuple(sorted({int(zoom) for zoom in spec["zooms"]}))
        buffer = int(spec.get("buffer", 0))
        periods = tuple(parse_period(period) for period in spec.get("periods", ["DRY"]))
        months = tuple(int(month) for month in spec.get("months", range(1, 13) if "MONTH" in periods else ()))
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidTileRequest(f"Tile-plan preset {name!r} is malformed: {error}.") from None
    if not zooms or any(not MIN_ZOOM <= zoom <= MAX_ZOOM for zoom in zooms):
        raise InvalidTileRequest(f"Tile-plan preset {name!r} has zooms {list(zooms)}; use {MIN_ZOOM} to {MAX_ZOOM}.")
    if not 0 <= buffer <= MAX_BUFFER:
        raise InvalidTileRequest(f"Tile-plan preset {name!r} has buffer {buffer}; use 0 to {MAX_BUFFER}.")
    if any(not 1 <= month <= 12 for month in months):
        raise InvalidTileRequest(f"Tile-plan preset {name!r} has months {list(months)}; use 1 to 12.")
    return TilePlanPreset(name, zooms, buffer, tuple(dict.fromkeys(periods)), months)


def preset_specs() -> dict[str, dict]:
    specs = {name: dict(spec) for name, spec in BUILTIN_PRESETS.items()}
    seed = specs["seed"]
    seed["zooms"] = getattr(settings, "TILE_PLAN_ZOOMS", seed["zooms"])
    seed["buffer"] = getattr(settings, "TILE_PLAN_BUFFER", seed["buffer"])
    for name, spec in getattr(settings, "TILE_PLAN_PRESETS", {}).items():
        specs[name] = {**specs.get(name, {}), **spec}
    return specs


def preset_names() -> list[str]:
    return sorted(preset_specs())


def get_preset(name: str | None) -> TilePlanPreset:
    chosen = name or settings.TILE_PLAN_DEFAULT_PRESET
    specs = preset_specs()
    if chosen not in specs:
        raise InvalidTileRequest(f"Unknown tile-plan preset {chosen!r}; use one of {', '.join(sorted(specs))}.")
    return build_preset(chosen, specs[chosen])


def clamp_latitude(lat: float) -> float:
    return max(-MAX_LATITUDE, min(MAX_LATITUDE, lat))


def center_tile(lon: float, lat: float, zoom: int) -> tuple[int, int]:
    """Return (x, y) of the tile containing a point, clamped to the grid.

    Longitude 180 is the same meridian as -180 and wraps to column 0;
    latitudes beyond the mercator limit fall in the first or last row.
    """
    tile = mercantile.tile(lon, clamp_latitude(lat), zoom)
    side = 2**zoom
    return tile.x % side, min(max(tile.y, 0), side - 1)


def point_tiles(lon: float, lat: float, zooms: tuple[int, ...], buffer: int) -> list[tuple[int, int, int]]:
    """Return the unique (z, x, y) tiles a point needs: its tile and ``buffer`` rings around it.

    Neighbours wrap across the antimeridian; rows beyond the poles do not exist
    and are left out.
    """
    tiles: dict[tuple[int, int, int], None] = {}
    for zoom in zooms:
        side = 2**zoom
        x0, y0 = center_tile(lon, lat, zoom)
        for dy in range(-buffer, buffer + 1):
            y = y0 + dy
            if not 0 <= y < side:
                continue
            for dx in range(-buffer, buffer + 1):
                tiles[(zoom, (x0 + dx) % side, y)] = None
    return list(tiles)
