"""Duplicate deliveries of point tasks and of their result callbacks count each point once.

A broker may deliver a message twice (a redelivery after a lost ack, a
visibility timeout, a manual resend), and two deliveries of the result
callback may run at the same time. The point's conditional transitions must
make every copy after the first a no-op: no second count, no rewritten tile.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connections
from django_celery_results.models import TaskResult

from campaigns import caching, progress, runs
from campaigns.models import CachingRun, Campaign, Point, RunPoint, RunPointState, RunState
from tests.conftest import BOTH_DATABASES, VAR_DIR, produced_tiles, wait_for_run_end
from tests.runchecks import sent_point_tasks  # noqa: F401 - a fixture
from tests.tileaudit import audit_tiles, snapshot_tiles

pytestmark = pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)

TILES_PER_POINT = 3
TILES_ROOT = VAR_DIR / "tiles"
# Threads that deliver the same callback at once.
RACERS = 8


def wait_for_task_result(task_id: str, timeout: float = 30.0) -> TaskResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = TaskResult.objects.filter(task_id=task_id, status__in=["SUCCESS", "FAILURE"]).first()
        if record is not None:
            return record
        time.sleep(0.05)
    pytest.fail(f"Task {task_id} did not finish within {timeout} s")


def run_in_threads(target, count: int) -> list:
    """Start ``count`` threads that call ``target`` together; return what each returned or raised."""
    barrier = threading.Barrier(count)
    outcomes: list = [None] * count

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[index] = target()
        except Exception as error:  # noqa: BLE001 - the test asserts on the collected outcomes
            outcomes[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.worker
def test_redelivery_after_point_finished(celery_worker, staff_client, make_campaign, control_file):
    from campaigns.tasks import send_point_task

    # Points 0.5 degrees apart share no tile; one point at a time keeps the run going.
    make_campaign("reentrega", points=5, spacing=0.5)
    control_file("delay.txt", "0.25")
    response = staff_client.post("/api/cache/campaign/start", {"campaign_id": "reentrega", "batch_size": 1},
                                 format="json")
    assert response.status_code == 200, response.json()
    run_id = response.json()["data"]["run_id"]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if RunPoint.objects.filter(run_id=run_id, point_id="1_reentrega", state=RunPointState.SUCCEEDED).exists():
            break
        time.sleep(0.05)
    assert CachingRun.objects.get(pk=run_id).is_active
    before = snapshot_tiles(TILES_ROOT)

    # The finished point's task delivered once more while the run goes on,
    # with its result callback, as a broker redelivery does.
    again = str(uuid.uuid4())
    send_point_task("1_reentrega", run_id, again)
    redelivered = wait_for_task_result(again)
    run = wait_for_run_end("reentrega")

    assert redelivered.status == "SUCCESS"
    assert '"already_cached"' in redelivered.result
    assert run.state == RunState.COMPLETED
    assert run.points_to_cache == 5
    assert run.finished_points == 5
    assert run.succeeded_points == 5
    assert run.tiles_stored == 5 * TILES_PER_POINT
    assert RunPoint.objects.filter(run_id=run_id, state=RunPointState.SUCCEEDED).count() == 5
    campaign = Campaign.objects.get(pk="reentrega")
    assert campaign.cached_points == 5
    assert campaign.cache_percentage == 100.0
    produced = produced_tiles()
    assert len(produced) == len(set(produced)) == 5 * TILES_PER_POINT
    after_run = snapshot_tiles(TILES_ROOT)
    for key, stored in before.items():
        assert after_run[key] == stored, f"tile {key} was written again by the duplicate delivery"

    # One more delivery after the run has ended changes nothing either.
    late = str(uuid.uuid4())
    send_point_task("2_reentrega", run_id, late)
    late_result = wait_for_task_result(late)

    assert '"cancelled"' in late_result.result
    run.refresh_from_db()
    assert run.finished_points == 5
    assert run.succeeded_points == 5
    assert Campaign.objects.get(pk="reentrega").cached_points == 5
    assert len(produced_tiles()) == 5 * TILES_PER_POINT
    assert snapshot_tiles(TILES_ROOT) == after_run
    audit = audit_tiles(TILES_ROOT)
    assert len(audit.tiles) == 5 * TILES_PER_POINT
    assert audit.invalid_tiles == []
    assert audit.temporary_files == []


def test_racing_result_callbacks_count_once(make_campaign, sent_point_tasks):
    from campaigns.tasks import record_point_result

    make_campaign("corrida_retorno", points=6, spacing=0.5)
    run = runs.start_run("corrida_retorno", batch_size=2).run
    runs.dispatch(str(run.pk))
    assert [point for point, _, _ in sent_point_tasks] == ["1_corrida_retorno", "2_corrida_retorno"]
    result = caching.cache_point("1_corrida_retorno", str(run.pk))
    assert result["status"] == "completed"
    assert result["stored_tiles"] == TILES_PER_POINT
    tiles_before = snapshot_tiles(TILES_ROOT)

    outcomes = run_in_threads(lambda: record_point_result.apply(args=[result, str(run.pk)]).get(), RACERS)

    assert [outcome for outcome in outcomes if isinstance(outcome, Exception)] == []
    run.refresh_from_db()
    assert run.finished_points == 1
    assert run.succeeded_points == 1
    assert run.failed_points == 0
    assert run.tiles_stored == TILES_PER_POINT
    assert RunPoint.objects.get(run=run, point_id="1_corrida_retorno").state == RunPointState.SUCCEEDED
    # Only the callback that recorded the outcome refilled the window.
    assert [point for point, _, _ in sent_point_tasks] == [
        "1_corrida_retorno", "2_corrida_retorno", "3_corrida_retorno"]
    assert RunPoint.objects.filter(run=run, state=RunPointState.DISPATCHED).count() == 2
    campaign = Campaign.objects.get(pk="corrida_retorno")
    assert campaign.cached_points == 1
    assert campaign.cache_percentage == round(100 / 6, 2)
    assert snapshot_tiles(TILES_ROOT) == tiles_before


def test_racing_error_and_result_callbacks(make_campaign, sent_point_tasks):
    """A delivery that raised and one that succeeded race: the first recorded outcome stands alone."""
    from campaigns.tasks import record_point_error, record_point_result

    make_campaign("corrida_mista", points=3, spacing=0.5)
    run = runs.start_run("corrida_mista", batch_size=1).run
    runs.dispatch(str(run.pk))
    result = caching.cache_point("1_corrida_mista", str(run.pk))
    assert result["status"] == "completed"
    calls = iter([True, False] * RACERS)
    lock = threading.Lock()

    def deliver() -> None:
        with lock:
            success = next(calls)
        if success:
            record_point_result.apply(args=[result, str(run.pk)]).get()
        else:
            record_point_error.apply(
                args=[None, RuntimeError("worker lost"), None, str(run.pk), "1_corrida_mista"]).get()

    outcomes = run_in_threads(deliver, RACERS)

    assert [outcome for outcome in outcomes if isinstance(outcome, Exception)] == []
    run.refresh_from_db()
    entry = RunPoint.objects.get(run=run, point_id="1_corrida_mista")
    assert run.finished_points == 1
    assert run.succeeded_points + run.failed_points == 1
    assert entry.state in (RunPointState.SUCCEEDED, RunPointState.FAILED)
    assert run.succeeded_points == (1 if entry.state == RunPointState.SUCCEEDED else 0)
    assert [point for point, _, _ in sent_point_tasks] == ["1_corrida_mista", "2_corrida_mista"]
    # The point itself was cached by the task that ran; the callbacks never count it.
    assert Campaign.objects.get(pk="corrida_mista").cached_points == 1
    assert Point.objects.of_campaign("corrida_mista").is_cached().count() == 1


def test_racing_point_transitions_count_once(make_campaign):
    make_campaign("corrida_ponto", points=2)
    Campaign.objects.filter(pk="corrida_ponto").update(total_points=2)

    outcomes = run_in_threads(
        lambda: progress.mark_point_cached("1_corrida_ponto", "corrida_ponto", "test"), RACERS)

    assert sorted(outcomes, key=repr) == [False] * (RACERS - 1) + [True]
    campaign = Campaign.objects.get(pk="corrida_ponto")
    assert campaign.cached_points == 1
    assert campaign.cache_percentage == 50.0
    assert campaign.all_points_cached is False
    point = Point.objects.get(pk="1_corrida_ponto")
    assert point.cached is True
    assert point.enhance_in_cache == 1
