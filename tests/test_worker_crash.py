"""A Celery worker killed in the middle of a run: no point lost, none counted twice, no partial tile.

Point tasks use late acknowledgement with ``reject_on_worker_lost``. When
only a pool child dies, the worker's main process rejects the message with
requeue and the task runs again at once. When the whole worker dies (SIGKILL
of its process group), no process is left to reject the message. The
filesystem broker has already removed the message files it handed out, so
those tasks are lost. Redis keeps them as unacknowledged until the
visibility timeout (CELERY_VISIBILITY_TIMEOUT, 3600 s by default) has passed
and a live worker's sweep puts them back; in kombu 5.7 a worker sweeps when
it starts and about every 100 s. Until then the run waits on points that
nobody executes. ``campaigns.runs.resume_run`` (``cache_campaign --resume``
and the watchdog task) sends them again.

These tests start workers of their own, so they do not use the shared
module-scoped worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from campaigns import runs
from campaigns.models import CachingRun, Point, RunPoint, RunPointState
from tests.conftest import BOTH_DATABASES, VAR_DIR, wait_for_run_end
from tests.runchecks import (
    assert_run_cached_everything,
    finished_points,
    ledger_states,
    producer_mid_point,
    wait_until,
)
from tests.tileaudit import audit_tiles
from tests.workers import running_worker, stop_worker
from tiles.storage import read_tile

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)]

POINTS = 12
TILES_PER_POINT = 3
# Seconds the counting source sleeps per tile, so that a point takes about
# one second and the run is still going when the worker is killed.
TILE_DELAY = "0.3"
TILES_ROOT = VAR_DIR / "tiles"


def point_of_tile(campaign_id: str, key: str) -> str:
    from campaigns.runs import campaign_plan
    from campaigns.models import Campaign
    from tiles.storage import tile_key

    plan = campaign_plan(Campaign.objects.get(pk=campaign_id))
    for point in Point.objects.of_campaign(campaign_id):
        if key in {tile_key(address) for address in plan.addresses_for(point.lon, point.lat)}:
            return point.id
    raise AssertionError(f"No point of campaign {campaign_id} has tile {key}")


def assert_tiles_intact(campaign_id: str) -> None:
    """Every tile of the campaign reads back as a complete PNG, and no partial file is stored under a tile key."""
    audit = audit_tiles(TILES_ROOT)
    assert audit.invalid_tiles == []
    assert audit.other_files == []
    assert len(audit.tiles) == POINTS * TILES_PER_POINT
    for temporary in audit.temporary_files:
        # A temporary file of a killed write is never named like a tile.
        assert not temporary.name.endswith(".png")
    from campaigns.runs import campaign_plan
    from campaigns.models import Campaign

    plan = campaign_plan(Campaign.objects.get(pk=campaign_id))
    for point in Point.objects.of_campaign(campaign_id):
        for address in plan.addresses_for(point.lon, point.lat):
            data = read_tile(address)
            assert data is not None
            assert data.startswith(b"\x89PNG\r\n\x1a\n")


def test_killed_pool_child_task_is_requeued(make_campaign, control_file, capsys):
    from django_celery_results.models import TaskResult

    make_campaign("filho_morto", points=POINTS, spacing=0.5)
    control_file("delay.txt", TILE_DELAY)

    with running_worker(concurrency=2) as worker:
        run = runs.start_run("filho_morto", batch_size=4).run
        wait_until(lambda: finished_points(run.pk) >= 2, 30, "two points of the run finished")
        victim_pid, last_key = producer_mid_point()
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim_point = point_of_tile("filho_morto", last_key)
        run = wait_for_run_end("filho_morto", timeout=90)
        recovered_after = time.monotonic() - killed_at

    with capsys.disabled():
        print(f"\npool child {victim_pid} killed in the middle of point {victim_point}; "
              f"run ended {recovered_after:.1f} s later")
    assert_run_cached_everything(run, "filho_morto", POINTS, TILES_PER_POINT)
    # The killed point task ran again under its own id and finished.
    entry = RunPoint.objects.get(run=run, point_id=victim_point)
    assert TaskResult.objects.get(task_id=entry.task_id).status == "SUCCESS"
    log = Path(worker.log_path).read_text(errors="replace")
    assert "WorkerLostError" in log
    assert_tiles_intact("filho_morto")


def test_killed_worker_run_resumes(make_campaign, control_file, capsys):
    make_campaign("worker_morto", points=POINTS, spacing=0.5)
    control_file("delay.txt", TILE_DELAY)

    with running_worker(concurrency=2) as first:
        run = runs.start_run("worker_morto", batch_size=4).run
        wait_until(lambda: finished_points(run.pk) >= 3, 30, "three points of the run finished")
        producer_mid_point()
        stop_worker(first, kill=True)
    finished_at_kill = finished_points(run.pk)
    states_at_kill = ledger_states(run.pk)

    with running_worker(concurrency=2):
        # Give the new worker the time to take whatever the broker still holds.
        time.sleep(5)
        stalled = CachingRun.objects.get(pk=run.pk)
        with capsys.disabled():
            print(f"\nworker killed after {finished_at_kill} of {POINTS} points, ledger {states_at_kill}; "
                  f"5 s after a new worker started: {stalled.finished_points} finished, state {stalled.state}, "
                  f"ledger {ledger_states(run.pk)}")

        resumed = runs.resume_run(str(run.pk))
        with capsys.disabled():
            print(f"resume_run sent {resumed}")
        run = wait_for_run_end("worker_morto", timeout=90)

    assert_run_cached_everything(run, "worker_morto", POINTS, TILES_PER_POINT)
    assert_tiles_intact("worker_morto")
    assert states_at_kill.get(RunPointState.DISPATCHED, 0) >= 1
