"""The periodic re-cache: start runs for campaigns that gained points or whose tiles went stale.

Celery beat sends ``campaigns.recache_due_campaigns`` on the schedule stored
in the database (the "Re-cache campaigns" periodic task, daily at 03:00
America/Sao_Paulo unless an operator changes it in the admin). A campaign is
due when:

- some of its points are not cached (new points, or points that failed); or
- ``settings.CACHE_MAX_TILE_AGE_DAYS`` is above 0 and its tiles were last
  refreshed longer ago than that. Tiles count as refreshed when a run that
  went over every point of the campaign (it started with no point cached)
  and that was not cancelled started. A campaign with cached points and no
  such run, such as one cached by other software, counts as stale.

A stale campaign's run marks every cached point not cached first, so it goes
over all points again. Every run this task starts produces again each stored
tile written before ``now - CACHE_MAX_TILE_AGE_DAYS``. Younger tiles, such as
those another campaign refreshed a moment ago, are kept.

Two ticks at once, from two beat processes or a retried message, start one
run per campaign: ``runs.start_run`` claims the campaign with one
conditional update, and it is told not to claim a campaign whose last run
started after this tick began.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from campaigns import runs
from campaigns.models import CachingRun, Campaign, Point, RunState

logger = logging.getLogger(__name__)

STARTED_BY = "beat"
UNCACHED = "uncached"
STALE = "stale"


def tiles_refreshed_at(campaign_id: str) -> datetime | None:
    """Return when the campaign's latest run over all of its points started, or None if it had none."""
    return (
        CachingRun.objects.of_campaign(campaign_id)
        .filter(state__in=[RunState.COMPLETED, RunState.FAILED], already_cached=0, points_to_cache__gt=0)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def due_reason(campaign_id: str, refresh_before: datetime | None) -> str | None:
    """Return why a campaign is due for a run (``uncached`` or ``stale``), or None when it is not due."""
    points = Point.objects.of_campaign(campaign_id)
    if points.not_cached().exists():
        return UNCACHED
    if refresh_before is None or not points.exists():
        return None
    refreshed_at = tiles_refreshed_at(campaign_id)
    if refreshed_at is None or refreshed_at < refresh_before:
        return STALE
    return None


def recache_due_campaigns(now: datetime | None = None) -> dict:
    """Start a run for every due campaign that is not caching; return what was started and skipped."""
    tick_started = now or timezone.now()
    max_age_days = settings.CACHE_MAX_TILE_AGE_DAYS
    refresh_before = tick_started - timedelta(days=max_age_days) if max_age_days else None
    report: dict[str, list] = {"started": [], "skipped": [], "invalid": []}

    idle = Campaign.objects.not_caching().order_by("pk").values_list("pk", flat=True)
    for campaign_id in idle.iterator(chunk_size=500):
        reason = due_reason(campaign_id, refresh_before)
        if reason is None:
            continue
        try:
            result = runs.start_run(
                campaign_id,
                started_by=STARTED_BY,
                not_started_since=tick_started,
                refresh_before=refresh_before,
                reset_cached=reason == STALE,
            )
        except (runs.RunAlreadyActive, runs.StartedRecently) as error:
            logger.info("Re-cache: campaign %s skipped: %s", campaign_id, error)
            report["skipped"].append(campaign_id)
            continue
        except runs.CampaignNotFound:
            continue
        except runs.InvalidCampaign as error:
            logger.info("Re-cache: campaign %s cannot be cached: %s", campaign_id, error)
            report["invalid"].append(campaign_id)
            continue
        run = result.run
        logger.info(
            "Re-cache: campaign %s started (%s), run %s, %d points to cache",
            campaign_id, reason, run.id, run.points_to_cache,
        )
        report["started"].append(
            {"campaign_id": campaign_id, "reason": reason, "run_id": str(run.id), "points_to_cache": run.points_to_cache}
        )
    logger.info(
        "Re-cache tick: %d campaigns started, %d skipped, %d cannot be cached",
        len(report["started"]), len(report["skipped"]), len(report["invalid"]),
    )
    return report
