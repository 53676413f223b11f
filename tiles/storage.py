"""Tile keys and atomic tile writes through Django's storage API.

``tile_key`` is the one function that names a stored tile; the caching run
and the tile endpoint both call it, so a tile cached by one is found by the
other. A tile without imagery is stored as an empty file: the transparent
PNG every such tile would be is never stored twice, and reading an empty
file returns it.
"""

from __future__ import annotations

import os
import tempfile

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage, storages

from tiles.address import TileAddress
from tiles.errors import StorageError
from tiles.periods import Period
from tiles.render import EMPTY_TILE


def tile_key(address: TileAddress) -> str:
    """Return the storage key of a tile, e.g. ``landsat/landsat-tvi-true/DRY/2020/13/2940/4705.png``."""
    year_part = str(address.year)
    if address.period is Period.MONTH:
        year_part = f"{address.year}-{address.month:02d}"
    return (
        f"{address.layer}/{address.vis_param}/{address.period.value}/{year_part}/"
        f"{address.z}/{address.x}/{address.y}.png"
    )


def tile_storage() -> Storage:
    return storages["tiles"]


def tile_exists(address: TileAddress) -> bool:
    return tile_storage().exists(tile_key(address))


def read_tile(address: TileAddress) -> bytes | None:
    """Return a stored tile's bytes, or None when it is not stored."""
    storage = tile_storage()
    try:
        with storage.open(tile_key(address), "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StorageError(f"Reading tile {tile_key(address)} failed: {error}") from error
    return data or EMPTY_TILE


def write_tile(address: TileAddress, data: bytes) -> str:
    """Store a tile under its key, replacing any older copy; return the key."""
    key = tile_key(address)
    content = b"" if data == EMPTY_TILE else data
    try:
        saved = tile_storage().save(key, ContentFile(content))
    except OSError as error:
        raise StorageError(f"Writing tile {key} failed: {error}") from error
    if saved != key:
        raise StorageError(f"Tile storage saved {key} as {saved}; configure it to overwrite existing files.")
    return key


class AtomicFileSystemStorage(FileSystemStorage):
    """Filesystem storage whose writes are atomic and replace existing files.

    Each file is written to a temporary file in the destination folder and
    renamed over the final name, so a reader sees the old file or the whole
    new one, never a partial write, and a killed process leaves at most a
    temporary file that no key points to. The file is not fsynced: after a
    power loss a tile may be lost, which the next run writes again.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_overwrite", True)
        super().__init__(*args, **kwargs)

    def _save(self, name, content):
        full_path = self.path(name)
        directory = os.path.dirname(full_path)
        os.makedirs(directory, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=directory)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                for chunk in content.chunks():
                    handle.write(chunk)
            os.chmod(temporary, self.file_permissions_mode or 0o644)
            os.replace(temporary, full_path)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise
        return str(name).replace("\\", "/")
