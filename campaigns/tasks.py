"""Celery tasks of a caching run; thin adapters onto ``runs`` and ``caching``."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError

from campaigns import caching, recache, runs

logger = logging.getLogger(__name__)

DATABASE_RETRY = {
    "autoretry_for": (DatabaseError,),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name="campaigns.dispatch_run", **DATABASE_RETRY)
def dispatch_run(run_id: str) -> dict:
    return runs.dispatch(run_id)


@shared_task(name="campaigns.cache_point", **DATABASE_RETRY)
def cache_point(point_id: str, run_id: str) -> dict:
    return caching.cache_point(point_id, run_id, cached_by="celery-task")


# The callbacks return nothing worth a result row per point.
@shared_task(name="campaigns.record_point_result", ignore_result=True, **DATABASE_RETRY)
def record_point_result(result: dict, run_id: str) -> None:
    """Link callback of every point task: record its outcome and keep the run going."""
    runs.point_finished(run_id, result["point_id"], result)


@shared_task(name="campaigns.record_point_error", ignore_result=True)
def record_point_error(request, exc, traceback, run_id: str, point_id: str) -> None:
    """Error callback of a point task that raised: count the point as failed with the reason."""
    from campaigns.models import Point

    # The task may have cached the point and failed afterwards, for example
    # while sending this very callback during a broker outage: a cached point
    # counts as done, not as failed.
    if Point.objects.filter(pk=point_id, cached=True).exists():
        logger.warning("Point %s of run %s raised %s after it was cached: %s", point_id, run_id,
                       type(exc).__name__, exc)
        runs.point_finished(run_id, point_id, {"status": "already_cached", "point_id": point_id})
        return
    logger.error("Point %s of run %s raised %s: %s", point_id, run_id, type(exc).__name__, exc)
    runs.point_finished(run_id, point_id, {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})


def send_point_task(point_id: str, run_id: str, task_id: str) -> None:
    cache_point.apply_async(
        args=[point_id, run_id],
        task_id=task_id,
        link=record_point_result.s(run_id),
        link_error=record_point_error.s(run_id, point_id),
    )


@shared_task(name="campaigns.recache_due_campaigns")
def recache_due_campaigns() -> dict:
    """Periodic task: start runs for campaigns with not-cached points or stale tiles."""
    return recache.recache_due_campaigns()


@shared_task(name="campaigns.resume_stalled_runs", ignore_result=True)
def resume_stalled_runs() -> int:
    """Resume every active run with no finished point for ``CACHE_STALL_SECONDS``; return how many."""
    from datetime import timedelta

    from django.conf import settings

    resumed = 0
    for run in runs.stalled_runs(timedelta(seconds=settings.CACHE_STALL_SECONDS)):
        try:
            runs.resume_run(str(run.pk))
            resumed += 1
        except runs.NoActiveRun:
            continue
    return resumed
