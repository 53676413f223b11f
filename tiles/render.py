"""Band math, gamma and PNG encoding of 256x256 RGBA tiles."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tiles.visparams import VisParam

TILE_SIZE = 256


def _encode(rgba: np.ndarray, compress_level: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=compress_level)
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
    low = np.asarray(vis.minimum, dtype=np.float32).reshape(3, 1, 1)
    high = np.asarray(vis.maximum, dtype=np.float32).reshape(3, 1, 1)
    scaled = (values.astype(np.float32) - low) / (high - low)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    if vis.gamma != 1.0:
        np.power(scaled, np.float32(1.0 / vis.gamma), out=scaled)
    return np.rint(scaled * 255.0).astype(np.uint8)


def render_rgba(values: np.ndarray, valid: np.ndarray, vis: VisParam) -> np.ndarray:
    """Return an (H, W, 4) uint8 image; pixels where ``valid`` is False are transparent."""
    rgb = stretch(values, vis)
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    rgb = np.where(valid[np.newaxis, :, :], rgb, 0).astype(np.uint8)
    return np.dstack([rgb[0], rgb[1], rgb[2], alpha])


def encode_tile(rgba: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode an RGBA tile as PNG, returning ``EMPTY_TILE`` when no pixel is visible."""
    if not rgba[:, :, 3].any():
        return EMPTY_TILE
    return _encode(rgba, compress_level)
