"""Shared fixtures: people, campaigns, a real Celery worker and the counting tile source."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import pytest
from django.conf import settings
from django.utils import translation
from django.db import connections
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from cachecampaign.routers import shares_default_database
from campaigns.models import CachingRun, Campaign, Point
from tests.workers import running_worker
from tiles.sources import reset_sources

# The databases a test touching campaigns needs: one when the campaigns alias
# shares the default database (the router then uses default's connection).
BOTH_DATABASES = ["default"] if shares_default_database() else ["default", "campaigns"]
VAR_DIR = Path(os.environ["CACHECAMPAIGN_VAR_DIR"])
PRODUCED_LOG = VAR_DIR / "tiles-produced.log"


@pytest.fixture(autouse=True)
def _fresh_tile_state(settings, tmp_path):
    """Give every test an empty tile store and a clean counting-source control folder."""
    tiles_root = VAR_DIR / "tiles"
    if tiles_root.exists():
        import shutil

        shutil.rmtree(tiles_root)
    for name in ("fail-keys.txt", "delay.txt", PRODUCED_LOG.name):
        (VAR_DIR / name).unlink(missing_ok=True)
    reset_sources()
    # A request with Accept-Language or a test that activates pt-br leaves that
    # language active in the thread; every test starts in the settings' language.
    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.deactivate()
    reset_sources()
    _stop_leftover_runs()


def _stop_leftover_runs() -> None:
    """Cancel runs a test left active, and let the workers finish their tasks.

    A worker outlives the test that started a run; without this, tasks of
    that run would produce tiles while the next test counts its own.
    """
    from campaigns import runs

    try:
        campaign_ids = list(CachingRun.objects.active().values_list("campaign_id", flat=True))
    except RuntimeError:
        return  # the test had no database access
    if not campaign_ids:
        return
    for campaign_id in campaign_ids:
        try:
            runs.cancel_run(campaign_id)
        except runs.RunError:
            pass
    from cachecampaign.celery import app

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        replies = app.control.inspect(timeout=0.5).active() or {}
        if not any(replies.values()):
            break
        time.sleep(0.2)


@pytest.fixture
def staff_user(db) -> User:
    return User.objects.create_user("operator", "operator@example.org", "s3cret-pass", is_staff=True)


@pytest.fixture
def plain_user(db) -> User:
    return User.objects.create_user("inspector", "inspector@example.org", "s3cret-pass", is_staff=False)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=staff_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


CampaignFactory = Callable[..., Campaign]


@pytest.fixture
def make_campaign() -> CampaignFactory:
    """Create a campaign with ``points`` points around a location, 0.01 degrees apart."""

    def make(
        campaign_id: str = "teste",
        points: int = 3,
        *,
        lon: float = -54.5,
        lat: float = -25.3,
        spacing: float = 0.01,
        cached: int = 0,
        **fields,
    ) -> Campaign:
        defaults = {"initial_year": 2020, "final_year": 2020, "vis_params": ["landsat-tvi-true"]}
        defaults.update(fields)
        campaign = Campaign.objects.create(id=campaign_id, **defaults)
        Point.objects.bulk_create(
            Point(
                id=f"{index}_{campaign_id}",
                campaign=campaign,
                lon=lon + (index - 1) * spacing,
                lat=lat,
                cached=True if index <= cached else None,
            )
            for index in range(1, points + 1)
        )
        return campaign

    return make


def produced_tiles() -> list[str]:
    """Keys the counting source produced since the test began, one entry per production."""
    if not PRODUCED_LOG.exists():
        return []
    return [line.split()[0] for line in PRODUCED_LOG.read_text().splitlines() if line.strip()]


def wait_for_run_end(campaign_id: str, timeout: float = 60.0) -> CachingRun:
    """Poll until the campaign's latest run has ended and its flag is cleared; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = CachingRun.objects.of_campaign(campaign_id).first()
        flagged = Campaign.objects.filter(pk=campaign_id, caching_in_progress=True).exists()
        if run is not None and not run.is_active and not flagged:
            return run
        time.sleep(0.1)
    run = CachingRun.objects.of_campaign(campaign_id).first()
    pytest.fail(f"Run of campaign {campaign_id} still {run.state if run else 'missing'} after {timeout} s")


@pytest.fixture(scope="module")
def celery_worker(django_db_setup, django_db_blocker):
    """A real Celery worker process (prefork, two children) for the tests of one module.

    Module scope lets a module that needs workers of its own (another tile
    source, a killed worker) run with no other worker taking its tasks.
    """
    with django_db_blocker.unblock():
        with running_worker(concurrency=2) as process:
            yield process


@pytest.fixture
def control_file() -> Callable[[str, str], None]:
    """Write a control file the counting source reads on every fetch."""

    def write(name: str, content: str) -> None:
        (VAR_DIR / name).write_text(content)

    return write


def campaigns_on_mongodb() -> bool:
    """Return whether MONGODB_URI sends the campaigns alias to MongoDB (the live ``mongodb`` tier)."""
    return connections["campaigns"].vendor == "mongodb"


def pytest_collection_modifyitems(config, items):
    if campaigns_on_mongodb():
        return
    skip = pytest.mark.skip(
        reason="MONGODB_URI is not set: the mongodb tier needs a MongoDB 6.0+ server (see docs/mongodb.md)"
    )
    for item in items:
        if "mongodb" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return [
        f"database: {settings.DATABASES['default']['ENGINE']}",
        f"broker: {settings.CELERY_BROKER_URL}",
        f"scratch folder: {VAR_DIR}",
        f"campaigns database: {connections['campaigns'].display_name}",
    ]
