"""A tile store that refuses writes: the point stays not cached, the error is recorded, no partial tile is readable.

Two kinds of fault are used. Real kernel errors come from a small tmpfs
that the test fills up (ENOSPC) or remounts read-only (EROFS). The tests
run as root, so file permissions would not stop a write. Where the kernel
cannot be made to fail one call on demand, a mock raises at the OS
boundary of ``AtomicFileSystemStorage``: ``os.replace``, the call that
publishes a finished tile, and the file write before it.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from django.test import Client

from campaigns import caching, runs
from campaigns.models import Campaign, Point, RunPointState
from tests.conftest import BOTH_DATABASES, VAR_DIR, wait_for_run_end
from tests.fakesources import solid_png
from tests.mounts import fill, free, mount_tmpfs, mount_unavailable_reason, remount, unmount
from tests.runchecks import ledger_states, sent_point_tasks  # noqa: F401 - sent_point_tasks is a fixture
from tests.tileaudit import audit_tiles, snapshot_tiles
from tests.workers import running_worker
from tiles.address import TileAddress
from tiles.errors import StorageError
from tiles.periods import Period
from tiles.seeding import seed_tiles
from tiles.storage import read_tile, tile_key, tile_storage, write_tile

pytestmark = pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)

ADDRESS = TileAddress("landsat", "landsat-tvi-true", Period.DRY, 2020, None, 13, 2940, 4705)
TILES_PER_POINT = 3


def fail_replace(source, destination):
    raise OSError(errno.EIO, "Input/output error")


class HalfWriter:
    """A file object that writes half of the first chunk, then fails as a full disk does."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def tile_folder(address: TileAddress) -> Path:
    return Path(tile_storage().path(tile_key(address))).parent


class TestOsBoundary:
    def test_failed_rename_keeps_old_tile(self, monkeypatch):
        write_tile(ADDRESS, solid_png(1, 2, 3))
        before = read_tile(ADDRESS)

        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", fail_replace)
            with pytest.raises(StorageError, match="Writing tile landsat/.*Input/output error"):
                write_tile(ADDRESS, solid_png(9, 9, 9))

        assert read_tile(ADDRESS) == before
        assert sorted(os.listdir(tile_folder(ADDRESS))) == ["4705.png"]

    def test_failed_rename_of_new_tile(self, monkeypatch):
        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", fail_replace)
            with pytest.raises(StorageError):
                write_tile(ADDRESS, solid_png(9, 9, 9))

        assert read_tile(ADDRESS) is None
        assert os.listdir(tile_folder(ADDRESS)) == []

    def test_half_written_tile_is_removed(self, monkeypatch):
        real_fdopen = os.fdopen

        with monkeypatch.context() as patch:
            patch.setattr(os, "fdopen", lambda descriptor, mode: HalfWriter(real_fdopen(descriptor, mode)))
            with pytest.raises(StorageError, match="No space left on device"):
                write_tile(ADDRESS, solid_png(9, 9, 9))

        assert read_tile(ADDRESS) is None
        assert os.listdir(tile_folder(ADDRESS)) == []

    def test_seeding_counts_refused_writes(self, monkeypatch):
        addresses = [ADDRESS, TileAddress("landsat", "landsat-tvi-true", Period.DRY, 2020, None, 13, 2940, 4706)]

        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", fail_replace)
            outcome = seed_tiles(addresses)

        assert outcome.total == 2
        assert outcome.failed == 2
        assert outcome.stored == 0
        assert isinstance(outcome.first_error, StorageError)
        assert "Input/output error" in outcome.errors[0][1]
        assert audit_tiles(VAR_DIR / "tiles").tiles == []
        assert audit_tiles(VAR_DIR / "tiles").temporary_files == []

    def test_refused_writes_fail_point(self, make_campaign, sent_point_tasks, monkeypatch):
        from campaigns.tasks import record_point_result

        make_campaign("escrita_recusada", points=2, spacing=0.5)
        run = runs.start_run("escrita_recusada", batch_size=1).run
        runs.dispatch(str(run.pk))

        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", fail_replace)
            result = caching.cache_point("1_escrita_recusada", str(run.pk))
        record_point_result.apply(args=[result, str(run.pk)]).get()

        assert result["status"] == "failed"
        assert result["total_tiles"] == TILES_PER_POINT
        assert result["failed_tiles"] == TILES_PER_POINT
        assert result["stored_tiles"] == 0
        assert "Input/output error" in result["error"]
        assert Point.objects.get(pk="1_escrita_recusada").cached is not True
        run.refresh_from_db()
        assert run.failed_points == 1
        assert run.tiles_failed == TILES_PER_POINT
        campaign = Campaign.objects.get(pk="escrita_recusada")
        assert campaign.cached_points == 0
        assert "Point 1_escrita_recusada failed" in campaign.caching_error
        assert "Input/output error" in campaign.caching_error
        assert campaign.caching_error_at is not None
        audit = audit_tiles(VAR_DIR / "tiles")
        assert audit.tiles == []
        assert audit.temporary_files == []


# --- Real full and read-only filesystems -------------------------------------


@pytest.fixture(scope="module")
def tile_mount(tmp_path_factory):
    reason = mount_unavailable_reason()
    if reason:
        pytest.skip(f"cannot mount a tmpfs here ({reason}); the full and read-only store tests need one")
    folder = tmp_path_factory.mktemp("tile-mount")
    mount_tmpfs(folder, "1m")
    yield folder
    unmount(folder)


@pytest.fixture(scope="module")
def mount_worker(tile_mount, django_db_setup, django_db_blocker):
    """A worker whose tile store is the tmpfs."""
    with django_db_blocker.unblock():
        with running_worker(concurrency=2, extra_env={"TILE_STORAGE_ROOT": str(tile_mount)}) as process:
            yield process


@pytest.fixture
def mounted_store(tile_mount, settings) -> Path:
    """The tmpfs, empty and writable, as the tile store of the test process too."""
    remount(tile_mount, read_only=False)
    for entry in tile_mount.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    settings.STORAGES = {**settings.STORAGES, "tiles": {
        "BACKEND": "tiles.storage.AtomicFileSystemStorage", "OPTIONS": {"location": str(tile_mount)}}}
    yield tile_mount
    remount(tile_mount, read_only=False)
    free(tile_mount)


def assert_nothing_partial(store: Path) -> None:
    audit = audit_tiles(store)
    assert audit.invalid_tiles == []
    assert audit.temporary_files == []


@pytest.mark.worker
def test_full_store_fails_points(mounted_store, mount_worker, make_campaign):
    make_campaign("disco_cheio", points=3, spacing=0.5)
    filled = fill(mounted_store)

    runs.start_run("disco_cheio", batch_size=3)
    run = wait_for_run_end("disco_cheio", timeout=60)

    assert filled > 0
    assert run.state == "failed"
    assert run.failed_points == 3
    assert run.tiles_failed == 3 * TILES_PER_POINT
    assert run.tiles_stored == 0
    assert ledger_states(run.pk) == {RunPointState.FAILED: 3}
    assert Point.objects.of_campaign("disco_cheio").is_cached().count() == 0
    campaign = Campaign.objects.get(pk="disco_cheio")
    assert campaign.cached_points == 0
    assert "No space left on device" in campaign.caching_error
    assert "_disco_cheio failed" in campaign.caching_error
    assert audit_tiles(mounted_store).tiles == []
    assert_nothing_partial(mounted_store)

    free(mounted_store)
    runs.start_run("disco_cheio", batch_size=3)
    second = wait_for_run_end("disco_cheio", timeout=60)

    assert second.state == "completed"
    assert second.succeeded_points == 3
    assert Campaign.objects.get(pk="disco_cheio").cached_points == 3
    assert len(audit_tiles(mounted_store).tiles) == 3 * TILES_PER_POINT
    assert_nothing_partial(mounted_store)


@pytest.mark.worker
def test_read_only_store_fails_points(mounted_store, mount_worker, make_campaign):
    make_campaign("somente_leitura", points=3, spacing=0.5, cached=0)
    runs.start_run("somente_leitura", batch_size=3)
    assert wait_for_run_end("somente_leitura", timeout=60).state == "completed"
    stored = snapshot_tiles(mounted_store)
    Point.objects.filter(pk="3_somente_leitura").update(cached=None)
    Point.objects.create(id="4_somente_leitura", campaign_id="somente_leitura", lon=-50.0, lat=-20.0)
    remount(mounted_store, read_only=True)

    runs.start_run("somente_leitura", batch_size=3)
    run = wait_for_run_end("somente_leitura", timeout=60)

    # Point 3's tiles are still stored and readable; point 4 has none and cannot get any.
    assert run.state == "failed"
    assert run.points_to_cache == 2
    assert run.succeeded_points == 1
    assert run.failed_points == 1
    assert run.tiles_skipped == TILES_PER_POINT
    assert run.tiles_failed == TILES_PER_POINT
    assert Point.objects.get(pk="3_somente_leitura").cached is True
    assert Point.objects.get(pk="4_somente_leitura").cached is not True
    campaign = Campaign.objects.get(pk="somente_leitura")
    assert campaign.cached_points == 3
    assert "Point 4_somente_leitura failed" in campaign.caching_error
    assert "Read-only file system" in campaign.caching_error
    assert snapshot_tiles(mounted_store) == stored
    assert_nothing_partial(mounted_store)

    client = Client()
    served = client.get("/api/layers/landsat/2940/4705/13?period=DRY&year=2020&visparam=landsat-tvi-true")
    assert served.status_code == 503
    assert served["Cache-Control"] == "no-store"
    assert served["X-Error-Reason"] == "storage_unavailable"
    assert "Read-only file system" in served.json()["message"]

    remount(mounted_store, read_only=False)
    runs.start_run("somente_leitura", batch_size=3)
    second = wait_for_run_end("somente_leitura", timeout=60)

    assert second.state == "completed"
    assert second.points_to_cache == 1
    assert Campaign.objects.get(pk="somente_leitura").cached_points == 4
    assert len(audit_tiles(mounted_store).tiles) == 4 * TILES_PER_POINT
    assert_nothing_partial(mounted_store)
