"""Band math, gamma and PNG encoding of 256x256 RGBA tiles."""

from __future__ import annotations

import functools
import io
import zlib

import numpy as np
from PIL import Image

from tiles.visparams import VisParam

TILE_SIZE = 256
# PNG settings of rendered tiles. The Z_RLE strategy looks only for runs of
# equal bytes, which is most of what PNG's row filters leave of imagery. On
# the Landsat tiles of benchmarks/bench_raster_rendering.py (Pillow 13.0) it
# encodes about 3.5 times faster than level 6 with the default strategy, and
# the files are about 6 % smaller; BENCHMARKS.md lists the other settings.
PNG_COMPRESS_LEVEL = 6
PNG_ZLIB_STRATEGY = zlib.Z_RLE
# Integer rasters whose band values all fit a table of this many entries
# (uint8 and uint16) are stretched through a lookup table.
MAX_TABLE_SIZE = 1 << 16


def _encode(rgba: np.ndarray, compress_level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=compress_level, compress_type=strategy)
    return buffer.getvalue()


# Every tile without imagery is this one fully transparent PNG, byte for byte,
# so blank tiles are cheap to recognise and to deduplicate.
EMPTY_TILE = _encode(np.zeros((TILE_SIZE, TILE_SIZE, 4), dtype=np.uint8), compress_level=9)


def is_empty_tile(data: bytes) -> bool:
    return data == EMPTY_TILE


def stretch(values: np.ndarray, vis: VisParam) -> np.ndarray:
    """Map band values (3, H, W) to 0..255 with the vis param's min, max and gamma.

    Each band is scaled linearly so that ``min`` becomes 0 and ``max`` 1,
    clipped to 0..1, raised to ``1 / gamma`` and scaled to 0..255 with
    rounding.
    """
    return _stretch(values, vis.minimum, vis.maximum, vis.gamma)


def _stretch(
    values: np.ndarray, minimum: tuple[float, ...], maximum: tuple[float, ...], gamma: float
) -> np.ndarray:
    low = np.asarray(minimum, dtype=np.float32).reshape(3, 1, 1)
    high = np.asarray(maximum, dtype=np.float32).reshape(3, 1, 1)
    scaled = (values.astype(np.float32) - low) / (high - low)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    if gamma != 1.0:
        np.power(scaled, np.float32(1.0 / gamma), out=scaled)
    return np.rint(scaled * 255.0).astype(np.uint8)


def stretch_table(vis: VisParam, scale: float, offset: float, size: int) -> np.ndarray:
    """Return a (3, size) uint8 table whose entry [band, n] is the stretched value of digital number n.

    A digital number ``n`` becomes the value ``n * scale + offset`` in
    float32 and is stretched with ``stretch``, so looking a number up gives
    the byte that rendering it directly gives.
    """
    if not 1 <= size <= MAX_TABLE_SIZE:
        raise ValueError(f"Invalid stretch table size {size}; use 1 to {MAX_TABLE_SIZE}.")
    return _stretch_table(vis.minimum, vis.maximum, vis.gamma, float(scale), float(offset), size)


@functools.lru_cache(maxsize=64)
def _stretch_table(
    minimum: tuple[float, ...], maximum: tuple[float, ...], gamma: float, scale: float, offset: float, size: int
) -> np.ndarray:
    numbers = np.arange(size, dtype=np.float32)
    values = numbers * np.float32(scale) + np.float32(offset)
    table = _stretch(np.broadcast_to(values, (3, 1, size)), minimum, maximum, gamma).reshape(3, size)
    table.flags.writeable = False
    return table


def render_rgba(values: np.ndarray, valid: np.ndarray, vis: VisParam) -> np.ndarray:
    """Return an (H, W, 4) uint8 image; pixels where ``valid`` is False are transparent."""
    rgb = stretch(values, vis)
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    rgb = np.where(valid[np.newaxis, :, :], rgb, 0).astype(np.uint8)
    return np.dstack([rgb[0], rgb[1], rgb[2], alpha])


def render_rgba_from_table(numbers: np.ndarray, valid: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Return the (H, W, 4) uint8 image of integer band values (3, H, W) looked up in a ``stretch_table``.

    The image equals ``render_rgba`` of the values the table was built
    from: pixels where ``valid`` is False are transparent black.
    """
    height, width = valid.shape
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    for channel in range(3):
        rgba[:, :, channel] = table[channel][numbers[channel]]
    rgba[:, :, 3] = valid
    rgba[:, :, 3] *= 255
    if not valid.all():
        rgba[~valid, :3] = 0
    return rgba


def encode_tile(rgba: np.ndarray) -> bytes:
    """Encode an RGBA tile as PNG, returning ``EMPTY_TILE`` when no pixel is visible."""
    if not rgba[:, :, 3].any():
        return EMPTY_TILE
    return _encode(rgba, PNG_COMPRESS_LEVEL, PNG_ZLIB_STRATEGY)
