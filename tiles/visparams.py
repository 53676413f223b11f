"""The vis-param registry and the rules that pick a campaign's layer and vis params.

Values follow the original TVI system: Landsat vis params stretch surface
reflectance, Sentinel-2 vis params stretch digital numbers. ``gamma`` has
Earth Engine's meaning: after the min/max stretch each value ``v`` in 0..1
becomes ``v ** (1 / gamma)``, so a gamma above 1 brightens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from tiles.errors import InvalidTileRequest, NotCacheable

LANDSAT = "landsat"
SENTINEL = "sentinel"
LAYERS = (LANDSAT, SENTINEL)

# First year of each Landsat sensor as TVI uses them; a year belongs to the
# last sensor whose first year it has reached.
LANDSAT_SENSOR_SINCE = (("L5", 1985), ("L7", 2012), ("L8", 2014), ("L9", 2025))
FIRST_LANDSAT_YEAR = LANDSAT_SENSOR_SINCE[0][1]
FIRST_SENTINEL_YEAR = 2015
LAST_YEAR = 2100


@dataclass(frozen=True)
class VisParam:
    name: str
    layer: str
    # Band names per sensor family: "TM" for L5/L7, "OLI" for L8/L9, "MSI" for Sentinel-2.
    bands: dict[str, tuple[str, str, str]]
    minimum: tuple[float, float, float]
    maximum: tuple[float, float, float]
    gamma: float

    def bands_for_year(self, year: int) -> tuple[str, str, str]:
        return self.bands[sensor_family(self.layer, year)]


def landsat_sensor(year: int) -> str:
    if year < FIRST_LANDSAT_YEAR:
        raise InvalidTileRequest(f"Invalid year {year}: Landsat imagery starts in {FIRST_LANDSAT_YEAR}.")
    sensor = LANDSAT_SENSOR_SINCE[0][0]
    for name, since in LANDSAT_SENSOR_SINCE:
        if year >= since:
            sensor = name
    return sensor


def sensor_family(layer: str, year: int) -> str:
    if layer == SENTINEL:
        return "MSI"
    return "TM" if landsat_sensor(year) in ("L5", "L7") else "OLI"


REGISTRY: dict[str, VisParam] = {
    vis.name: vis
    for vis in (
        VisParam(
            "landsat-tvi-true",
            LANDSAT,
            {"TM": ("B3", "B2", "B1"), "OLI": ("B4", "B3", "B2")},
            (0.03, 0.03, 0.0),
            (0.25, 0.25, 0.25),
            1.2,
        ),
        VisParam(
            "landsat-tvi-agri",
            LANDSAT,
            {"TM": ("B5", "B4", "B3"), "OLI": ("B6", "B5", "B4")},
            (0.05, 0.05, 0.03),
            (0.5, 0.55, 0.3),
            0.9,
        ),
        VisParam(
            "landsat-tvi-false",
            LANDSAT,
            {"TM": ("B4", "B5", "B3"), "OLI": ("B5", "B6", "B4")},
            (0.05, 0.05, 0.03),
            (0.6, 0.55, 0.3),
            1.2,
        ),
        # True colour for Level-1 scenes in top-of-atmosphere reflectance,
        # which atmospheric haze makes darker in red and brighter in blue
        # than surface reflectance. Min and max are the 2nd and 99th
        # percentiles of the valid pixels of Landsat 8 scene
        # LC08_L1TP_224078_20200518 (Paraná), rounded.
        VisParam(
            "landsat-toa-true",
            LANDSAT,
            {"TM": ("B3", "B2", "B1"), "OLI": ("B4", "B3", "B2")},
            (0.02, 0.034, 0.048),
            (0.08, 0.075, 0.08),
            1.2,
        ),
        VisParam("tvi-green", SENTINEL, {"MSI": ("B11", "B8A", "B4")}, (600, 700, 400), (4300, 5400, 2800), 1.1),
        VisParam("tvi-red", SENTINEL, {"MSI": ("B8A", "B11", "B4")}, (700, 600, 400), (5400, 4300, 2800), 1.1),
        VisParam("tvi-rgb", SENTINEL, {"MSI": ("B4", "B3", "B2")}, (200, 300, 700), (3000, 2500, 2300), 1.35),
    )
}

DEFAULT_VIS_PARAMS = {LANDSAT: ("landsat-tvi-false",), SENTINEL: ("tvi-red",)}


def get_vis_param(name: str, layer: str | None = None) -> VisParam:
    vis = REGISTRY.get(name)
    if vis is None or (layer is not None and vis.layer != layer):
        known = ", ".join(sorted(n for n, v in REGISTRY.items() if layer is None or v.layer == layer))
        raise InvalidTileRequest(f"Unknown vis param {name!r} for layer {layer or 'any'}; known: {known}.")
    return vis


def validate_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise InvalidTileRequest(f"Unknown layer {layer!r}; use one of {', '.join(LAYERS)}.")
    return layer


def validate_year(layer: str, year: int) -> int:
    first = FIRST_SENTINEL_YEAR if layer == SENTINEL else FIRST_LANDSAT_YEAR
    if not first <= year <= LAST_YEAR:
        raise InvalidTileRequest(f"Invalid year {year} for layer {layer}; use {first} to {LAST_YEAR}.")
    return year


def layer_for_image_type(image_type: str | None) -> str:
    """Map a campaign's ``imageType`` to a layer, or raise ``NotCacheable``."""
    value = (image_type or LANDSAT).strip().lower()
    if "sentinel" in value:
        return SENTINEL
    if value == LANDSAT:
        return LANDSAT
    if value in ("planet", "wms"):
        raise NotCacheable(
            f"imageType {image_type!r} cannot be cached: its tiles come from an outside map service. "
            "Only landsat and sentinel campaigns can be cached."
        )
    raise NotCacheable(f"Unknown imageType {image_type!r}; use landsat or sentinel-2.")


def campaign_vis_params(
    layer: str,
    vis_params: Iterable[Any] | None,
    vis_params_enable: Iterable[Any] | None,
    vis_param: str | None,
) -> tuple[str, ...]:
    """Pick the vis params to cache: the first non-empty of the three fields, then the layer default.

    ``None`` entries are dropped; an unknown name raises ``InvalidTileRequest``.
    """
    for candidate in (vis_params, vis_params_enable, [vis_param]):
        names = [str(name) for name in (candidate or []) if name is not None and str(name).strip()]
        if names:
            break
    else:
        names = list(DEFAULT_VIS_PARAMS[layer])
    unique = tuple(dict.fromkeys(names))
    for name in unique:
        get_vis_param(name, layer)
    return unique
