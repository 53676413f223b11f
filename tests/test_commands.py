"""The campaign management commands: cache_campaign, campaign_status, cancel_caching and clear_cache."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone, translation

from campaigns.models import CachingRun, Campaign, Point, RunState
from campaigns.runs import campaign_plan
from tests.conftest import BOTH_DATABASES, wait_for_run_end
from tests.fakesources import solid_png
from tests.workers import ROOT, worker_environment
from tiles.storage import tile_key, tile_storage, write_tile


def run_command(name: str, *args: str) -> str:
    """Run a command in English and return its standard output."""
    output = io.StringIO()
    with translation.override("en"):
        call_command(name, *args, stdout=output, stderr=io.StringIO())
    return output.getvalue()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
class TestCacheCampaignWait:
    def test_wait_until_completed(self, celery_worker, make_campaign):
        make_campaign("teste", points=4)

        output = run_command("cache_campaign", "teste", "--batch-size", "2", "--wait", "--poll-interval", "0.2")

        run = CachingRun.objects.get(campaign_id="teste")
        assert run.state == RunState.COMPLETED
        assert run.started_by == "cache_campaign"
        assert run.batch_size == 2
        assert f"Run {run.id} of campaign teste started: 4 of 4 points to cache" in output
        assert "Points: 100%" in output
        assert f"Run {run.id} completed. 4 points cached and 0 failed in this run; campaign teste now has 4 of 4 " \
               "points cached (100.00 %)." in output
        assert {p.cached_by for p in Point.objects.of_campaign("teste")} == {"celery-task"}

    def test_wait_on_failure_raises(self, celery_worker, make_campaign, control_file):
        make_campaign("falha", points=3, spacing=0.5)
        point = Point.objects.get(pk="2_falha")
        bad_key = tile_key(campaign_plan(Campaign.objects.get(pk="falha")).addresses_for(point.lon, point.lat)[0])
        control_file("fail-keys.txt", bad_key)

        with pytest.raises(CommandError) as raised:
            run_command("cache_campaign", "falha", "--wait", "--poll-interval", "0.2")

        run = CachingRun.objects.get(campaign_id="falha")
        assert run.state == RunState.FAILED
        message = str(raised.value)
        assert f"Run {run.id} of campaign falha failed." in message
        assert "2 points cached and 1 failed in this run" in message
        assert bad_key in message
        assert "run cache_campaign falha again" in message

    def test_wait_on_cancel_raises(self, celery_worker, make_campaign, control_file):
        import threading

        from campaigns.runs import cancel_run

        make_campaign("lenta", points=6, spacing=0.5)
        control_file("delay.txt", "0.3")

        def cancel_soon():
            import time

            from django.db import connections

            try:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if CachingRun.objects.filter(campaign_id="lenta", finished_points__gte=1).exists():
                        cancel_run("lenta")
                        return
                    time.sleep(0.1)
            finally:
                connections.close_all()

        canceller = threading.Thread(target=cancel_soon)
        canceller.start()
        try:
            with pytest.raises(CommandError) as raised:
                run_command("cache_campaign", "lenta", "--batch-size", "1", "--wait", "--poll-interval", "0.2")
        finally:
            canceller.join(timeout=30)

        run = CachingRun.objects.get(campaign_id="lenta")
        assert run.state == RunState.CANCELLED
        assert f"Run {run.id} of campaign lenta was cancelled." in str(raised.value)
        wait_for_run_end("lenta")


@pytest.mark.django_db(databases=BOTH_DATABASES)
class TestCacheCampaignArguments:
    @pytest.fixture(autouse=True)
    def _no_dispatch(self, monkeypatch):
        from campaigns import tasks

        monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)

    def test_start_without_wait(self, make_campaign):
        make_campaign("teste", points=3, cached=1)

        output = run_command("cache_campaign", "teste", "--preset", "tvi")

        run = CachingRun.objects.get(campaign_id="teste")
        assert run.preset == "tvi"
        assert run.state == RunState.DISPATCHING
        assert output.strip() == (
            f"Run {run.id} of campaign teste started: 2 of 3 points to cache, 18 tiles per point, "
            "batch size 5, preset tvi."
        )

    def test_nothing_to_cache(self, make_campaign):
        make_campaign("cheia", points=2, cached=2)

        output = run_command("cache_campaign", "cheia", "--wait")

        assert output.strip() == "Nothing to cache: every one of the 2 points of campaign cheia is already cached."

    @pytest.mark.parametrize(
        "args,expected",
        [
            (["nope"], "Campaign nope not found; give the campaign's _id as TVI shows it"),
            (["teste", "--batch-size", "0"], "Invalid --batch-size 0; use an integer from 1 to 1000."),
            (["teste", "--batch-size", "-3"], "Invalid --batch-size -3; use an integer from 1 to 1000."),
            (["teste", "--preset", "huge"], "Unknown --preset 'huge'; use one of seed, tvi."),
            (["teste", "--timeout", "-1"], "Invalid --timeout -1.0; use 0 or more seconds."),
            (["teste", "--poll-interval", "0"], "Invalid --poll-interval 0.0; use more than 0 seconds."),
        ],
    )
    def test_bad_arguments(self, make_campaign, args, expected):
        make_campaign("teste", points=1)

        with pytest.raises(CommandError) as raised:
            run_command("cache_campaign", *args)

        assert expected in str(raised.value)
        assert not CachingRun.objects.exists()

    def test_already_caching(self, make_campaign):
        make_campaign("teste", points=2)
        run_command("cache_campaign", "teste")
        run = CachingRun.objects.get(campaign_id="teste")

        with pytest.raises(CommandError) as raised:
            run_command("cache_campaign", "teste")

        assert str(raised.value) == (
            f"Campaign teste is already caching (run {run.id}); follow it with campaign_status teste "
            "or stop it with cancel_caching teste."
        )

    def test_uncacheable_campaign(self, make_campaign):
        make_campaign("planeta", points=1, image_type="planet")

        with pytest.raises(CommandError) as raised:
            run_command("cache_campaign", "planeta")

        assert "planet" in str(raised.value)


@pytest.mark.django_db(databases=BOTH_DATABASES)
class TestStatusAndCancel:
    def test_status_text(self, make_campaign):
        make_campaign("teste", points=15)
        Campaign.objects.filter(pk="teste").update(
            total_points=15, cached_points=8, cache_percentage=53.33, caching_error="Point 3_teste failed: boom",
            caching_error_at=timezone.now(),
        )
        CachingRun.objects.create(
            campaign_id="teste", task_id="t1", group_id="g1", state=RunState.FAILED, batch_size=5, preset="seed",
            points_to_cache=10, finished_points=10, succeeded_points=8, failed_points=2, tiles_stored=1234,
            started_by="beat", ended_at=timezone.now(),
        )

        output = run_command("campaign_status", "teste")

        assert "Campaign teste" in output
        assert "  State: failed" in output
        assert "  Cached points: 8 of 15 (53.33 %)" in output
        assert "Point 3_teste failed: boom" in output
        assert ", failed, started by beat" in output
        assert "    Points: 10 of 10 finished, 2 failed" in output
        assert "    Tiles: 1,234 stored, 0 already stored, 0 failed" in output

    def test_status_json(self, make_campaign):
        make_campaign("teste", points=2)

        data = json.loads(run_command("campaign_status", "teste", "--json"))

        assert data["campaign_id"] == "teste"
        assert data["state"] == "idle"
        assert data["total_points"] == 0
        assert data["cache_percentage"] == 0.0
        assert data["run"] is None

    def test_status_of_campaign_without_runs(self, make_campaign):
        make_campaign("teste", points=2)

        output = run_command("campaign_status", "teste")

        assert "  State: idle" in output
        assert "No caching run yet; start one with cache_campaign teste." in output

    def test_status_of_unknown_campaign(self):
        with pytest.raises(CommandError, match="Campaign nope not found"):
            run_command("campaign_status", "nope")

    def test_cancel(self, make_campaign, monkeypatch):
        from cachecampaign.celery import app
        from campaigns import tasks

        monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)
        monkeypatch.setattr(app.control, "revoke", lambda *args, **kwargs: None)
        make_campaign("teste", points=3)
        run_command("cache_campaign", "teste")
        run = CachingRun.objects.get(campaign_id="teste")

        output = run_command("cancel_caching", "teste")

        assert output.strip() == f"Run {run.id} of campaign teste cancelled after 0 of 3 points."
        assert CachingRun.objects.get(pk=run.pk).state == RunState.CANCELLED
        assert Campaign.objects.get(pk="teste").caching_in_progress is False

    def test_cancel_when_not_caching(self, make_campaign):
        make_campaign("teste", points=1)

        with pytest.raises(CommandError) as raised:
            run_command("cancel_caching", "teste")

        assert str(raised.value) == (
            "Campaign teste is not caching; there is no run to cancel. See its state with campaign_status teste."
        )


@pytest.mark.django_db(databases=BOTH_DATABASES)
class TestClearCache:
    def store_all(self, campaign_id: str) -> list[str]:
        plan = campaign_plan(Campaign.objects.get(pk=campaign_id))
        keys = []
        for point in Point.objects.of_campaign(campaign_id):
            for address in plan.addresses_for(point.lon, point.lat):
                write_tile(address, solid_png(5, 5, 5))
                keys.append(tile_key(address))
        Point.objects.of_campaign(campaign_id).update(cached=True, cached_by="test", enhance_in_cache=1)
        return sorted(set(keys))

    def test_clear_with_yes(self, make_campaign):
        make_campaign("teste", points=2, spacing=1.0)
        keys = self.store_all("teste")

        output = run_command("clear_cache", "teste", "--yes")

        assert [key for key in keys if tile_storage().exists(key)] == []
        assert "Tiles: 100%" in output
        assert "Campaign teste cleared: 6 tiles deleted, 0 kept because other campaigns need them, 0 were not " \
               "stored; 2 points reset to not cached." in output
        assert not Point.objects.of_campaign("teste").is_cached().exists()

    def test_without_yes_and_without_terminal(self, make_campaign, monkeypatch):
        make_campaign("teste", points=1)
        keys = self.store_all("teste")
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))

        with pytest.raises(CommandError) as raised:
            run_command("clear_cache", "teste")

        assert "run clear_cache teste --yes" in str(raised.value)
        assert all(tile_storage().exists(key) for key in keys)

    @pytest.mark.parametrize("answer,cleared", [("yes", True), ("sim", True), ("no", False), ("", False)])
    def test_interactive_confirmation(self, make_campaign, monkeypatch, answer, cleared):
        make_campaign("teste", points=1)
        keys = self.store_all("teste")
        terminal = io.StringIO("")
        terminal.isatty = lambda: True  # type: ignore[method-assign]
        monkeypatch.setattr(sys, "stdin", terminal)
        prompts: list[str] = []
        monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or answer)

        output = run_command("clear_cache", "teste")

        assert prompts == [
            "Delete the cached tiles of campaign teste and reset its 1 points to not cached? Type 'yes' to continue: "
        ]
        assert all(not tile_storage().exists(key) for key in keys) is cleared
        if not cleared:
            assert output.strip() == "Clearing cancelled; nothing was changed."

    def test_rejected_while_caching(self, make_campaign):
        make_campaign("teste", points=1)
        Campaign.objects.filter(pk="teste").update(caching_in_progress=True, caching_started_at=timezone.now())

        with pytest.raises(CommandError) as raised:
            run_command("clear_cache", "teste", "--yes")

        assert "stop it with cancel_caching teste" in str(raised.value)

    def test_unknown_campaign(self):
        with pytest.raises(CommandError, match="Campaign nope not found"):
            run_command("clear_cache", "nope", "--yes")


@pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
def test_bad_argument_exits_non_zero(make_campaign):
    make_campaign("teste", points=1)

    finished = subprocess.run(
        [sys.executable, "manage.py", "cache_campaign", "teste", "--batch-size", "0"],
        cwd=ROOT, env=worker_environment({"DJANGO_LANGUAGE_CODE": "en"}), capture_output=True, text=True, timeout=60,
    )

    assert finished.returncode == 1
    assert "Invalid --batch-size 0; use an integer from 1 to 1000." in finished.stderr
    assert not CachingRun.objects.exists()
