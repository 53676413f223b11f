"""Tile sources: where a tile's pixels come from, chosen per layer in settings."""

from tiles.sources.base import TileSource, get_source, reset_sources

__all__ = ["TileSource", "get_source", "reset_sources"]
