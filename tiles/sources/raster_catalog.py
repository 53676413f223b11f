"""The raster catalog: which GeoTIFF/COG contains a layer's imagery for a year and period.

A catalog is a JSON file that contains either a list of entries or an object
``{"entries": [...], "note": "..."}``. Each entry looks like::

    {"layer": "landsat", "year": 2020, "period": "DRY", "month": null,
     "path": "landsat-2020.tif", "bands": {"B2": 1, "B3": 2, "B4": 3},
     "scale": 2e-5, "offset": -0.1, "nodata": 0, "note": "free text"}

``bands`` maps vis-param band names to 1-based band indexes of the file.
A pixel's value is ``DN * scale + offset`` (defaults 1 and 0). ``nodata``
overrides the file's own nodata value, and ``null`` keeps it. A relative
``path`` is resolved against the catalog's folder. A path containing ``://``
or starting with ``/vsi`` is handed to GDAL unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from django.core.exceptions import ImproperlyConfigured

from tiles.errors import InvalidTileRequest
from tiles.periods import Period, parse_period
from tiles.visparams import LAYERS, validate_year

REQUIRED_FIELDS = ("layer", "year", "period", "path", "bands")
OPTIONAL_FIELDS = ("month", "scale", "offset", "nodata", "note")

# (layer, year, period, month), where month is None unless the period is MONTH.
CatalogKey = tuple[str, int, Period, int | None]


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogued raster file and how to turn its digital numbers into values."""

    layer: str
    year: int
    period: Period
    month: int | None
    path: str
    bands: Mapping[str, int]
    scale: float
    offset: float
    nodata: float | None
    # Position of the entry in the catalog file, 0-based, for error messages.
    index: int
    catalog: Path

    @property
    def key(self) -> CatalogKey:
        return (self.layer, self.year, self.period, self.month)

    @property
    def is_remote(self) -> bool:
        return "://" in self.path or self.path.startswith("/vsi")

    def describe(self) -> str:
        return f"entry {self.index} of raster catalog {self.catalog}"


def catalog_key(layer: str, year: int, period: Period, month: int | None) -> CatalogKey:
    return (layer, year, period, month if period is Period.MONTH else None)


def load_catalog(path: Path) -> dict[CatalogKey, CatalogEntry]:
    """Read and validate a catalog file, raising ``ImproperlyConfigured`` on any invalid entry.

    A missing file raises ``FileNotFoundError``, which the caller treats as a
    catalog without imagery.
    """
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImproperlyConfigured(
            f"Raster catalog {path} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}. Fix the file or point RASTER_CATALOG_FILE at another one."
        ) from None
    entries = _entry_list(document, path)
    catalog: dict[CatalogKey, CatalogEntry] = {}
    for index, raw in enumerate(entries):
        entry = parse_entry(raw, index, path)
        earlier = catalog.get(entry.key)
        if earlier is not None:
            raise ImproperlyConfigured(
                f"Raster catalog {path}: entries {earlier.index} and {index} both catalogue "
                f"{_describe_key(entry.key)}; keep one file per layer, year and period, "
                "or merge the files into one mosaic."
            )
        catalog[entry.key] = entry
    return catalog


def _entry_list(document: Any, path: Path) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and isinstance(document.get("entries"), list):
        return document["entries"]
    raise ImproperlyConfigured(
        f"Raster catalog {path} must contain a JSON list of entries or an object with an "
        f"'entries' list; found {type(document).__name__}."
    )


def parse_entry(raw: Any, index: int, catalog: Path) -> CatalogEntry:
    """Validate one catalog entry; ``index`` and ``catalog`` only name it in error messages."""
    where = f"Raster catalog {catalog}, entry {index}"
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"{where} must be a JSON object; found {type(raw).__name__}.")
    unknown = sorted(set(raw) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        allowed = ", ".join(REQUIRED_FIELDS + OPTIONAL_FIELDS)
        raise ImproperlyConfigured(f"{where} has unknown fields {unknown}; the allowed fields are {allowed}.")
    for name in REQUIRED_FIELDS:
        if name not in raw:
            raise ImproperlyConfigured(f"{where} is missing the required field {name!r}.")

    layer = raw["layer"]
    if layer not in LAYERS:
        raise ImproperlyConfigured(f"{where}, field 'layer': {layer!r} is not a layer; use one of {', '.join(LAYERS)}.")
    year = _integer_field(raw, "year", where)
    try:
        validate_year(layer, year)
    except InvalidTileRequest as error:
        raise ImproperlyConfigured(f"{where}, field 'year': {error}") from None
    period = _period_field(raw, where)
    month = _month_field(raw, period, where)
    return CatalogEntry(
        layer=layer,
        year=year,
        period=period,
        month=month,
        path=_resolve_path(raw, catalog, where),
        bands=_bands_field(raw, where),
        scale=_number_field(raw, "scale", 1.0, where),
        offset=_number_field(raw, "offset", 0.0, where),
        nodata=_nodata_field(raw, where),
        index=index,
        catalog=catalog,
    )


def _integer_field(raw: dict, name: str, where: str) -> int:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImproperlyConfigured(f"{where}, field {name!r}: {value!r} is not an integer.")
    return value


def _period_field(raw: dict, where: str) -> Period:
    value = raw["period"]
    try:
        return parse_period(str(value))
    except InvalidTileRequest as error:
        raise ImproperlyConfigured(f"{where}, field 'period': {error}") from None


def _month_field(raw: dict, period: Period, where: str) -> int | None:
    value = raw.get("month")
    if period is not Period.MONTH:
        if value is not None:
            raise ImproperlyConfigured(
                f"{where}, field 'month': {value!r} is set but period is {period.value}; "
                "use null, or set period to MONTH."
            )
        return None
    if value is None:
        raise ImproperlyConfigured(f"{where}, field 'month': a MONTH entry needs a month from 1 to 12.")
    month = _integer_field(raw, "month", where)
    if not 1 <= month <= 12:
        raise ImproperlyConfigured(f"{where}, field 'month': {month} is not a month; use 1 to 12.")
    return month


def _resolve_path(raw: dict, catalog: Path, where: str) -> str:
    value = raw["path"]
    if not isinstance(value, str) or not value.strip():
        raise ImproperlyConfigured(f"{where}, field 'path': {value!r} is not a file path.")
    if "://" in value or value.startswith("/vsi"):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = catalog.parent / path
    return str(path.resolve())


def _bands_field(raw: dict, where: str) -> dict[str, int]:
    value = raw["bands"]
    if not isinstance(value, dict) or not value:
        raise ImproperlyConfigured(
            f"{where}, field 'bands': {value!r} is not a mapping of band names to band indexes, "
            'such as {"B2": 1, "B3": 2, "B4": 3}.'
        )
    bands: dict[str, int] = {}
    for name, band_index in value.items():
        if not name.strip():
            raise ImproperlyConfigured(f"{where}, field 'bands': band names must not be empty.")
        if isinstance(band_index, bool) or not isinstance(band_index, int) or band_index < 1:
            raise ImproperlyConfigured(
                f"{where}, field 'bands': band {name!r} maps to {band_index!r}; "
                "use the 1-based index of the band in the file."
            )
        bands[name] = band_index
    return bands


def _number_field(raw: dict, name: str, default: float, where: str) -> float:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ImproperlyConfigured(f"{where}, field {name!r}: {value!r} is not a finite number.")
    return float(value)


def _nodata_field(raw: dict, where: str) -> float | None:
    value = raw.get("nodata")
    if value is None:
        return None
    # NaN is allowed: it is the usual nodata value of floating-point rasters.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(value):
        raise ImproperlyConfigured(f"{where}, field 'nodata': {value!r} is not a number or null.")
    return float(value)


def _describe_key(key: CatalogKey) -> str:
    layer, year, period, month = key
    if month is None:
        return f"layer {layer}, year {year}, period {period.value}"
    return f"layer {layer}, year {year}, period {period.value}, month {month}"
