"""Waiting for a run's progress and checking that its counts are exact, for the fault tests."""

from __future__ import annotations

import time
from typing import Callable

import pytest

from campaigns import tasks

from campaigns.models import CachingRun, Campaign, Point, RunPoint, RunPointState


def wait_until(condition: Callable[[], bool], timeout: float, description: str, interval: float = 0.05) -> float:
    """Poll ``condition`` until it holds; return the seconds it took, or fail the test naming ``description``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if condition():
            return time.monotonic() - began
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout} s waiting until {description}")


def wait_for_run_id_end(run_id, timeout: float) -> CachingRun:
    """Wait until the run has ended and its campaign's caching flag is cleared, which happens right after."""

    def ended() -> bool:
        run = CachingRun.objects.get(pk=run_id)
        flagged = Campaign.objects.filter(pk=run.campaign_id, caching_in_progress=True).exists()
        return not run.is_active and not flagged

    wait_until(ended, timeout, f"run {run_id} ended and its campaign's flag was cleared")
    return CachingRun.objects.get(pk=run_id)


def finished_points(run_id) -> int:
    return CachingRun.objects.values_list("finished_points", flat=True).get(pk=run_id)


def ledger_states(run_id) -> dict[str, int]:
    """Return how many of the run's points are in each ledger state."""
    counts: dict[str, int] = {}
    for state in RunPoint.objects.filter(run_id=run_id).values_list("state", flat=True):
        counts[state] = counts.get(state, 0) + 1
    return counts


def assert_run_cached_everything(run: CachingRun, campaign_id: str, points: int, tiles_per_point: int) -> None:
    """Check a completed run against its campaign: every point counted once, every tile accounted for."""
    assert run.state == "completed", run.last_error
    assert run.points_to_cache == points
    assert run.finished_points == points
    assert run.succeeded_points == points
    assert run.failed_points == 0
    assert run.tiles_failed == 0
    assert run.tiles_stored + run.tiles_skipped == points * tiles_per_point
    assert ledger_states(run.pk) == {RunPointState.SUCCEEDED: points}
    campaign = Campaign.objects.get(pk=campaign_id)
    assert campaign.caching_in_progress is False
    assert campaign.total_points == points
    assert campaign.cached_points == points
    assert campaign.cache_percentage == 100.0
    assert campaign.all_points_cached is True
    assert Point.objects.of_campaign(campaign_id).is_cached().count() == points


def producer_mid_point(tiles_per_point: int = 3, timeout: float = 30.0) -> tuple[int, str]:
    """Return a worker process that is in the middle of a point, and the last tile key it produced.

    The counting source logs each tile with the producing process's id. A
    point's tiles are produced one after the other by one process, so a
    process with only part of its current point's tiles logged is still
    producing the next one. Points must share no tile for this to hold.
    """
    from tests.conftest import PRODUCED_LOG

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line.split() for line in PRODUCED_LOG.read_text().splitlines()] if PRODUCED_LOG.exists() else []
        per_process: dict[str, list[str]] = {}
        for key, pid in lines:
            per_process.setdefault(pid, []).append(key)
        for pid, keys in per_process.items():
            if len(keys) % tiles_per_point:
                return int(pid), keys[-1]
        time.sleep(0.02)
    pytest.fail(f"No worker process was in the middle of a point within {timeout} s")


@pytest.fixture
def sent_point_tasks(monkeypatch) -> list[tuple[str, str, str]]:
    """Record point tasks instead of sending them, so that a test drives the run's steps itself."""
    sent: list[tuple[str, str, str]] = []
    monkeypatch.setattr(tasks, "send_point_task", lambda point_id, run_id, task_id: sent.append(
        (point_id, run_id, task_id)))
    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)
    return sent
