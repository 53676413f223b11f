"""Helpers that write small GeoTIFFs and raster catalogs for tile tests, and decode PNG tiles."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import mercantile
import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import Affine, from_bounds

from tiles.address import TileAddress

ROOT = Path(__file__).resolve().parent.parent


def write_geotiff(
    path: Path, pixels: np.ndarray, *, crs: str, transform: Affine, nodata: float | None = None
) -> Path:
    """Write a (bands, rows, columns) array as a tiled GeoTIFF."""
    count, height, width = pixels.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=pixels.dtype,
        crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
    ) as dataset:
        dataset.write(pixels)
    return path


def tile_transform(z: int, x: int, y: int, size: int = 256) -> Affine:
    """Return the transform of a ``size`` x ``size`` EPSG:3857 raster covering one XYZ tile exactly."""
    bounds = mercantile.xy_bounds(x, y, z)
    return from_bounds(bounds.left, bounds.bottom, bounds.right, bounds.top, size, size)


def write_catalog(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def entry(path: Path | str, **fields: object) -> dict:
    """Return a catalog entry for a Landsat 2020 DRY file, with ``fields`` overriding the defaults."""
    base: dict = {
        "layer": "landsat", "year": 2020, "period": "DRY", "month": None, "path": str(path),
        "bands": {"B2": 1, "B3": 2, "B4": 3}, "scale": 2e-5, "offset": -0.1, "nodata": 0,
    }
    base.update(fields)
    return base


def address(
    z: int, x: int, y: int, *, vis_param: str = "landsat-tvi-true", layer: str = "landsat",
    year: int = 2020, period: str = "DRY", month: int | None = None,
) -> TileAddress:
    return TileAddress.validated(
        layer=layer, vis_param=vis_param, period=period, year=year, month=month, z=z, x=x, y=y
    )


def decode_png(data: bytes) -> np.ndarray:
    """Return a PNG tile as an (H, W, 4) uint8 array."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGBA", f"tile mode is {image.mode}, expected RGBA"
        return np.asarray(image).copy()


def load_sample_data_script() -> ModuleType:
    """Import scripts/sample_data.py, which is a plain script and not a package module."""
    name = "cachecampaign_sample_data"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "sample_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
