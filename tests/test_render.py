"""Vis-param stretch and gamma, on arrays and end to end through a GeoTIFF and the raster source.

Each synthetic raster covers one XYZ tile exactly in EPSG:3857 at 256 x 256
pixels, so the tile read returns the file's pixels unchanged and every
output pixel can be predicted exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import mercantile
import numpy as np
import pytest

from tests.rasters import address, decode_png, entry, tile_transform, write_catalog, write_geotiff
from tiles import render
from tiles.sources.raster import RasterSource
from tiles.visparams import REGISTRY, VisParam, get_vis_param

LANDSAT_VIS_PARAMS = ("landsat-tvi-true", "landsat-tvi-agri", "landsat-tvi-false")
SENTINEL_VIS_PARAMS = ("tvi-green", "tvi-red", "tvi-rgb")

# The tile every synthetic raster covers: zoom 12 over western Paraná, Brazil.
TILE = mercantile.tile(-54.5, -25.3, 12)

# Column blocks of the synthetic rasters, 32 pixels wide each, as fractions
# of the way from a band's min to its max. None is a nodata block.
BLOCKS = (-0.05, 0.0, 0.25, 0.5, 0.75, 1.0, 1.3, None)
BLOCK_WIDTH = 256 // len(BLOCKS)

LANDSAT_SCALE = 2e-5
LANDSAT_OFFSET = -0.1


def expected_channel(fraction: float, gamma: float) -> int:
    """Return the 0..255 value of a band at ``fraction`` of its min..max range, computed in float64."""
    clipped = min(max(fraction, 0.0), 1.0)
    return round(255 * clipped ** (1 / gamma))


def block_values(vis: VisParam, channel: int, fraction: float) -> float:
    low, high = vis.minimum[channel], vis.maximum[channel]
    return low + fraction * (high - low)


def synthetic_tile_raster(
    tmp_path: Path, vis: VisParam, *, scale: float, offset: float, band_names: tuple[str, str, str]
) -> tuple[Path, dict[str, int]]:
    """Write a 3-band uint16 raster whose column blocks hold the values of ``BLOCKS`` for a vis param."""
    pixels = np.zeros((3, 256, 256), dtype=np.uint16)
    for block, fraction in enumerate(BLOCKS):
        if fraction is None:
            continue
        columns = slice(block * BLOCK_WIDTH, (block + 1) * BLOCK_WIDTH)
        for channel in range(3):
            value = block_values(vis, channel, fraction)
            digital_number = round((value - offset) / scale)
            assert 0 < digital_number < 65535, f"{vis.name} value {value} does not fit uint16"
            assert math.isclose(digital_number * scale + offset, value, abs_tol=1e-9), (
                f"{vis.name} value {value} is not a whole digital number at scale {scale}"
            )
            pixels[channel, :, columns] = digital_number
    transform = tile_transform(TILE.z, TILE.x, TILE.y)
    path = write_geotiff(tmp_path / f"{vis.name}.tif", pixels, crs="EPSG:3857", transform=transform, nodata=0)
    return path, {name: index for index, name in enumerate(band_names, start=1)}


def render_through_source(tmp_path: Path, catalog_entry: dict, vis_name: str, year: int) -> np.ndarray:
    layer = get_vis_param(vis_name).layer
    catalog = write_catalog(tmp_path / "catalog.json", [catalog_entry])
    source = RasterSource(layer, {"catalog": str(catalog)})
    try:
        data = source.fetch(address(TILE.z, TILE.x, TILE.y, vis_param=vis_name, layer=layer, year=year))
    finally:
        source.close()
    assert data != render.EMPTY_TILE
    return decode_png(data)


def assert_blocks(rgba: np.ndarray, vis: VisParam) -> None:
    for block, fraction in enumerate(BLOCKS):
        pixels = rgba[:, block * BLOCK_WIDTH : (block + 1) * BLOCK_WIDTH]
        if fraction is None:
            assert (pixels[:, :, 3] == 0).all(), f"nodata block of {vis.name} is not transparent"
            assert (pixels[:, :, :3] == 0).all(), f"nodata block of {vis.name} has colour under alpha 0"
            continue
        assert (pixels[:, :, 3] == 255).all(), f"block at fraction {fraction} of {vis.name} is not opaque"
        for channel in range(3):
            expected = expected_channel(fraction, vis.gamma)
            values = np.unique(pixels[:, :, channel])
            assert values.tolist() == [expected], (
                f"{vis.name} channel {channel} at fraction {fraction}: got {values.tolist()}, expected {expected}"
            )


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_stretch_exact_at_min_mid_max(name: str) -> None:
    vis = get_vis_param(name)
    fractions = (-0.5, 0.0, 0.5, 1.0, 2.0)
    values = np.array(
        [[[block_values(vis, channel, fraction) for fraction in fractions]] for channel in range(3)],
        dtype=np.float64,
    )

    stretched = render.stretch(values, vis)

    midpoint = round(255 * 0.5 ** (1 / vis.gamma))
    for channel in range(3):
        assert stretched[channel, 0].tolist() == [0, 0, midpoint, 255, 255], f"{name} channel {channel}"


def test_stretch_gamma_literal_values() -> None:
    # Worked by hand: 255 * 0.5 ** (1 / gamma), rounded.
    assert round(255 * 0.5 ** (1 / 1.2)) == 143
    assert render.stretch(np.full((3, 1, 1), 0.14), get_vis_param("landsat-tvi-true"))[0, 0, 0] == 143
    assert render.stretch(np.full((3, 1, 1), 0.275), get_vis_param("landsat-tvi-agri"))[0, 0, 0] == 118
    assert render.stretch(np.full((3, 1, 1), 1600.0), get_vis_param("tvi-rgb"))[0, 0, 0] == 153


def test_render_rgba_invalid_pixels_transparent() -> None:
    vis = get_vis_param("tvi-rgb")
    values = np.full((3, 2, 2), 3000.0)
    valid = np.array([[True, False], [False, True]])

    rgba = render.render_rgba(values, valid, vis)

    assert rgba.shape == (2, 2, 4)
    assert rgba[:, :, 3].tolist() == [[255, 0], [0, 255]]
    assert rgba[0, 0, :3].tolist() == [255, 255, 255]
    assert rgba[0, 1].tolist() == [0, 0, 0, 0]


def test_encode_tile_all_transparent_is_empty_tile() -> None:
    rgba = np.zeros((256, 256, 4), dtype=np.uint8)
    rgba[:, :, 0] = 200

    assert render.encode_tile(rgba) == render.EMPTY_TILE
    assert render.is_empty_tile(render.EMPTY_TILE)


@pytest.mark.parametrize("name", LANDSAT_VIS_PARAMS)
@pytest.mark.parametrize(("year", "family"), [(2020, "OLI"), (2010, "TM")])
def test_landsat_vis_param_reflectance_geotiff(tmp_path: Path, name: str, year: int, family: str) -> None:
    vis = get_vis_param(name)
    band_names = vis.bands[family]
    path, bands = synthetic_tile_raster(
        tmp_path, vis, scale=LANDSAT_SCALE, offset=LANDSAT_OFFSET, band_names=band_names
    )

    rgba = render_through_source(tmp_path, entry(path, year=year, bands=bands), name, year)

    assert_blocks(rgba, vis)


@pytest.mark.parametrize("name", SENTINEL_VIS_PARAMS)
def test_sentinel_vis_param_digital_numbers_geotiff(tmp_path: Path, name: str) -> None:
    vis = get_vis_param(name)
    path, bands = synthetic_tile_raster(tmp_path, vis, scale=1.0, offset=0.0, band_names=vis.bands["MSI"])
    catalog_entry = entry(path, layer="sentinel", year=2021, bands=bands)
    del catalog_entry["scale"], catalog_entry["offset"]

    rgba = render_through_source(tmp_path, catalog_entry, name, 2021)

    assert_blocks(rgba, vis)


def test_band_mapping_order_follows_vis_param(tmp_path: Path) -> None:
    """A file whose bands are stored in another order is read through the catalog's mapping."""
    vis = get_vis_param("landsat-tvi-true")
    pixels = np.zeros((3, 256, 256), dtype=np.uint16)
    # File band 1 is red (B4) at its max, band 2 blue (B2) at its min, band 3 green (B3) at the midpoint.
    pixels[0] = round((0.25 + 0.1) / LANDSAT_SCALE)
    pixels[1] = round((0.0 + 0.1) / LANDSAT_SCALE)
    pixels[2] = round((0.14 + 0.1) / LANDSAT_SCALE)
    path = write_geotiff(
        tmp_path / "reordered.tif", pixels, crs="EPSG:3857", transform=tile_transform(TILE.z, TILE.x, TILE.y)
    )

    rgba = render_through_source(tmp_path, entry(path, bands={"B4": 1, "B2": 2, "B3": 3}), vis.name, 2020)

    assert rgba[100, 100].tolist() == [255, expected_channel(0.5, vis.gamma), 0, 255]
