"""The periodic re-cache: its beat schedule, which campaigns it starts, stale tiles and concurrent ticks."""

from __future__ import annotations

import importlib
import os
import threading
import time
from types import SimpleNamespace

import pytest
from django.db import connections
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from campaigns.models import CachingRun, Campaign, Point, RunState
from campaigns.recache import recache_due_campaigns
from campaigns.runs import campaign_plan
from tests.conftest import BOTH_DATABASES, produced_tiles, wait_for_run_end
from tests.fakesources import solid_png
from tiles.seeding import seed_tiles
from tiles.storage import tile_key, tile_storage, write_tile

TASK_NAME = "Re-cache campaigns"


@pytest.fixture
def no_dispatch(monkeypatch):
    from campaigns import tasks

    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)


def full_run(campaign_id: str, created_at, state: str = RunState.COMPLETED) -> CachingRun:
    """Record a run that went over every point of the campaign, started at ``created_at``."""
    total = Point.objects.of_campaign(campaign_id).count()
    run = CachingRun.objects.create(
        campaign_id=campaign_id, task_id=f"task-{campaign_id}-{created_at.timestamp()}", group_id="g",
        state=state, batch_size=5, preset="seed", total_points=total, already_cached=0, points_to_cache=total,
        ended_at=created_at + timezone.timedelta(minutes=5),
    )
    CachingRun.objects.filter(pk=run.pk).update(created_at=created_at)
    return run


def age_file(key: str, days: float) -> None:
    path = tile_storage().path(key)
    moment = time.time() - days * 86400
    os.utime(path, (moment, moment))


@pytest.mark.django_db(databases=BOTH_DATABASES, serialized_rollback=True)
def test_schedule_exists_after_migrate():
    task = PeriodicTask.objects.get(name=TASK_NAME)

    assert task.task == "campaigns.recache_due_campaigns"
    assert task.enabled is True
    assert task.interval is None
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week, crontab.day_of_month, crontab.month_of_year) == (
        "0", "3", "*", "*", "*"
    )
    assert str(crontab.timezone) == "America/Sao_Paulo"


@pytest.mark.django_db(databases=BOTH_DATABASES)
def test_schedule_migration_keeps_an_edited_schedule():
    from django.apps import apps

    migration = importlib.import_module("campaigns.migrations.0003_recache_schedule")
    editor = SimpleNamespace(connection=SimpleNamespace(alias="default"))
    PeriodicTask.objects.filter(name=TASK_NAME).delete()

    migration.create_schedule(apps, editor)
    task = PeriodicTask.objects.get(name=TASK_NAME)
    task.crontab = CrontabSchedule.objects.create(minute="30", hour="4", timezone="America/Sao_Paulo")
    task.save()
    migration.create_schedule(apps, editor)

    assert PeriodicTask.objects.filter(name=TASK_NAME).count() == 1
    assert PeriodicTask.objects.get(name=TASK_NAME).crontab.hour == "4"


def test_task_is_registered():
    from cachecampaign.celery import app

    assert "campaigns.recache_due_campaigns" in app.tasks


@pytest.mark.django_db(databases=BOTH_DATABASES)
class TestDueCampaigns:
    def test_starts_campaigns_with_uncached_points(self, make_campaign, no_dispatch):
        make_campaign("nova", points=3, cached=1)
        make_campaign("cheia", points=2, cached=2)
        make_campaign("vazia", points=0)
        make_campaign("planeta", points=2, image_type="planet")
        make_campaign("ocupada", points=2)
        Campaign.objects.filter(pk="ocupada").update(caching_in_progress=True, caching_started_at=timezone.now())

        report = recache_due_campaigns()

        assert [entry["campaign_id"] for entry in report["started"]] == ["nova"]
        assert report["started"][0]["reason"] == "uncached"
        assert report["started"][0]["points_to_cache"] == 2
        assert report["invalid"] == ["planeta"]
        run = CachingRun.objects.get(campaign_id="nova")
        assert run.started_by == "beat"
        assert "refresh_before" not in run.plan
        assert set(CachingRun.objects.values_list("campaign_id", flat=True)) == {"nova"}

    def test_caching_campaign_is_skipped_quietly(self, make_campaign, no_dispatch, caplog, monkeypatch):
        from campaigns import recache
        from campaigns.runs import start_run

        make_campaign("ocupada", points=2)
        original = recache.due_reason

        def due_then_started_elsewhere(campaign_id, refresh_before):
            # An operator starts the campaign between the tick's listing and its start.
            reason = original(campaign_id, refresh_before)
            start_run(campaign_id, started_by="api")
            return reason

        monkeypatch.setattr(recache, "due_reason", due_then_started_elsewhere)

        report = recache_due_campaigns()

        assert report["started"] == []
        assert report["skipped"] == ["ocupada"]
        assert CachingRun.objects.get(campaign_id="ocupada").started_by == "api"
        assert not [record for record in caplog.records if record.levelname in ("WARNING", "ERROR")]

    def test_campaign_started_after_the_tick_began_is_skipped(self, make_campaign, no_dispatch):
        make_campaign("teste", points=2)
        tick_began = timezone.now()
        Campaign.objects.filter(pk="teste").update(caching_started_at=tick_began + timezone.timedelta(seconds=1))

        report = recache_due_campaigns(now=tick_began)

        assert report["skipped"] == ["teste"]
        assert not CachingRun.objects.exists()

    def test_stale_campaign_is_cached_again(self, make_campaign, no_dispatch, settings):
        settings.CACHE_MAX_TILE_AGE_DAYS = 30
        now = timezone.now()
        make_campaign("velha", points=3, cached=3)
        full_run("velha", now - timezone.timedelta(days=40))
        make_campaign("recente", points=3, cached=3)
        full_run("recente", now - timezone.timedelta(days=40))
        full_run("recente", now - timezone.timedelta(days=5))
        make_campaign("sem_registro", points=2, cached=2)
        make_campaign("nova", points=2)

        report = recache_due_campaigns(now=now)

        started = {entry["campaign_id"]: entry for entry in report["started"]}
        assert set(started) == {"velha", "sem_registro", "nova"}
        assert started["velha"]["reason"] == "stale"
        assert started["velha"]["points_to_cache"] == 3
        assert started["sem_registro"]["reason"] == "stale"
        assert started["nova"]["reason"] == "uncached"
        run = CachingRun.objects.of_campaign("velha").first()
        assert run.already_cached == 0
        assert run.plan["refresh_before"] == (now - timezone.timedelta(days=30)).isoformat()
        assert not Point.objects.of_campaign("velha").is_cached().exists()
        campaign = Campaign.objects.get(pk="velha")
        assert (campaign.cached_points, campaign.points_to_cache) == (0, 3)
        assert Point.objects.of_campaign("recente").is_cached().count() == 3

    def test_failed_full_run_counts_as_a_refresh(self, make_campaign, no_dispatch, settings):
        settings.CACHE_MAX_TILE_AGE_DAYS = 30
        make_campaign("teste", points=2, cached=2)
        full_run("teste", timezone.now() - timezone.timedelta(days=2), state=RunState.FAILED)

        assert recache_due_campaigns()["started"] == []

    def test_age_check_off_by_default(self, make_campaign, no_dispatch, settings):
        settings.CACHE_MAX_TILE_AGE_DAYS = 0
        make_campaign("velha", points=2, cached=2)
        full_run("velha", timezone.now() - timezone.timedelta(days=400))

        assert recache_due_campaigns()["started"] == []


@pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
def test_concurrent_ticks_start_one_run(make_campaign, no_dispatch, settings):
    settings.CACHE_MAX_TILE_AGE_DAYS = 30
    for index in range(6):
        make_campaign(f"c{index}", points=3)
    make_campaign("velha", points=2, cached=2)
    full_run("velha", timezone.now() - timezone.timedelta(days=90))
    reports: list[dict] = []
    barrier = threading.Barrier(2)

    def tick():
        try:
            barrier.wait(timeout=10)
            reports.append(recache_due_campaigns())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(reports) == 2
    started = [entry["campaign_id"] for report in reports for entry in report["started"]]
    expected = {f"c{index}" for index in range(6)} | {"velha"}
    assert sorted(started) == sorted(expected)
    for campaign_id in expected:
        assert CachingRun.objects.filter(campaign_id=campaign_id, started_by="beat").count() == 1, campaign_id


@pytest.mark.django_db(databases=BOTH_DATABASES)
def test_seeding_replaces_tiles_older_than_refresh_before(make_campaign):
    make_campaign("teste", points=1)
    point = Point.objects.get(pk="1_teste")
    old, fresh, _ = campaign_plan(Campaign.objects.get(pk="teste")).addresses_for(point.lon, point.lat)
    write_tile(old, solid_png(1, 1, 1))
    write_tile(fresh, solid_png(1, 1, 1))
    age_file(tile_key(old), days=40)
    age_file(tile_key(fresh), days=2)

    outcome = seed_tiles([old, fresh], refresh_before=timezone.now() - timezone.timedelta(days=30))

    assert (outcome.stored, outcome.skipped, outcome.failed) == (1, 1, 0)
    assert produced_tiles() == [tile_key(old)]
    with tile_storage().open(tile_key(old), "rb") as handle:
        assert handle.read() != solid_png(1, 1, 1)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
def test_stale_campaign_tiles_are_rendered_again(celery_worker, make_campaign, settings):
    settings.CACHE_MAX_TILE_AGE_DAYS = 30
    make_campaign("velha", points=2, spacing=1.0, cached=2)
    full_run("velha", timezone.now() - timezone.timedelta(days=45))
    plan = campaign_plan(Campaign.objects.get(pk="velha"))
    keys = []
    for point in Point.objects.of_campaign("velha"):
        for address in plan.addresses_for(point.lon, point.lat):
            write_tile(address, solid_png(1, 1, 1))
            age_file(tile_key(address), days=45)
            keys.append(tile_key(address))

    report = recache_due_campaigns()
    run = wait_for_run_end("velha")

    assert report["started"][0]["reason"] == "stale"
    assert run.state == RunState.COMPLETED
    assert run.tiles_stored == len(keys) == 6
    assert sorted(produced_tiles()) == sorted(keys)
    campaign = Campaign.objects.get(pk="velha")
    assert (campaign.cached_points, campaign.cache_percentage, campaign.all_points_cached) == (2, 100.0, True)
    assert {point.cached_by for point in Point.objects.of_campaign("velha")} == {"celery-task"}
    # The next tick finds the campaign fresh.
    assert recache_due_campaigns()["started"] == []
