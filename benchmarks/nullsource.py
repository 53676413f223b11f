"""A tile source that costs nothing, for measuring the pipeline's own overhead."""

from __future__ import annotations

import io

from PIL import Image

from tiles.address import TileAddress
from tiles.sources.base import TileSource


def _one_tile() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (256, 256), (40, 120, 60, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


TILE = _one_tile()


class NullSource(TileSource):
    """Returns the same small opaque PNG for every tile, at once."""

    def fetch(self, address: TileAddress) -> bytes:
        return TILE
