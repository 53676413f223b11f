"""Exceptions of the tile layer, with a flag for whether a retry can help."""

from __future__ import annotations


class TileError(Exception):
    """Base class of every tile error."""

    transient = False


class InvalidTileRequest(TileError, ValueError):
    """A tile address or plan value outside what the service accepts."""


class NotCacheable(TileError):
    """A campaign whose imagery this service cannot cache (Planet, WMS)."""


class SourceError(TileError):
    """A tile source failed to produce a tile."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


class SourceTimeout(SourceError):
    def __init__(self, message: str):
        super().__init__(message, transient=True)


class StorageError(TileError):
    """Writing or reading a stored tile failed."""
