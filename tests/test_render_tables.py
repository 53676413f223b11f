"""Stretching integer bands through lookup tables, and the PNG settings of rendered tiles."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiles import render
from tiles.periods import Period
from tiles.sources.raster import render_image
from tiles.sources.raster_catalog import CatalogEntry
from tiles.visparams import get_vis_param

# (vis param, scale, offset): Landsat Level-1 digital numbers to reflectance,
# and Sentinel-2 digital numbers used as they are.
TABLE_CASES = [
    ("landsat-tvi-true", 2e-5, -0.1),
    ("landsat-toa-true", 2e-5, -0.1),
    ("landsat-tvi-agri", 2.75e-5, -0.2),
    ("tvi-rgb", 1.0, 0.0),
]


def random_bands(dtype: type, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (3, 256, 256) integers over the dtype's whole range and a mask with about 10 % invalid pixels."""
    generator = np.random.default_rng(seed)
    numbers = generator.integers(0, np.iinfo(dtype).max, size=(3, 256, 256), endpoint=True, dtype=dtype)
    valid = generator.random((256, 256)) > 0.1
    return numbers, valid


@pytest.mark.parametrize(("vis_name", "scale", "offset"), TABLE_CASES)
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_table_render_equals_direct_render(vis_name, scale, offset, dtype) -> None:
    vis = get_vis_param(vis_name)
    numbers, valid = random_bands(dtype, seed=sum(vis_name.encode()) + np.iinfo(dtype).bits)
    table = render.stretch_table(vis, scale, offset, np.iinfo(dtype).max + 1)

    looked_up = render.render_rgba_from_table(numbers, valid, table)

    values = numbers.astype(np.float32) * np.float32(scale) + np.float32(offset)
    direct = render.render_rgba(values, valid, vis)
    assert looked_up.dtype == np.uint8
    assert looked_up.shape == (256, 256, 4)
    assert np.array_equal(looked_up, direct)


def test_table_render_all_valid_and_all_invalid() -> None:
    vis = get_vis_param("landsat-tvi-true")
    numbers, _valid = random_bands(np.uint16, seed=7)
    table = render.stretch_table(vis, 2e-5, -0.1, 1 << 16)

    opaque = render.render_rgba_from_table(numbers, np.ones((256, 256), dtype=bool), table)
    transparent = render.render_rgba_from_table(numbers, np.zeros((256, 256), dtype=bool), table)

    assert (opaque[:, :, 3] == 255).all()
    assert not transparent.any()


def test_table_reused_for_same_vis_param() -> None:
    vis = get_vis_param("landsat-tvi-true")

    first = render.stretch_table(vis, 2e-5, -0.1, 1 << 16)
    second = render.stretch_table(vis, 2e-5, -0.1, 1 << 16)

    assert first is second
    assert not first.flags.writeable


@pytest.mark.parametrize("size", [0, (1 << 16) + 1])
def test_table_size_out_of_range_rejected(size) -> None:
    with pytest.raises(ValueError, match="Invalid stretch table size"):
        render.stretch_table(get_vis_param("landsat-tvi-true"), 1.0, 0.0, size)


def catalog_entry(scale: float, offset: float) -> CatalogEntry:
    return CatalogEntry(
        layer="landsat", year=2020, period=Period.DRY, month=None, path="unused.tif",
        bands={"B2": 1, "B3": 2, "B4": 3}, scale=scale, offset=offset, nodata=0,
        index=0, catalog=Path("unused-catalog.json"),
    )


class FakeImage:
    """The part of rio-tiler's ImageData that ``render_image`` reads: a masked (bands, H, W) array."""

    def __init__(self, array: np.ma.MaskedArray):
        self.array = array


@pytest.mark.parametrize("positions", [(0, 1, 2), (2, 1, 0)])
def test_render_image_integer_and_float_same_bytes(positions) -> None:
    vis = get_vis_param("landsat-toa-true")
    numbers, valid = random_bands(np.uint16, seed=11)
    # The image carries nodata in its mask, per band, as rio-tiler returns it.
    mask = np.broadcast_to(~valid, numbers.shape)
    integer_image = FakeImage(np.ma.MaskedArray(numbers, mask=mask))
    float_image = FakeImage(np.ma.MaskedArray(numbers.astype(np.float32), mask=mask))
    entry = catalog_entry(2e-5, -0.1)

    from_table = render_image(integer_image, positions, entry, vis)
    from_values = render_image(float_image, positions, entry, vis)

    assert from_table == from_values
    decoded = np.asarray(Image.open(io.BytesIO(from_table)))
    assert ((decoded[:, :, 3] == 255) == valid).all()


def test_render_image_all_masked_is_empty_tile() -> None:
    numbers = np.ones((3, 256, 256), dtype=np.uint16)
    image = FakeImage(np.ma.MaskedArray(numbers, mask=np.ones_like(numbers, dtype=bool)))

    assert render_image(image, (0, 1, 2), catalog_entry(2e-5, -0.1), get_vis_param("landsat-toa-true")) == render.EMPTY_TILE


def test_encoded_tile_is_lossless_rgba_png() -> None:
    numbers, valid = random_bands(np.uint8, seed=3)
    rgba = np.dstack([numbers[0], numbers[1], numbers[2], np.where(valid, 255, 0).astype(np.uint8)])

    data = render.encode_tile(rgba)

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.mode == "RGBA"
        assert np.array_equal(np.asarray(image), rgba)


def test_empty_tile_unchanged_by_encoder_settings() -> None:
    # Stored blank tiles are empty files that read back as EMPTY_TILE, so it
    # must stay one fully transparent 256 x 256 PNG whatever the settings of image tiles.
    with Image.open(io.BytesIO(render.EMPTY_TILE)) as image:
        pixels = np.asarray(image)
    assert pixels.shape == (256, 256, 4)
    assert not pixels.any()
    assert render.encode_tile(np.zeros((256, 256, 4), dtype=np.uint8)) == render.EMPTY_TILE
