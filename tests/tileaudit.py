"""Inspect a tile folder after a fault: every stored tile must be a complete PNG or an empty file."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The IEND chunk: zero length, type, CRC. A complete PNG ends with these 12 bytes.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
TEMPORARY_PREFIX = ".tmp-"
TEMPORARY_SUFFIX = ".part"


def is_complete_png(data: bytes) -> bool:
    if not data.startswith(PNG_SIGNATURE) or not data.endswith(PNG_END):
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


@dataclass
class TileAudit:
    tiles: list[Path] = field(default_factory=list)
    empty_tiles: list[Path] = field(default_factory=list)
    invalid_tiles: list[Path] = field(default_factory=list)
    temporary_files: list[Path] = field(default_factory=list)
    other_files: list[Path] = field(default_factory=list)


def audit_tiles(root: Path) -> TileAudit:
    """Sort every file under ``root`` into tiles (valid, empty or invalid), temporary files and others."""
    audit = TileAudit()
    if not root.exists():
        return audit
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX):
                audit.temporary_files.append(path)
            elif name.endswith(".png"):
                audit.tiles.append(path)
                data = path.read_bytes()
                if not data:
                    audit.empty_tiles.append(path)
                elif not is_complete_png(data):
                    audit.invalid_tiles.append(path)
            else:
                audit.other_files.append(path)
    return audit


@dataclass(frozen=True)
class StoredFile:
    """What identifies one write of a file: a rewrite through a temporary file changes the inode."""

    inode: int
    modified_ns: int
    data: bytes


def snapshot_tiles(root: Path) -> dict[str, StoredFile]:
    """Return every stored tile under ``root`` by its key, with its inode, modification time and bytes."""
    snapshot: dict[str, StoredFile] = {}
    for path in audit_tiles(root).tiles:
        status = path.stat()
        snapshot[path.relative_to(root).as_posix()] = StoredFile(status.st_ino, status.st_mtime_ns, path.read_bytes())
    return snapshot
