"""Simultaneous starts of one campaign, and cancelling a large run right after it starts.

Runs on whichever database the suite uses (SQLite by default, PostgreSQL
with DATABASE_URL); every thread opens its own database connection.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from campaigns import runs
from campaigns.models import CachingRun, Campaign, Point, RunPoint, RunPointState, RunState
from tests.conftest import BOTH_DATABASES, produced_tiles
from tests.runchecks import ledger_states, sent_point_tasks, wait_until  # noqa: F401 - sent_point_tasks is a fixture

pytestmark = pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)

START = "/api/cache/campaign/start"
STARTERS = 20
LARGE_CAMPAIGN = 3000
# Seconds a point task that was executing when the run was cancelled may still need to finish.
GRACE_SECONDS = 4.0


def test_twenty_simultaneous_starts(staff_user, make_campaign, monkeypatch):
    from campaigns import tasks

    dispatched: list = []
    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: dispatched.append(kwargs))
    make_campaign("vinte", points=5)
    token = Token.objects.create(user=staff_user).key
    barrier = threading.Barrier(STARTERS)
    responses: list = [None] * STARTERS

    def start(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        try:
            barrier.wait(timeout=10)
            response = client.post(START, {"campaign_id": "vinte", "batch_size": 2}, format="json")
            responses[index] = (response.status_code, response.json())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start, args=(index,)) for index in range(STARTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    statuses = sorted(status for status, _ in responses)
    assert statuses == [200] + [409] * (STARTERS - 1)
    run = CachingRun.objects.get(campaign_id="vinte")
    winner = next(body for status, body in responses if status == 200)
    assert winner["data"]["run_id"] == str(run.id)
    for status, body in responses:
        if status == 409:
            assert body["code"] == "already_caching"
    assert len(dispatched) == 1
    assert run.state == RunState.DISPATCHING
    campaign = Campaign.objects.get(pk="vinte")
    assert campaign.caching_in_progress is True
    assert campaign.points_to_cache == 5


def test_losing_start_reports_run_ids(staff_client, make_campaign, monkeypatch):
    from campaigns import tasks

    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)
    make_campaign("vinte_ids", points=5)
    record_run = runs._record_run
    release = threading.Event()
    winner: dict = {}

    def record_run_later(*args, **kwargs):
        # The winner has claimed the campaign; its run row is written only once released.
        release.wait(timeout=10)
        return record_run(*args, **kwargs)

    def win() -> None:
        try:
            winner["run"] = runs.start_run("vinte_ids").run
        finally:
            connections.close_all()

    monkeypatch.setattr(runs, "_record_run", record_run_later)
    thread = threading.Thread(target=win)
    thread.start()
    wait_until(lambda: Campaign.objects.filter(pk="vinte_ids", caching_in_progress=True).exists(), 10,
               "the first start claimed the campaign")
    timer = threading.Timer(0.5, release.set)
    timer.start()

    response = staff_client.post(START, {"campaign_id": "vinte_ids"}, format="json")
    thread.join(timeout=30)
    release.set()

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "already_caching"
    assert body.get("data", {}).get("run_id") == str(winner["run"].id)
    assert body["data"]["task_id"] == winner["run"].task_id


@pytest.mark.worker
@pytest.mark.slow
def test_cancel_right_after_start(celery_worker, staff_client, make_campaign, control_file, capsys):
    make_campaign("cancelada", points=LARGE_CAMPAIGN, spacing=0.001)
    control_file("delay.txt", "0.05")

    started = staff_client.post(START, {"campaign_id": "cancelada", "batch_size": 20}, format="json")
    cancelled = staff_client.post("/api/cache/campaign/cancelada/cancel", format="json")
    cancelled_at = time.monotonic()

    assert started.status_code == 200, started.json()
    assert cancelled.status_code == 200, cancelled.json()
    run_id = started.json()["data"]["run_id"]
    time.sleep(GRACE_SECONDS)
    produced_after_grace = len(produced_tiles())
    cached_after_grace = Point.objects.of_campaign("cancelada").is_cached().count()
    results_after_grace = TaskResult.objects.filter(task_name="campaigns.cache_point").count()
    time.sleep(GRACE_SECONDS)

    run = CachingRun.objects.get(pk=run_id)
    states = ledger_states(run_id)
    late_results = TaskResult.objects.filter(task_name="campaigns.cache_point").count() - results_after_grace
    with capsys.disabled():
        print(f"\ncancel {LARGE_CAMPAIGN}-point run right after start: ledger {states}, "
              f"{produced_after_grace} tiles produced, {cached_after_grace} points cached, "
              f"{late_results} point tasks finished between {GRACE_SECONDS:.0f} s and "
              f"{time.monotonic() - cancelled_at:.0f} s after the cancel")
    assert run.state == RunState.CANCELLED
    assert states.get(RunPointState.PENDING, 0) == 0
    assert states.get(RunPointState.DISPATCHED, 0) == 0
    assert len(produced_tiles()) == produced_after_grace
    assert Point.objects.of_campaign("cancelada").is_cached().count() == cached_after_grace
    assert late_results == 0
    active = celery_worker_tasks(celery_worker.worker_name)
    assert [task for task in active if task.get("name") == "campaigns.cache_point"] == []
    campaign = Campaign.objects.get(pk="cancelada")
    assert campaign.caching_in_progress is False
    assert campaign.cached_points == cached_after_grace
    # A new start after the cancel is accepted and counts the points still to cache.
    restarted = staff_client.post(START, {"campaign_id": "cancelada", "batch_size": 20}, format="json")
    assert restarted.status_code == 200, restarted.json()
    assert restarted.json()["data"]["points_to_cache"] == LARGE_CAMPAIGN - cached_after_grace
    staff_client.post("/api/cache/campaign/cancelada/cancel", format="json")


@pytest.mark.worker
@pytest.mark.slow
def test_cancel_with_tasks_in_flight(celery_worker, staff_client, make_campaign, control_file, capsys):
    # Points 0.05 degrees apart share few tiles, so each point task takes a few tenths of a second.
    make_campaign("cancelada_em_voo", points=LARGE_CAMPAIGN, spacing=0.05)
    control_file("delay.txt", "0.1")
    started = staff_client.post(START, {"campaign_id": "cancelada_em_voo", "batch_size": 20}, format="json")
    assert started.status_code == 200, started.json()
    run_id = started.json()["data"]["run_id"]
    # Result callbacks queue behind the point tasks sent before them, so the task results, not the
    # run's counters, tell how many point tasks have executed.
    wait_until(lambda: completed_point_tasks() >= 2, 60, "two point tasks completed")
    queued = ledger_states(run_id).get(RunPointState.DISPATCHED, 0)
    completed_at_cancel = completed_point_tasks()

    cancelled = staff_client.post("/api/cache/campaign/cancelada_em_voo/cancel", format="json")
    cancelled_at = time.monotonic()

    assert cancelled.status_code == 200, cancelled.json()
    assert cancelled.json()["data"]["state"] == "cancelled"
    time.sleep(GRACE_SECONDS)
    produced_after_grace = len(produced_tiles())
    cached_after_grace = Point.objects.of_campaign("cancelada_em_voo").is_cached().count()
    completed_after_grace = completed_point_tasks()
    time.sleep(GRACE_SECONDS)

    run = CachingRun.objects.get(pk=run_id)
    states = ledger_states(run_id)
    completed = completed_point_tasks()
    with capsys.disabled():
        print(f"\ncancel with {queued} point tasks queued or running and {completed_at_cancel} completed: "
              f"ledger {states}, {cached_after_grace} points cached, {produced_after_grace} tiles produced; nothing more "
              f"between {GRACE_SECONDS:.0f} s and {time.monotonic() - cancelled_at:.0f} s after the cancel")
    assert queued >= 10
    assert run.state == RunState.CANCELLED
    assert states.get(RunPointState.PENDING, 0) == 0
    assert states.get(RunPointState.DISPATCHED, 0) == 0
    assert states[RunPointState.CANCELLED] >= LARGE_CAMPAIGN - cached_after_grace - 2
    assert len(produced_tiles()) == produced_after_grace
    assert Point.objects.of_campaign("cancelada_em_voo").is_cached().count() == cached_after_grace
    assert completed == completed_after_grace
    # Only the tasks that were executing (two worker processes) or already taken by the worker at the
    # cancel finished after it. The rest of the queued tasks were revoked or skipped.
    assert cached_after_grace <= completed_at_cancel + 4
    assert [task for task in celery_worker_tasks(celery_worker.worker_name)
            if task.get("name") == "campaigns.cache_point"] == []
    campaign = Campaign.objects.get(pk="cancelada_em_voo")
    assert campaign.caching_in_progress is False
    assert campaign.cached_points == cached_after_grace


def completed_point_tasks() -> int:
    return TaskResult.objects.filter(task_name="campaigns.cache_point", result__contains='"completed"').count()


def celery_worker_tasks(worker_name: str) -> list[dict]:
    from cachecampaign.celery import app

    replies = app.control.inspect(destination=[worker_name], timeout=1.0).active() or {}
    return replies.get(worker_name, [])


def test_cancel_during_ledger_fill_stays_cancelled(make_campaign, sent_point_tasks, monkeypatch):
    make_campaign("cancelada_no_meio", points=50)
    run = runs.start_run("cancelada_no_meio", batch_size=5).run
    fill_ledger = runs._fill_ledger

    def fill_while_cancelled(ledger_run):
        # The cancel request is handled between the dispatch task's state check and the end of the fill.
        runs.cancel_run("cancelada_no_meio")
        return fill_ledger(ledger_run)

    monkeypatch.setattr(runs, "_fill_ledger", fill_while_cancelled)

    runs.dispatch(str(run.pk))

    run.refresh_from_db()
    assert run.state == RunState.CANCELLED
    assert sent_point_tasks == []
    assert RunPoint.objects.filter(run=run, state__in=[RunPointState.PENDING, RunPointState.DISPATCHED]).count() == 0
    assert Campaign.objects.get(pk="cancelada_no_meio").caching_in_progress is False
    assert CachingRun.objects.active().filter(campaign_id="cancelada_no_meio").count() == 0
