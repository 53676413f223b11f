"""Small tmpfs mounts that tests fill up or make read-only, to get real ENOSPC and EROFS errors.

The tests run as root, so file permissions do not stop a write; only the
kernel refusing it (a full or read-only filesystem) does. Mounting needs
CAP_SYS_ADMIN. ``mount_unavailable_reason`` returns why a sandbox cannot mount.
"""

from __future__ import annotations

import errno
import subprocess
import tempfile
from pathlib import Path

FILLER_NAME = "filler.bin"


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=30)


def mount_unavailable_reason() -> str | None:
    """Return why a tmpfs cannot be mounted here, or None when it can."""
    with tempfile.TemporaryDirectory(prefix="mount-probe-") as folder:
        try:
            mounted = _run("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", folder)
        except FileNotFoundError:
            return "the mount command is not installed"
        if mounted.returncode != 0:
            return f"mount -t tmpfs failed: {mounted.stderr.strip() or mounted.returncode}"
        _run("umount", folder)
    return None


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    if result.returncode != 0:
        raise RuntimeError(f"Mounting a tmpfs on {folder} failed: {result.stderr.strip()}")


def unmount(folder: Path) -> None:
    # A lazy unmount succeeds even while a killed worker's files are still open.
    _run("umount", "-l", str(folder))


def remount(folder: Path, *, read_only: bool) -> None:
    result = _run("mount", "-o", f"remount,{'ro' if read_only else 'rw'}", str(folder))
    if result.returncode != 0:
        raise RuntimeError(f"Remounting {folder} {'read-only' if read_only else 'read-write'} failed: "
                           f"{result.stderr.strip()}")


def fill(folder: Path, max_bytes: int = 64 * 1024 * 1024) -> int:
    """Write zeros to a filler file until the filesystem is full; return the bytes written.

    Raises ``RuntimeError`` past ``max_bytes``, so a folder that is not the
    small tmpfs it should be never fills a real disk.
    """
    written = 0
    block = b"\0" * 4096
    with open(folder / FILLER_NAME, "wb", buffering=0) as handle:
        while written <= max_bytes:
            try:
                written += handle.write(block)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                return written
    (folder / FILLER_NAME).unlink()
    raise RuntimeError(f"{folder} took more than {max_bytes} bytes without filling up; is it the tmpfs?")


def free(folder: Path) -> None:
    (folder / FILLER_NAME).unlink(missing_ok=True)
