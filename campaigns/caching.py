"""Cache one point: store every tile of its plan, then mark it cached."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from functools import lru_cache

from campaigns.models import ACTIVE_RUN_STATES, CachingRun, Point
from campaigns.progress import mark_point_cached
from tiles.plan import CachePlan
from tiles.seeding import seed_tiles

logger = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def _plan_of_run(run_id: str) -> CachePlan:
    # A run's plan never changes after the run is recorded.
    plan = CachingRun.objects.values_list("plan", flat=True).get(pk=run_id)
    return CachePlan.from_dict(plan)


@lru_cache(maxsize=64)
def _refresh_before_of_run(run_id: str) -> datetime | None:
    """Return the moment before which the run produces stored tiles again, if it has one."""
    plan = CachingRun.objects.values_list("plan", flat=True).get(pk=run_id)
    value = plan.get("refresh_before")
    return datetime.fromisoformat(value) if value else None


def point_result(status: str, point_id: str, **fields) -> dict:
    result = {
        "status": status,
        "point_id": point_id,
        "total_tiles": 0,
        "successful_tiles": 0,
        "failed_tiles": 0,
        "stored_tiles": 0,
        "skipped_tiles": 0,
    }
    result.update(fields)
    return result


def cache_point(point_id: str, run_id: str, cached_by: str = "celery-task") -> dict:
    """Store every missing tile of a point and mark it cached when none failed.

    Returns ``{status, point_id, total_tiles, successful_tiles, failed_tiles}``
    plus the stored and skipped counts and, on failure, ``error``. The status
    is ``completed``, ``already_cached``, ``failed`` or ``cancelled``.
    """
    started = time.monotonic()
    run = CachingRun.objects.filter(pk=run_id).values("state", "campaign_id").first()
    if run is None or run["state"] not in ACTIVE_RUN_STATES:
        logger.info("Point %s: run %s is no longer active; skipped", point_id, run_id)
        return point_result("cancelled", point_id)

    point = Point.objects.filter(pk=point_id).values("lon", "lat", "cached", "campaign_id").first()
    if point is None:
        return point_result("failed", point_id, error=f"point {point_id} no longer exists")
    if point["cached"] is True:
        logger.info("Point %s is already cached; skipped", point_id)
        return point_result("already_cached", point_id)

    plan = _plan_of_run(str(run_id))
    addresses = plan.addresses_for(point["lon"], point["lat"])
    planned = time.monotonic()
    outcome = seed_tiles(addresses, refresh_before=_refresh_before_of_run(str(run_id)))
    seeded = time.monotonic()
    fields = {
        "total_tiles": outcome.total,
        "successful_tiles": outcome.successful,
        "failed_tiles": outcome.failed,
        "stored_tiles": outcome.stored,
        "skipped_tiles": outcome.skipped,
    }
    if outcome.failed:
        error = f"{outcome.failed} of {outcome.total} tiles failed; first: {outcome.error_summary()}"
        logger.warning("Point %s of run %s not cached: %s", point_id, run_id, error)
        return point_result("failed", point_id, error=error, **fields)

    mark_point_cached(point_id, point["campaign_id"], cached_by)
    logger.info(
        "Point %s cached: %d tiles stored, %d already stored (plan %.0f ms, tiles %.0f ms, mark %.0f ms)",
        point_id, outcome.stored, outcome.skipped,
        (planned - started) * 1000, (seeded - planned) * 1000, (time.monotonic() - seeded) * 1000,
    )
    return point_result("completed", point_id, **fields)
