"""The Redis broker stops and starts again in the middle of a run.

Each test runs a redis-server of its own on a spare 127.0.0.1 port, without
persistence, so a restart loses every message it held, as an unpersisted
Redis does. The worker and every step that sends a message (start, cancel,
resume, the task API) use that server. The test process's broker URL is
fixed when its settings load, so the steps that send run in a child process
(``tests.brokerclient``). Progress is read from the shared test database.
The last tests take the Redis that holds the tile locks away from a tile
request: its tiles fail with the reason, no exception escapes.
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import Client

from campaigns.models import CachingRun, Campaign, Point, RunPoint, RunPointState
from tests.brokerclient import run_operation
from tests.conftest import BOTH_DATABASES, produced_tiles
from tests.redisserver import redis_server_available, running_redis, spare_port
from tests.runchecks import finished_points, ledger_states, producer_mid_point, wait_for_run_id_end, wait_until
from tests.workers import ping_worker, running_worker, worker_environment
from tiles.address import TileAddress
from tiles.seeding import seed_tiles

pytestmark = pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
needs_redis_server = pytest.mark.skipif(not redis_server_available(), reason="redis-server is not installed")

POINTS = 16
TILES_PER_POINT = 3
TILE_DELAY = "0.2"
OUTAGE_SECONDS = 3.0
# Seconds within which the task API must respond when no broker or worker responds.
API_ANSWER_SECONDS = 3.0


@pytest.fixture
def own_redis(tmp_path):
    with running_redis(tmp_path / "redis") as server:
        yield server


def wait_for_run_end_quietly(campaign_id: str, timeout: float) -> CachingRun | None:
    """Return the campaign's latest run once it has ended, or None when it is still active after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = CachingRun.objects.of_campaign(campaign_id).first()
        flagged = Campaign.objects.filter(pk=campaign_id, caching_in_progress=True).exists()
        if run is not None and not run.is_active and not flagged:
            return run
        time.sleep(0.2)
    return None


def interrupt_broker_mid_run(server, worker, environment: dict, campaign_id: str, capsys) -> dict:
    """Start a run, restart Redis while it goes on, and return what was observed."""
    started = run_operation(environment, "start", campaign_id, batch_size=4)
    assert "error" not in started, started
    run_id = started["run_id"]
    wait_until(lambda: finished_points(run_id) >= 3, 30, "three points of the run finished")
    # Stop the broker while a point task is producing its tiles, past taking its tile locks: the
    # point gets cached during the outage, when its result callback cannot be sent.
    producer_mid_point(TILES_PER_POINT)
    server.kill()
    down_at = time.monotonic()
    task_list = run_operation(environment, "get", "/api/tasks/list")
    unknown_task = run_operation(environment, "get", f"/api/tasks/status/{uuid.uuid4()}")
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    server.start()
    outage = time.monotonic() - down_at
    reconnected_after = wait_until(lambda: ping_worker(worker.worker_name, server.url(0)), 60,
                                   "the worker answered through the restarted broker")

    ended = wait_for_run_end_quietly(campaign_id, timeout=20)
    observed = {
        "run_id": run_id,
        "task_list": task_list,
        "unknown_task": unknown_task,
        "ended_by_itself": ended is not None,
        "finished": finished_points(run_id),
        "ledger": ledger_states(run_id),
        "cached": Point.objects.of_campaign(campaign_id).is_cached().count(),
    }
    with capsys.disabled():
        print(f"\nbroker down {outage:.1f} s, worker reconnected {reconnected_after:.1f} s after the restart; "
              f"20 s later the run had {'ended' if ended else 'not ended'}: {observed['finished']} of {POINTS} "
              f"points finished, ledger {observed['ledger']}, {observed['cached']} points cached; "
              f"/api/tasks/list answered {task_list.get('status')} in {task_list.get('seconds', 0):.2f} s")
    return observed


def assert_task_api_answers_during_outage(observed: dict) -> None:
    task_list = observed["task_list"]
    assert task_list["status"] == 503
    assert task_list["seconds"] < API_ANSWER_SECONDS
    assert task_list["body"]["code"] == "service_unavailable"
    assert "broker" in task_list["body"]["message"]
    unknown = observed["unknown_task"]
    assert unknown["status"] == 404
    assert unknown["body"]["code"] == "not_found"


@pytest.mark.worker
@pytest.mark.slow
@needs_redis_server
def test_broker_restart_then_cancel_and_start(own_redis, make_campaign, control_file, capsys):
    make_campaign("broker_reinicio", points=POINTS, spacing=0.5)
    control_file("delay.txt", TILE_DELAY)
    environment = worker_environment({"CELERY_BROKER_URL": own_redis.url(0)})

    with running_worker(concurrency=2, broker_url=own_redis.url(0)) as worker:
        observed = interrupt_broker_mid_run(own_redis, worker, environment, "broker_reinicio", capsys)
        assert_task_api_answers_during_outage(observed)
        first = CachingRun.objects.get(pk=observed["run_id"])
        if not observed["ended_by_itself"]:
            # A second start is rejected while the stalled run is active; cancelling it and
            # starting again caches exactly the points that are still missing.
            conflict = run_operation(environment, "start", "broker_reinicio", batch_size=4)
            assert "RunAlreadyActive" in conflict["error"]
            cancelled = run_operation(environment, "cancel", "broker_reinicio")
            assert cancelled["state"] == "cancelled"
            missing = Point.objects.of_campaign("broker_reinicio").not_cached().count()
            second = run_operation(environment, "start", "broker_reinicio", batch_size=4)
            assert second["points_to_cache"] == missing
            run = wait_for_run_id_end(second["run_id"], 60)
            assert run.state == "completed", run.last_error
            assert run.finished_points == missing
            assert run.succeeded_points == missing
            assert ledger_states(run.pk) == ({RunPointState.SUCCEEDED: missing} if missing else {})

    first.refresh_from_db()
    # The first run counted each of its finished points once.
    assert first.finished_points == first.succeeded_points + first.failed_points
    assert first.finished_points == ledger_states(first.pk).get(RunPointState.SUCCEEDED, 0) + ledger_states(
        first.pk).get(RunPointState.FAILED, 0)
    campaign = Campaign.objects.get(pk="broker_reinicio")
    assert campaign.caching_in_progress is False
    assert campaign.cached_points == POINTS
    assert campaign.all_points_cached is True
    assert Point.objects.of_campaign("broker_reinicio").is_cached().count() == POINTS
    produced = produced_tiles()
    assert len(set(produced)) == POINTS * TILES_PER_POINT


@pytest.mark.worker
@pytest.mark.slow
@needs_redis_server
def test_broker_restart_then_resume(own_redis, make_campaign, control_file, capsys):
    make_campaign("broker_retomada", points=POINTS, spacing=0.5)
    control_file("delay.txt", TILE_DELAY)
    environment = worker_environment({"CELERY_BROKER_URL": own_redis.url(0)})

    with running_worker(concurrency=2, broker_url=own_redis.url(0)) as worker:
        observed = interrupt_broker_mid_run(own_redis, worker, environment, "broker_retomada", capsys)
        resumed = run_operation(environment, "resume", observed["run_id"])
        assert "error" not in resumed, resumed.get("error")
        run = wait_for_run_id_end(observed["run_id"], 60)
        entries = list(RunPoint.objects.filter(run=run).values_list("point_id", "state", "error"))
        cached = set(Point.objects.of_campaign("broker_retomada").is_cached().values_list("pk", flat=True))
        # Points whose tiles failed while Redis was down (their tile locks could not be taken) are
        # cached by a second start, and only those.
        second = run_operation(environment, "start", "broker_retomada", batch_size=4)
        if run.failed_points:
            wait_for_run_id_end(second["run_id"], 60)

    assert run.points_to_cache == POINTS
    assert run.finished_points == POINTS
    assert run.succeeded_points + run.failed_points == POINTS
    assert ledger_states(run.pk).get(RunPointState.DISPATCHED, 0) == 0
    assert ledger_states(run.pk).get(RunPointState.PENDING, 0) == 0
    # The ledger matches each point: an entry is succeeded exactly when its point is cached.
    for point_id, state, error in entries:
        assert (state == RunPointState.SUCCEEDED) == (point_id in cached), (point_id, state, error)
    assert second.get("points_to_cache", 0) == run.failed_points
    campaign = Campaign.objects.get(pk="broker_retomada")
    assert campaign.cached_points == POINTS
    assert campaign.caching_in_progress is False
    assert Point.objects.of_campaign("broker_retomada").is_cached().count() == POINTS


@needs_redis_server
def test_task_list_without_worker(own_redis):
    environment = worker_environment({"CELERY_BROKER_URL": own_redis.url(0)})

    answer = run_operation(environment, "get", "/api/tasks/list")

    assert answer["status"] == 503
    assert answer["seconds"] < API_ANSWER_SECONDS
    assert answer["body"]["code"] == "service_unavailable"
    assert "worker" in answer["body"]["message"]


@needs_redis_server
def test_task_list_with_broker_down(own_redis):
    environment = worker_environment({"CELERY_BROKER_URL": own_redis.url(0)})
    own_redis.kill()

    answer = run_operation(environment, "get", "/api/tasks/list")
    unknown = run_operation(environment, "get", f"/api/tasks/status/{uuid.uuid4()}")

    assert answer["status"] == 503
    assert answer["seconds"] < API_ANSWER_SECONDS
    assert "broker" in answer["body"]["message"]
    assert unknown["status"] == 404
    assert unknown["body"]["code"] == "not_found"


@needs_redis_server
def test_task_list_with_frozen_broker(own_redis):
    environment = worker_environment({"CELERY_BROKER_URL": own_redis.url(0)})
    own_redis.freeze()
    try:
        began = time.monotonic()
        try:
            answer = run_operation(environment, "get", "/api/tasks/list", timeout=8)
        except Exception as error:  # noqa: BLE001 - a hung request is the failure this test reports
            pytest.fail(f"/api/tasks/list did not answer within {time.monotonic() - began:.0f} s: {error!r}")
    finally:
        own_redis.thaw()

    assert answer["status"] == 503
    assert answer["seconds"] < API_ANSWER_SECONDS
    assert answer["body"]["code"] == "service_unavailable"


def test_lock_redis_down_fails_tiles(settings):
    settings.TILE_LOCKS_REDIS_URL = f"redis://127.0.0.1:{spare_port()}/0"
    address = TileAddress.validated(layer="landsat", vis_param="landsat-tvi-true", period="DRY", year=2020,
                                    month=None, z=13, x=2940, y=4705)

    outcome = seed_tiles([address])

    assert outcome.total == 1
    assert outcome.failed == 1
    assert outcome.stored == 0
    assert "locking failed" in outcome.errors[0][1]
    assert "Redis" in outcome.errors[0][1]
    assert produced_tiles() == []


def test_tile_endpoint_with_lock_redis_down(settings):
    settings.TILE_LOCKS_REDIS_URL = f"redis://127.0.0.1:{spare_port()}/0"

    response = Client().get("/api/layers/landsat/2940/4705/13?period=DRY&year=2020&visparam=landsat-tvi-true")

    assert response.status_code == 503
    assert response["Cache-Control"] == "no-store"
    assert response["X-Error-Reason"] == "source_unavailable"
    assert "Redis" in response.json()["message"]
    assert produced_tiles() == []
