"""The tile-source interface and the per-layer registry built from settings."""

from __future__ import annotations

import abc
import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from tiles.address import TileAddress

SOURCE_KINDS = {
    "raster": "tiles.sources.raster.RasterSource",
    "xyz": "tiles.sources.xyz.XYZSource",
}


class TileSource(abc.ABC):
    """Produces the PNG bytes of one tile.

    ``fetch`` returns ``render.EMPTY_TILE`` when the source has no imagery for
    the tile, and raises ``tiles.errors.SourceError`` (``transient`` set when a
    retry can help) when it fails.
    """

    def __init__(self, layer: str, config: dict):
        self.layer = layer
        self.config = config

    @abc.abstractmethod
    def fetch(self, address: TileAddress) -> bytes: ...

    def fetch_many(self, addresses: list[TileAddress]) -> dict[TileAddress, bytes | Exception]:
        """Produce several tiles; sources that can share work between tiles override this."""
        results: dict[TileAddress, bytes | Exception] = {}
        for address in addresses:
            try:
                results[address] = self.fetch(address)
            except Exception as error:  # noqa: BLE001 - returned to the caller, which counts and records it
                results[address] = error
        return results

    def close(self) -> None:
        """Release open files or connections."""


_sources: dict[str, TileSource] = {}
_lock = threading.Lock()


def get_source(layer: str) -> TileSource:
    """Return the process-wide source configured for a layer."""
    with _lock:
        source = _sources.get(layer)
        if source is None:
            config = settings.TILE_SOURCES.get(layer)
            if config is None:
                raise ImproperlyConfigured(
                    f"No tile source is configured for layer {layer!r}; add it to TILE_SOURCES."
                )
            kind = config.get("kind")
            if "class" in config:
                # A source class of the deployment's own, named by dotted path.
                source = import_string(config["class"])(layer, config)
            elif kind not in SOURCE_KINDS:
                raise ImproperlyConfigured(
                    f"Tile source kind {kind!r} of layer {layer!r} is unknown; use one of {', '.join(SOURCE_KINDS)}."
                )
            else:
                source = import_string(SOURCE_KINDS[kind])(layer, config)
            _sources[layer] = source
        return source


def reset_sources() -> None:
    """Forget every source, so changed settings take effect (tests, reloads)."""
    with _lock:
        for source in _sources.values():
            source.close()
        _sources.clear()
