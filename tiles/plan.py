"""A caching plan: every tile address one point of a campaign needs."""

from __future__ import annotations

from dataclasses import dataclass

from tiles.address import TileAddress
from tiles.errors import InvalidTileRequest
from tiles.grid import TilePlanPreset, build_preset, get_preset, point_tiles
from tiles.visparams import campaign_vis_params, layer_for_image_type, validate_year

# A run caches at most this many years per point; TVI campaigns span decades
# at most, and a typo such as 20000 would otherwise plan millions of tiles.
MAX_YEARS = 100


@dataclass(frozen=True)
class CachePlan:
    layer: str
    years: tuple[int, ...]
    vis_params: tuple[str, ...]
    preset: TilePlanPreset

    def addresses_for(self, lon: float, lat: float) -> list[TileAddress]:
        """Return the unique tile addresses of one point, in a stable order."""
        grid = point_tiles(lon, lat, self.preset.zooms, self.preset.buffer)
        addresses = []
        for year in self.years:
            for vis_param in self.vis_params:
                for period, month in self.preset.period_months():
                    for z, x, y in grid:
                        addresses.append(TileAddress(self.layer, vis_param, period, year, month, z, x, y))
        return addresses

    def tiles_per_point(self) -> int:
        """Tiles of a point away from the poles; points on the edge rows need fewer."""
        return len(self.years) * len(self.vis_params) * self.preset.tiles_per_location()

    def as_dict(self) -> dict:
        return {
            "layer": self.layer,
            "years": list(self.years),
            "vis_params": list(self.vis_params),
            "preset": self.preset.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> CachePlan:
        preset = data["preset"]
        return cls(
            layer=data["layer"],
            years=tuple(data["years"]),
            vis_params=tuple(data["vis_params"]),
            preset=build_preset(preset["name"], preset),
        )


def build_plan(
    *,
    image_type: str | None,
    initial_year: int | float | None,
    final_year: int | float | None,
    vis_params: list | None,
    vis_params_enable: list | None,
    vis_param: str | None,
    preset_name: str | None,
) -> CachePlan:
    """Build a campaign's plan from its TVI fields; raise ``TileError`` subclasses on bad values."""
    layer = layer_for_image_type(image_type)
    first = _year("initialYear", initial_year)
    last = _year("finalYear", final_year)
    if last < first:
        raise InvalidTileRequest(f"finalYear {last} is before initialYear {first}; swap them.")
    if last - first + 1 > MAX_YEARS:
        raise InvalidTileRequest(f"The year range {first}-{last} spans more than {MAX_YEARS} years.")
    validate_year(layer, first)
    validate_year(layer, last)
    names = campaign_vis_params(layer, vis_params, vis_params_enable, vis_param)
    return CachePlan(layer, tuple(range(first, last + 1)), names, get_preset(preset_name))


def _year(name: str, value: int | float | None) -> int:
    if value is None:
        raise InvalidTileRequest(f"The campaign has no {name}; set it to the year to cache.")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidTileRequest(f"{name} {value} is not a whole year.")
        return int(value)
    return int(value)
