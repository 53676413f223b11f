"""Tile keys and atomic writes on the filesystem storage."""

from __future__ import annotations

import os

import pytest

from tiles.address import TileAddress
from tiles.errors import InvalidTileRequest, StorageError
from tiles.periods import Period
from tiles.render import EMPTY_TILE
from tiles.storage import read_tile, tile_exists, tile_key, tile_storage, write_tile
from tests.fakesources import solid_png

ADDRESS = TileAddress("landsat", "landsat-tvi-true", Period.DRY, 2020, None, 13, 2940, 4705)


def test_key_of_dry_tile():
    assert tile_key(ADDRESS) == "landsat/landsat-tvi-true/DRY/2020/13/2940/4705.png"


def test_key_of_month_tile():
    address = TileAddress("sentinel", "tvi-rgb", Period.MONTH, 2021, 3, 12, 1, 2)

    assert tile_key(address) == "sentinel/tvi-rgb/MONTH/2021-03/12/1/2.png"


def test_write_then_read():
    data = solid_png(10, 20, 30)

    key = write_tile(ADDRESS, data)

    assert key == tile_key(ADDRESS)
    assert tile_exists(ADDRESS)
    assert read_tile(ADDRESS) == data


def test_write_replaces_and_leaves_no_temporary_file():
    write_tile(ADDRESS, solid_png(1, 1, 1))
    newer = solid_png(2, 2, 2)

    write_tile(ADDRESS, newer)

    assert read_tile(ADDRESS) == newer
    folder = os.path.dirname(tile_storage().path(tile_key(ADDRESS)))
    assert sorted(os.listdir(folder)) == ["4705.png"]


def test_blank_tile_is_stored_as_empty_file():
    write_tile(ADDRESS, EMPTY_TILE)

    assert os.path.getsize(tile_storage().path(tile_key(ADDRESS))) == 0
    assert read_tile(ADDRESS) == EMPTY_TILE


def test_missing_tile_reads_as_none():
    assert read_tile(ADDRESS) is None
    assert not tile_exists(ADDRESS)


def test_unwritable_location_is_a_storage_error(tmp_path, settings):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings.STORAGES = {**settings.STORAGES, "tiles": {
        "BACKEND": "tiles.storage.AtomicFileSystemStorage", "OPTIONS": {"location": str(blocker)}}}

    with pytest.raises(StorageError, match="Writing tile landsat/"):
        write_tile(ADDRESS, solid_png(1, 2, 3))
    assert not tile_exists(ADDRESS)


@pytest.mark.parametrize(
    "fields,fragment",
    [
        ({"z": 23}, "zoom"),
        ({"x": 8192}, "x 8192"),
        ({"y": -1}, "y -1"),
        ({"x": "1/../../"}, "x"),
        ({"layer": "../etc"}, "layer"),
        ({"vis_param": "a/b"}, "vis param"),
        ({"period": "../DRY"}, "period"),
        ({"year": "2020/.."}, "year"),
    ],
)
def test_address_validation_rejects_path_like_values(fields, fragment):
    values = {"layer": "landsat", "vis_param": "landsat-tvi-true", "period": "DRY", "year": 2020,
              "month": None, "z": 13, "x": 2940, "y": 4705}
    values.update(fields)

    with pytest.raises(InvalidTileRequest, match=fragment):
        TileAddress.validated(**values)
