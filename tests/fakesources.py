"""Tile sources for tests: fast, deterministic, and countable across processes."""

from __future__ import annotations

import io
import os
import time

from PIL import Image

from tiles.address import TileAddress
from tiles.errors import SourceError
from tiles.sources.base import TileSource
from tiles.storage import tile_key


def solid_png(red: int, green: int, blue: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (256, 256), (red, green, blue, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


class CountingSource(TileSource):
    """Returns a solid tile whose colour encodes z, x and y.

    Config keys: ``log`` (a file that gets one line per produced tile, so a
    test counts production across worker processes) and ``control_dir``, a
    folder where a test may write ``fail-keys.txt`` (tile keys that fail) and
    ``delay.txt`` (seconds to sleep per tile), read on every fetch.
    """

    def _control(self, name: str) -> str:
        folder = self.config.get("control_dir")
        if not folder:
            return ""
        try:
            with open(os.path.join(folder, name)) as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def fetch(self, address: TileAddress) -> bytes:
        delay = self._control("delay.txt").strip()
        if delay:
            time.sleep(float(delay))
        key = tile_key(address)
        if key in self._control("fail-keys.txt").split():
            raise SourceError(f"injected failure for {key}")
        log = self.config.get("log")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{key} {os.getpid()}\n")
        return solid_png(address.z * 10 % 256, address.x % 256, address.y % 256)
