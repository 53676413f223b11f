"""Produce and store a list of tiles, skipping those already stored."""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from tiles.address import TileAddress
from tiles.errors import StorageError, TileError
from tiles.locks import tile_locks
from tiles.sources import get_source
from tiles.storage import tile_exists, tile_key, tile_storage, write_tile

logger = logging.getLogger(__name__)


@dataclass
class SeedOutcome:
    total: int = 0
    stored: int = 0
    skipped: int = 0
    failed: int = 0
    # Up to a few (key, message) pairs of failed tiles, for the operator.
    errors: list[tuple[str, str]] = field(default_factory=list)
    # The exception of the first failed tile, when there was one.
    first_error: Exception | None = None

    @property
    def successful(self) -> int:
        return self.stored + self.skipped

    def add_error(self, key: str, message: str, error: Exception | None = None) -> None:
        self.failed += 1
        if self.first_error is None and error is not None:
            self.first_error = error
        if len(self.errors) < 5:
            self.errors.append((key, message))

    def error_summary(self) -> str:
        if not self.errors:
            return ""
        key, message = self.errors[0]
        more = f" (and {self.failed - 1} more failed tiles)" if self.failed > 1 else ""
        return f"{key}: {message}{more}"


def _is_stored(address: TileAddress, refresh_before: datetime | None) -> bool:
    """Return whether a tile is stored, counting a tile written before ``refresh_before`` as not stored."""
    if not tile_exists(address):
        return False
    if refresh_before is None:
        return True
    try:
        written_at = tile_storage().get_modified_time(tile_key(address))
    except FileNotFoundError:
        return False
    return written_at >= refresh_before


def seed_tiles(addresses: list[TileAddress], *, refresh_before: datetime | None = None) -> SeedOutcome:
    """Store every address that is not stored yet; never raises for one tile's failure.

    With ``refresh_before``, a tile whose storage modification time is
    before that moment counts as not stored, so it is produced again and
    replaced.
    """
    outcome = SeedOutcome(total=len(addresses))
    missing: dict[str, list[TileAddress]] = defaultdict(list)
    for address in addresses:
        try:
            if _is_stored(address, refresh_before):
                outcome.skipped += 1
                continue
        except OSError as error:
            outcome.add_error(tile_key(address), f"checking storage failed: {error}", StorageError(str(error)))
            continue
        missing[address.layer].append(address)

    for layer, layer_addresses in missing.items():
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(tile_locks(tile_key(address) for address in layer_addresses))
            except (OSError, TileError) as error:
                for address in layer_addresses:
                    outcome.add_error(tile_key(address), f"locking failed: {error}", error)
                continue
            # Another worker may have stored some of these while this one
            # waited for their locks.
            still_missing = []
            for address in layer_addresses:
                if _is_stored(address, refresh_before):
                    outcome.skipped += 1
                else:
                    still_missing.append(address)
            if still_missing:
                _produce(layer, still_missing, outcome)
    return outcome


def _produce(layer: str, addresses: list[TileAddress], outcome: SeedOutcome) -> None:
    try:
        source = get_source(layer)
    except Exception as error:  # noqa: BLE001 - a misconfigured layer fails its tiles, not the worker
        for address in addresses:
            outcome.add_error(tile_key(address), str(error), error)
        return
    results = source.fetch_many(addresses)
    for address in addresses:
        result = results.get(address)
        key = tile_key(address)
        if isinstance(result, bytes):
            try:
                write_tile(address, result)
                outcome.stored += 1
            except StorageError as error:
                outcome.add_error(key, str(error), error)
        elif isinstance(result, TileError):
            outcome.add_error(key, str(result), result)
        else:
            logger.error("Tile %s failed unexpectedly: %r", key, result)
            outcome.add_error(key, f"unexpected error: {result!r}", result if isinstance(result, Exception) else None)
