"""Tile reads of the raster source against rio-tiler's own ``Reader.tile()``, byte for byte, on a synthetic COG."""

from __future__ import annotations

import math
from pathlib import Path

import mercantile
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from pyproj import Transformer
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader

from tests.rasters import address, entry, tile_transform, write_catalog, write_geotiff
from tiles import render
from tiles.errors import SourceError
from tiles.sources.raster import RasterSource, render_image
from tiles.sources.raster_catalog import load_catalog
from tiles.sources.raster_read import TileReader
from tiles.visparams import get_vis_param

UTM_CRS = "EPSG:32721"
CENTRE_LON, CENTRE_LAT = -54.5, -25.3
PIXEL_SIZE = 30.0
ROWS, COLUMNS = 500, 600
# At zooms 9 to 12 a tile pixel is about 9, 4.6, 2.3 and 1.15 raster pixels wide, so GDAL reads
# overviews or resamples. Zooms 13 and 15 are finer than the raster.
ZOOMS = (9, 10, 11, 12, 13, 15)


def synthetic_pixels(dtype: type, nodata: float) -> np.ndarray:
    """Return 4 bands of gradients and noise, with a nodata rectangle and a nodata strip in band 1."""
    generator = np.random.default_rng(7)
    rows, columns = np.mgrid[0:ROWS, 0:COLUMNS]
    pixels = np.empty((4, ROWS, COLUMNS), dtype=dtype)
    for band in range(4):
        reflectance = 0.3 * (rows / ROWS + (band + 1) * columns / COLUMNS) / (band + 2)
        noisy = reflectance + generator.normal(0.0, 0.01, size=(ROWS, COLUMNS)) + 0.1
        pixels[band] = np.clip(np.rint(noisy / 2e-5), 1, 60000).astype(dtype)
    pixels[:, 150:260, 300:420] = nodata
    pixels[0, 30:45, :] = nodata
    return pixels


def write_utm_geotiff(path: Path, pixels: np.ndarray, nodata: float | None) -> Path:
    """Write the pixels in UTM around the centre as a tiled GeoTIFF without overviews."""
    easting, northing = Transformer.from_crs("EPSG:4326", UTM_CRS, always_xy=True).transform(CENTRE_LON, CENTRE_LAT)
    west, north = easting - COLUMNS / 2 * PIXEL_SIZE, northing + ROWS / 2 * PIXEL_SIZE
    transform = from_origin(west, north, PIXEL_SIZE, PIXEL_SIZE)
    return write_geotiff(path, pixels, crs=UTM_CRS, transform=transform, nodata=nodata)


def write_cog(tmp_path: Path, name: str, pixels: np.ndarray, nodata: float | None) -> Path:
    """Write the pixels in UTM around the centre as a Cloud-Optimized GeoTIFF with 2x, 4x and 8x overviews."""
    plain = write_utm_geotiff(tmp_path / f"{name}-plain.tif", pixels, nodata)
    cog = tmp_path / f"{name}.tif"
    rasterio.shutil.copy(
        plain, cog, driver="COG", blocksize=128, overview_resampling="nearest", compress="deflate"
    )
    with rasterio.open(cog) as dataset:
        assert dataset.overviews(1) == [2, 4, 8], "the test COG should have 2x, 4x and 8x overviews"
    return cog


def footprint_tiles(path: Path, zooms: tuple[int, ...] = ZOOMS) -> list[tuple[int, int, int]]:
    """Return (z, x, y) of every tile over the raster plus a ring of one tile around it at each zoom."""
    with rasterio.open(path) as dataset:
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    tiles = []
    for z in zooms:
        over = list(mercantile.tiles(west, south, east, north, zooms=[z]))
        xs = [tile.x for tile in over]
        ys = [tile.y for tile in over]
        for x in range(min(xs) - 1, max(xs) + 2):
            for y in range(min(ys) - 1, max(ys) + 2):
                tiles.append((z, x, y))
    return tiles


def read_with(function, x: int, y: int, z: int):
    try:
        return function(x, y, z).array
    except TileOutsideBounds:
        return None


def assert_same_reads(path: Path, nodata: float | None) -> dict[str, int]:
    """Read every footprint tile with TileReader and with Reader.tile(), assert equal arrays, count tile kinds."""
    counts = {"outside": 0, "empty": 0, "partial": 0, "full": 0}
    options = {} if nodata is None else {"nodata": nodata}
    with rasterio.open(path) as dataset, Reader(str(path)) as reference:
        ours = TileReader(Reader(str(path), dataset=dataset), dataset)
        indexes = tuple(range(1, dataset.count + 1))
        assert ours.band_indexes == indexes
        for z, x, y in footprint_tiles(path):
            expected = read_with(lambda x, y, z: reference.tile(x, y, z, indexes=indexes, **options), x, y, z)
            actual = read_with(lambda x, y, z: ours.tile(x, y, z, nodata), x, y, z)
            if expected is None:
                assert actual is None, f"tile {z}/{x}/{y} is outside for rio-tiler only"
                counts["outside"] += 1
                continue
            assert actual is not None, f"tile {z}/{x}/{y} is outside for TileReader only"
            assert actual.dtype == expected.dtype
            assert actual.data.tobytes() == expected.data.tobytes(), f"tile {z}/{x}/{y} values differ"
            expected_mask = np.ma.getmaskarray(expected)
            assert (np.ma.getmaskarray(actual) == expected_mask).all(), f"tile {z}/{x}/{y} masks differ"
            if expected_mask.all():
                counts["empty"] += 1
            elif expected_mask.any():
                counts["partial"] += 1
            else:
                counts["full"] += 1
    return counts


@pytest.fixture
def uint16_cog(tmp_path: Path) -> Path:
    return write_cog(tmp_path, "uint16", synthetic_pixels(np.uint16, 0), nodata=0)


def test_tile_reader_matches_rio_tiler_uint16(uint16_cog) -> None:
    counts = assert_same_reads(uint16_cog, 0.0)

    # Every kind of tile is covered: off the raster, over nodata only, on an edge and inside.
    assert counts["outside"] > 0
    assert counts["partial"] > 0
    assert counts["full"] > 0


def test_tile_reader_uses_warped_vrt_for_utm_cog(uint16_cog) -> None:
    with rasterio.open(uint16_cog) as dataset:
        reader = TileReader(Reader(str(uint16_cog), dataset=dataset), dataset)

        assert reader.uses_warped_vrt(0.0)
        assert not reader.uses_warped_vrt(None)


def test_tile_reader_no_overviews_matches_rio_tiler(tmp_path) -> None:
    # Without overviews GDAL resamples every zoom coarser than the raster from full resolution.
    plain = write_utm_geotiff(tmp_path / "plain.tif", synthetic_pixels(np.uint16, 0), nodata=0)
    with rasterio.open(plain) as dataset:
        assert dataset.overviews(1) == []

    counts = assert_same_reads(plain, 0.0)

    assert counts["partial"] > 0
    assert counts["full"] > 0


def test_tile_reader_file_nodata_matches_rio_tiler(uint16_cog) -> None:
    # No nodata in the request: both take the file's own nodata value.
    assert_same_reads(uint16_cog, None)


def test_tile_reader_float_nan_nodata_matches_rio_tiler(tmp_path) -> None:
    pixels = synthetic_pixels(np.float32, math.nan)
    cog = write_cog(tmp_path, "float", pixels, nodata=math.nan)

    counts = assert_same_reads(cog, math.nan)

    assert counts["partial"] > 0


def test_tile_reader_without_nodata_falls_back(tmp_path) -> None:
    cog = write_cog(tmp_path, "no-nodata", synthetic_pixels(np.uint16, 0), nodata=None)

    counts = assert_same_reads(cog, None)

    assert counts["full"] > 0


def test_tile_reader_web_mercator_file_falls_back(tmp_path) -> None:
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 12)
    pixels = synthetic_pixels(np.uint16, 0)[:, :256, :256]
    path = write_geotiff(
        tmp_path / "mercator.tif", pixels, crs="EPSG:3857", transform=tile_transform(12, tile.x, tile.y), nodata=0
    )
    with rasterio.open(path) as dataset:
        reader = TileReader(Reader(str(path), dataset=dataset), dataset)
        assert not reader.uses_warped_vrt(0.0)
        image = reader.tile(tile.x, tile.y, 12, 0.0)
    with Reader(str(path)) as reference:
        expected = reference.tile(tile.x, tile.y, 12, indexes=(1, 2, 3, 4), nodata=0)

    assert image.array.data.tobytes() == expected.array.data.tobytes()


def test_fetch_equals_fetch_many_and_rio_tiler_render(tmp_path, uint16_cog) -> None:
    """Every tile over the COG, alone or in one batch, has the bytes of rio-tiler's tile rendered by render_image.

    The vis params need 4 of the file's 4 bands together and 3 alone, which
    at zooms 10 and 12 gave other pixels when only the needed bands were read.
    """
    catalog = write_catalog(
        tmp_path / "catalog.json", [entry(uint16_cog, bands={"B2": 1, "B3": 2, "B4": 3, "B5": 4, "B6": 2})]
    )
    tiles = footprint_tiles(uint16_cog, zooms=(10, 12, 13, 14))
    vis_names = ("landsat-tvi-true", "landsat-tvi-agri")
    # Two points' lists of tiles overlap: the shared tiles appear twice in the batch.
    first_point = [address(z, x, y, vis_param=name) for z, x, y in tiles for name in vis_names]
    second_point = first_point[: len(first_point) // 2]
    # A year without a catalogued file gives empty tiles.
    missing_year = [address(z, x, y, year=2019) for z, x, y in tiles[:5]]
    addresses = first_point + second_point + missing_year

    batch_source = RasterSource("landsat", {"catalog": str(catalog)})
    single_source = RasterSource("landsat", {"catalog": str(catalog)})
    catalog_entry = next(iter(load_catalog(catalog).values()))
    kinds = {"empty": 0, "image": 0}
    try:
        results = batch_source.fetch_many(addresses)
        with Reader(str(uint16_cog)) as reference:
            for tile_address in addresses:
                batched = results[tile_address]
                assert isinstance(batched, bytes), f"{tile_address}: {batched!r}"
                assert batched == single_source.fetch(tile_address), f"{tile_address}: fetch differs from fetch_many"
                if tile_address.year == 2019:
                    assert batched == render.EMPTY_TILE
                    continue
                vis = get_vis_param(tile_address.vis_param)
                positions = tuple(catalog_entry.bands[name] - 1 for name in vis.bands_for_year(2020))
                try:
                    image = reference.tile(
                        tile_address.x, tile_address.y, tile_address.z, indexes=(1, 2, 3, 4), nodata=0
                    )
                except TileOutsideBounds:
                    expected = render.EMPTY_TILE
                else:
                    expected = render_image(image, positions, catalog_entry, vis)
                assert batched == expected, f"{tile_address}: differs from rio-tiler's tile"
                kinds["empty" if batched == render.EMPTY_TILE else "image"] += 1
    finally:
        batch_source.close()
        single_source.close()

    assert kinds["empty"] > 0
    assert kinds["image"] > 0


def test_band_mapped_to_alpha_raises(tmp_path) -> None:
    pixels = synthetic_pixels(np.uint16, 0)
    pixels[3] = 65535
    path = write_geotiff(tmp_path / "alpha.tif", pixels, crs=UTM_CRS, transform=from_origin(500000, 7200000, 30, 30))
    with rasterio.open(path, "r+") as dataset:
        dataset.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    catalog = write_catalog(tmp_path / "catalog.json", [entry(path, bands={"B2": 1, "B3": 2, "B4": 4})])
    source = RasterSource("landsat", {"catalog": str(catalog)})
    tile = mercantile.tile(*Transformer.from_crs(UTM_CRS, "EPSG:4326", always_xy=True).transform(509000, 7192500), 12)
    try:
        with pytest.raises(SourceError, match="band 4 is an alpha band"):
            source.fetch(address(12, tile.x, tile.y, vis_param="landsat-tvi-true"))
    finally:
        source.close()
