"""The caching run end to end, through the REST API and a real Celery worker process."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from campaigns.models import CachingRun, Campaign, Point, RunPoint, RunState
from tests.conftest import BOTH_DATABASES, produced_tiles, wait_for_run_end
from tiles.storage import tile_storage

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)]

# seed preset: zooms 12, 13 and 14, one tile each, one year, one vis param.
TILES_PER_POINT = 3


def start(client, campaign_id: str, **body):
    return client.post("/api/cache/campaign/start", {"campaign_id": campaign_id, **body}, format="json")


def assert_spec_fields_consistent(campaign: Campaign, *, total: int) -> None:
    cached = Point.objects.of_campaign(campaign.id).is_cached().count()
    assert campaign.caching_in_progress is False
    assert campaign.total_points == total
    assert campaign.cached_points == cached
    expected_percentage = round(cached * 100.0 / total, 2) if total else 0.0
    assert campaign.cache_percentage == expected_percentage
    assert campaign.all_points_cached is (total > 0 and cached == total)
    assert campaign.caching_started_at is not None
    assert campaign.caching_completed_at is not None
    assert campaign.caching_completed_at >= campaign.caching_started_at


def test_campaign_caches_every_point(celery_worker, staff_client, make_campaign):
    make_campaign("teste", points=12)

    response = start(staff_client, "teste", batch_size=3)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "scheduled"
    assert body["message"] == "Scheduled 12 cache tasks"
    assert body["data"]["campaign_id"] == "teste"
    assert body["data"]["total_points"] == 12
    assert body["data"]["already_cached"] == 0
    assert body["data"]["points_to_cache"] == 12
    assert body["data"]["tiles_per_point"] == TILES_PER_POINT
    run = wait_for_run_end("teste")
    assert run.state == RunState.COMPLETED
    assert run.succeeded_points == 12
    assert run.failed_points == 0
    campaign = Campaign.objects.get(pk="teste")
    assert_spec_fields_consistent(campaign, total=12)
    assert campaign.cached_points == 12
    assert campaign.cache_percentage == 100.0
    assert campaign.last_point_cached_at is not None
    assert campaign.caching_error is None
    points = list(Point.objects.of_campaign("teste"))
    assert {point.cached for point in points} == {True}
    assert {point.cached_by for point in points} == {"celery-task"}
    assert {point.enhance_in_cache for point in points} == {1}
    # Points 0.01 degrees apart share tiles: each shared tile is produced
    # once, and the other points find it stored.
    produced = produced_tiles()
    assert len(produced) == len(set(produced))
    assert len(produced) < 12 * TILES_PER_POINT
    assert run.tiles_stored == len(produced)
    assert run.tiles_stored + run.tiles_skipped == 12 * TILES_PER_POINT

    status = staff_client.get("/api/cache/campaign/teste/status").json()
    assert status["status"] == "success"
    assert status["data"]["cached_points"] == 12
    assert status["data"]["cache_percentage"] == 100.0
    assert status["data"]["all_points_cached"] is True
    assert status["data"]["caching_in_progress"] is False
    assert status["data"]["run"]["state"] == "completed"


def test_partially_cached_campaign_caches_the_rest(celery_worker, staff_client, make_campaign):
    make_campaign("parcial", points=6, cached=4)

    body = start(staff_client, "parcial").json()

    assert body["data"]["already_cached"] == 4
    assert body["data"]["points_to_cache"] == 2
    run = wait_for_run_end("parcial")
    assert run.succeeded_points == 2
    campaign = Campaign.objects.get(pk="parcial")
    assert_spec_fields_consistent(campaign, total=6)
    assert campaign.cached_points == 6


def test_failing_point_is_recorded_and_others_finish(celery_worker, staff_client, make_campaign, control_file):
    make_campaign("falha", points=4, spacing=0.5)
    bad_point = Point.objects.get(pk="2_falha")
    from campaigns.runs import campaign_plan

    plan = campaign_plan(Campaign.objects.get(pk="falha"))
    from tiles.storage import tile_key

    bad_key = tile_key(plan.addresses_for(bad_point.lon, bad_point.lat)[-1])
    control_file("fail-keys.txt", bad_key)

    start(staff_client, "falha", batch_size=2)
    run = wait_for_run_end("falha")

    assert run.state == RunState.FAILED
    assert run.succeeded_points == 3
    assert run.failed_points == 1
    campaign = Campaign.objects.get(pk="falha")
    assert_spec_fields_consistent(campaign, total=4)
    assert campaign.cached_points == 3
    assert "2_falha" in campaign.caching_error
    assert bad_key in campaign.caching_error
    assert campaign.caching_error_at is not None
    assert Point.objects.get(pk="2_falha").cached is not True
    assert RunPoint.objects.get(run=run, point_id="2_falha").state == "failed"

    # A second run after the fault is gone caches only the missing point.
    control_file("fail-keys.txt", "")
    body = start(staff_client, "falha").json()
    assert body["data"]["points_to_cache"] == 1
    second = wait_for_run_end("falha")
    assert second.id != run.id
    assert second.state == RunState.COMPLETED
    campaign.refresh_from_db()
    assert campaign.cached_points == 4
    assert campaign.caching_error is None
    assert campaign.all_points_cached is True


def test_empty_campaign_ends_at_once(staff_client, make_campaign):
    make_campaign("vazia", points=0)

    response = start(staff_client, "vazia")

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "completed"
    assert body["data"]["total_points"] == 0
    assert body["data"]["points_to_cache"] == 0
    run = CachingRun.objects.get(campaign_id="vazia")
    assert run.state == RunState.COMPLETED
    assert RunPoint.objects.filter(run=run).count() == 0
    campaign = Campaign.objects.get(pk="vazia")
    assert campaign.caching_in_progress is False
    assert campaign.cache_percentage == 0.0
    assert campaign.all_points_cached is False
    assert campaign.caching_completed_at is not None


def test_fully_cached_campaign_ends_at_once(staff_client, make_campaign):
    make_campaign("cheia", points=5, cached=5)

    body = start(staff_client, "cheia").json()

    assert body["status"] == "completed"
    assert body["data"]["already_cached"] == 5
    campaign = Campaign.objects.get(pk="cheia")
    assert campaign.caching_in_progress is False
    assert campaign.cached_points == 5
    assert campaign.cache_percentage == 100.0
    assert campaign.all_points_cached is True
    assert produced_tiles() == []


def test_simultaneous_starts_make_one_run(staff_client, make_campaign):
    make_campaign("corrida", points=5)
    results: list[int] = []

    def start_once():
        try:
            results.append(start(staff_client, "corrida").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start_once) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == [200] + [409] * 5
    assert CachingRun.objects.filter(campaign_id="corrida").count() == 1
    response = start(staff_client, "corrida")
    assert response.status_code == 409
    assert response.json()["code"] == "already_caching"
    assert response.json()["data"]["run_id"] == str(CachingRun.objects.get(campaign_id="corrida").id)


def test_point_task_delivered_twice_counts_once(celery_worker, staff_client, make_campaign, control_file):
    from campaigns.tasks import cache_point, record_point_result

    make_campaign("dupla", points=4, spacing=0.5)
    control_file("delay.txt", "0.2")
    start(staff_client, "dupla", batch_size=1)
    run = CachingRun.objects.get(campaign_id="dupla")
    deadline = time.monotonic() + 30
    while not CachingRun.objects.get(pk=run.pk).dispatch_complete and time.monotonic() < deadline:
        time.sleep(0.05)

    def deliver_again():
        try:
            result = cache_point.apply(args=["4_dupla", str(run.id)]).get()
            record_point_result.apply(args=[result, str(run.id)]).get()
        finally:
            connections.close_all()

    # Two extra deliveries of the same point task and its callback, at the
    # same moment, while the run is going; the worker runs the real one.
    threads = [threading.Thread(target=deliver_again) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    run = wait_for_run_end("dupla")

    campaign = Campaign.objects.get(pk="dupla")
    assert run.points_to_cache == 4
    assert run.finished_points == 4
    assert run.succeeded_points == 4
    assert campaign.cached_points == 4
    assert campaign.cache_percentage == 100.0
    assert RunPoint.objects.filter(run=run, state="succeeded").count() == 4
    produced = produced_tiles()
    assert len(produced) == len(set(produced)) == 4 * TILES_PER_POINT


def test_tiles_are_written_to_storage(celery_worker, staff_client, make_campaign):
    make_campaign("armazenada", points=1)

    start(staff_client, "armazenada")
    wait_for_run_end("armazenada")

    storage = tile_storage()
    keys = sorted(set(produced_tiles()))
    assert len(keys) == TILES_PER_POINT
    for key in keys:
        with storage.open(key, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
