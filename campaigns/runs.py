"""Start, feed, finish and cancel caching runs. Domain functions; no Celery task lives here.

A run keeps at most ``batch_size`` point tasks of its campaign queued or
running. ``dispatch`` streams the campaign's not-cached point ids into the
run's ledger (``RunPoint`` rows) and sends the first window of tasks. Each
point task is linked to ``point_finished``, which records the point's
outcome once, sends the next pending point, and closes the run when the
last point has finished.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import (
    ACTIVE_RUN_STATES,
    CachingRun,
    Campaign,
    Point,
    RunPoint,
    RunPointState,
    RunState,
)
from campaigns.progress import percentage
from tiles.plan import CachePlan, build_plan

logger = logging.getLogger(__name__)

LEDGER_CHUNK = 2000
# A start that loses the race reports the winner's run. The winner records it
# within milliseconds of its claim, so a loser looks for it for up to 1 s.
ACTIVE_RUN_LOOKUPS = 20
ACTIVE_RUN_LOOKUP_INTERVAL = 0.05
# A campaign flagged as caching with no active run in this service for this
# long is taken over by a new start: the flag was left by a crashed process or
# by another system.
STALE_FLAG_AFTER = timedelta(seconds=60)


class RunError(Exception):
    """Base class of errors a caller turns into a response or a message."""

    code = "run_error"


class CampaignNotFound(RunError):
    code = "campaign_not_found"


class PointNotFound(RunError):
    code = "point_not_found"


class RunAlreadyActive(RunError):
    code = "already_caching"

    def __init__(self, message: str, run: CachingRun | None):
        super().__init__(message)
        self.run = run


class InvalidCampaign(RunError):
    code = "invalid_campaign"


class NoActiveRun(RunError):
    code = "not_caching"


class StartedRecently(RunError):
    code = "started_recently"


@dataclass(frozen=True)
class StartResult:
    run: CachingRun
    scheduled: bool


def campaign_plan(campaign: Campaign, preset_name: str | None = None) -> CachePlan:
    """Build the plan of a campaign, raising ``InvalidCampaign`` with the reason."""
    from tiles.errors import TileError

    try:
        return build_plan(
            image_type=campaign.image_type,
            initial_year=campaign.initial_year,
            final_year=campaign.final_year,
            vis_params=campaign.vis_params,
            vis_params_enable=campaign.vis_params_enable,
            vis_param=campaign.vis_param,
            preset_name=preset_name or campaign.tile_preset,
        )
    except TileError as error:
        raise InvalidCampaign(_("Campaign %(id)s cannot be cached: %(reason)s") % {"id": campaign.id, "reason": error})


def plan_record(plan: CachePlan, refresh_before: datetime | None = None) -> dict:
    """Return the plan as a run stores it, with the moment before which stored tiles are produced again."""
    record = plan.as_dict()
    if refresh_before is not None:
        record["refresh_before"] = refresh_before.isoformat()
    return record


def validate_batch_size(value) -> int:
    maximum = settings.CACHE_MAX_BATCH_SIZE
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidCampaign(
            _("Invalid batch_size %(value)r; use an integer from 1 to %(max)d.") % {"value": value, "max": maximum}
        )
    return value


def start_run(
    campaign_id: str,
    *,
    batch_size: int | None = None,
    preset: str | None = None,
    started_by: str = "api",
    not_started_since: datetime | None = None,
    refresh_before: datetime | None = None,
    reset_cached: bool = False,
) -> StartResult:
    """Start caching a campaign's not-cached points.

    Raises ``CampaignNotFound``, ``InvalidCampaign`` or ``RunAlreadyActive``,
    and ``StartedRecently`` when ``not_started_since`` is given and the
    campaign's last run started at or after it. With ``refresh_before`` the
    run produces again every stored tile last written before that moment.
    With ``reset_cached`` every cached point of the campaign is marked not
    cached once the campaign is claimed, so that the run goes over all of them.
    The dispatch task is sent after the transaction commits; a campaign with
    nothing to cache ends at once without sending any task.
    """
    batch = validate_batch_size(settings.CACHE_DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise CampaignNotFound(_("Campaign %(id)s not found.") % {"id": campaign_id})
    plan = campaign_plan(campaign, preset)

    now = timezone.now()
    claimed = Campaign.objects.claim_start(campaign_id, now, not_started_since=not_started_since)
    if not claimed and not _take_over_stale_flag(campaign_id, now, not_started_since):
        active = _active_run_of(campaign_id)
        if active is None and not_started_since is not None and _started_since(campaign_id, not_started_since):
            raise StartedRecently(
                _("Campaign %(id)s started caching after %(time)s; not started again.")
                % {"id": campaign_id, "time": not_started_since.isoformat()}
            )
        raise RunAlreadyActive(_("Campaign %(id)s is already caching.") % {"id": campaign_id}, active)

    try:
        if reset_cached:
            reset = Point.objects.of_campaign(campaign_id).is_cached().mark_not_cached()
            logger.info("Campaign %s: %d cached points marked not cached to be cached again", campaign_id, reset)
        return _record_run(campaign_id, plan, batch, started_by, now, refresh_before)
    except Exception:
        Campaign.objects.filter(pk=campaign_id).update(caching_in_progress=False)
        raise


def _active_run_of(campaign_id: str) -> CachingRun | None:
    """Return the campaign's active run, waiting briefly for a start that has claimed it but not recorded it yet."""
    for _attempt in range(ACTIVE_RUN_LOOKUPS):
        active = CachingRun.objects.active().of_campaign(campaign_id).first()
        if active is not None:
            return active
        if not Campaign.objects.filter(pk=campaign_id, caching_in_progress=True).exists():
            return None
        time.sleep(ACTIVE_RUN_LOOKUP_INTERVAL)
    return None


def _started_since(campaign_id: str, moment: datetime) -> bool:
    """Return whether the campaign is not caching and its last run started at or after ``moment``."""
    return Campaign.objects.filter(pk=campaign_id, caching_in_progress=False, caching_started_at__gte=moment).exists()


def _take_over_stale_flag(campaign_id: str, now, not_started_since: datetime | None = None) -> bool:
    if CachingRun.objects.active().of_campaign(campaign_id).exists():
        return False
    flagged_at = Campaign.objects.filter(pk=campaign_id).values_list("caching_started_at", flat=True).first()
    if flagged_at is not None and now - flagged_at < STALE_FLAG_AFTER:
        return False
    if flagged_at is not None and not_started_since is not None and flagged_at >= not_started_since:
        return False
    won = Campaign.objects.filter(pk=campaign_id, caching_in_progress=True, caching_started_at=flagged_at).update(
        caching_started_at=now, caching_completed_at=None, caching_error=None, caching_error_at=None
    )
    if won:
        logger.warning("Campaign %s was flagged as caching with no active run; starting a new run", campaign_id)
    return won == 1


def _record_run(
    campaign_id: str, plan: CachePlan, batch: int, started_by: str, now, refresh_before: datetime | None = None
) -> StartResult:
    points = Point.objects.of_campaign(campaign_id)
    total = points.count()
    already = points.is_cached().count()
    to_cache = total - already
    Campaign.objects.filter(pk=campaign_id).update(
        total_points=total,
        cached_points=already,
        points_to_cache=to_cache,
        cache_percentage=percentage(already, total),
        all_points_cached=total > 0 and already >= total,
        last_point_cached_at=None,
    )
    run_id = uuid.uuid4()
    nothing_to_do = to_cache == 0
    try:
        run = CachingRun.objects.create(
            id=run_id,
            campaign_id=campaign_id,
            task_id=str(uuid.uuid4()),
            group_id=str(run_id),
            state=RunState.COMPLETED if nothing_to_do else RunState.DISPATCHING,
            started_by=started_by,
            batch_size=batch,
            preset=plan.preset.name,
            plan=plan_record(plan, refresh_before),
            tiles_per_point=plan.tiles_per_point(),
            total_points=total,
            already_cached=already,
            points_to_cache=to_cache,
            dispatch_complete=nothing_to_do,
            ended_at=now if nothing_to_do else None,
        )
    except IntegrityError:
        active = CachingRun.objects.active().of_campaign(campaign_id).first()
        raise RunAlreadyActive(_("Campaign %(id)s is already caching.") % {"id": campaign_id}, active) from None

    if nothing_to_do:
        Campaign.objects.filter(pk=campaign_id).update(caching_in_progress=False, caching_completed_at=now)
        logger.info("Campaign %s has no point to cache; run %s ended at once", campaign_id, run.id)
        return StartResult(run, scheduled=False)

    from campaigns.tasks import dispatch_run

    transaction.on_commit(
        lambda: dispatch_run.apply_async(args=[str(run.id)], task_id=run.task_id), using="default"
    )
    logger.info(
        "Campaign %s: run %s started by %s, %d of %d points to cache, batch size %d",
        campaign_id, run.id, started_by, to_cache, total, batch,
    )
    return StartResult(run, scheduled=True)


def dispatch(run_id: str) -> dict:
    """Fill the run's ledger with the campaign's not-cached points and send the first window."""
    run = CachingRun.objects.filter(pk=run_id).first()
    if run is None or run.state not in ACTIVE_RUN_STATES:
        logger.info("Run %s is gone or no longer active; nothing to dispatch", run_id)
        return {"run_id": str(run_id), "dispatched": 0}

    if not run.dispatch_complete:
        ledger_size = _fill_ledger(run)
        Campaign.objects.filter(pk=run.campaign_id).update(points_to_cache=ledger_size)
        # Conditional on the run still being active: a cancel that arrived while
        # the ledger filled must not be undone.
        still_active = CachingRun.objects.filter(pk=run.pk, state__in=ACTIVE_RUN_STATES).update(
            points_to_cache=ledger_size, dispatch_complete=True, state=RunState.RUNNING
        )
        if not still_active:
            RunPoint.objects.of_run(run.pk).filter(state=RunPointState.PENDING).update(
                state=RunPointState.CANCELLED, finished_at=timezone.now()
            )
            logger.info("Run %s was cancelled while its ledger filled; nothing dispatched", run.pk)
            return {"run_id": str(run.pk), "dispatched": 0}
        run.refresh_from_db()
        if ledger_size == 0:
            close_run(run.pk)
            return {"run_id": str(run.pk), "dispatched": 0}

    in_flight = RunPoint.objects.of_run(run.pk).filter(state=RunPointState.DISPATCHED).count()
    sent = send_pending(run, max(run.batch_size - in_flight, 0))
    return {"run_id": str(run.pk), "dispatched": sent, "points_to_cache": run.points_to_cache}


def _fill_ledger(run: CachingRun) -> int:
    """Copy the ids of the campaign's not-cached points into the run's ledger, streaming them."""
    ids = (
        Point.objects.of_campaign(run.campaign_id)
        .not_cached()
        .order_by("pk")
        .values_list("pk", flat=True)
        .iterator(chunk_size=LEDGER_CHUNK)
    )
    chunk: list[RunPoint] = []
    for point_id in ids:
        chunk.append(RunPoint(run_id=run.pk, point_id=point_id))
        if len(chunk) >= LEDGER_CHUNK:
            RunPoint.objects.bulk_create(chunk, ignore_conflicts=True)
            chunk = []
    if chunk:
        RunPoint.objects.bulk_create(chunk, ignore_conflicts=True)
    return RunPoint.objects.of_run(run.pk).count()


def send_pending(run: CachingRun, count: int) -> int:
    """Claim up to ``count`` pending points of a run and send their tasks; return how many were sent."""
    sent = 0
    while sent < count:
        claimed = _claim_pending(run.pk, count - sent)
        if not claimed:
            break
        _send_claimed(run.pk, claimed)
        sent += len(claimed)
    return sent


def pending_in_order(run_id):
    """Return the run's pending ledger entries in the order they are sent, read off an index without sorting."""
    return RunPoint.objects.of_run(run_id).filter(state=RunPointState.PENDING).order_by("pk")


def _claim_pending(run_id, count: int) -> list[tuple[int, str, str]]:
    """Move up to ``count`` pending points of a run to dispatched; return their ledger ids, point ids and task ids.

    Returns an empty list only when no point is pending: a point that a
    concurrent claim takes first is skipped and the next one is tried.
    """
    claimed: list[tuple[int, str, str]] = []
    while len(claimed) < count:
        candidates = list(pending_in_order(run_id).values_list("pk", "point_id")[: count - len(claimed)])
        if not candidates:
            break
        for pk, point_id in candidates:
            task_id = str(uuid.uuid4())
            if RunPoint.objects.filter(pk=pk, state=RunPointState.PENDING).update(
                state=RunPointState.DISPATCHED, task_id=task_id
            ):
                claimed.append((pk, point_id, task_id))
    return claimed


def _send_claimed(run_id, claimed: list[tuple[int, str, str]]) -> None:
    """Send the tasks of claimed points; a point whose task could not be sent goes back to pending."""
    from campaigns.tasks import send_point_task

    for index, (pk, point_id, task_id) in enumerate(claimed):
        try:
            send_point_task(point_id, str(run_id), task_id)
        except Exception:
            for unsent_pk, _point_id, unsent_task_id in claimed[index:]:
                RunPoint.objects.filter(pk=unsent_pk, task_id=unsent_task_id).update(
                    state=RunPointState.PENDING, task_id=None
                )
            raise


def resume_run(run_id: str) -> dict:
    """Send again the tasks of an active run that nothing is working on, and refill its window.

    After a worker is killed or the broker loses its queues, a run's
    dispatched points may have no task left anywhere, and the run would
    wait forever. Resuming re-sends the dispatch task when the ledger is
    not complete, re-sends every dispatched point that has not finished
    (a point still being worked on is then done twice, which counts once),
    and tops the window up to ``batch_size``. Raises ``NoActiveRun``.
    """
    from campaigns.tasks import dispatch_run, send_point_task

    run = CachingRun.objects.filter(pk=run_id).first()
    if run is None or run.state not in ACTIVE_RUN_STATES:
        raise NoActiveRun(_("Run %(id)s is not active; start a new run instead.") % {"id": run_id})
    CachingRun.objects.filter(pk=run.pk).update(last_progress_at=timezone.now())
    if not run.dispatch_complete:
        dispatch_run.apply_async(args=[str(run.pk)])
        logger.warning("Run %s resumed: its dispatch task was sent again", run.pk)
        return {"run_id": str(run.pk), "resent": 0, "sent": 0, "dispatch": True}

    resent = 0
    in_flight = RunPoint.objects.of_run(run.pk).filter(state=RunPointState.DISPATCHED)
    for pk, point_id in in_flight.values_list("pk", "point_id").iterator(chunk_size=LEDGER_CHUNK):
        task_id = str(uuid.uuid4())
        if RunPoint.objects.filter(pk=pk, state=RunPointState.DISPATCHED).update(task_id=task_id):
            send_point_task(point_id, str(run.pk), task_id)
            resent += 1
    sent = send_pending(run, max(run.batch_size - resent, 0))
    logger.warning("Run %s of campaign %s resumed: %d point tasks sent again, %d new", run.pk, run.campaign_id,
                   resent, sent)
    run.refresh_from_db()
    if run.dispatch_complete and run.finished_points >= run.points_to_cache:
        close_run(run.pk)
    return {"run_id": str(run.pk), "resent": resent, "sent": sent, "dispatch": False}


def stalled_runs(stalled_for: timedelta):
    """Return the active runs with no finished point for at least ``stalled_for``."""
    from django.db.models.functions import Coalesce

    limit = timezone.now() - stalled_for
    return (
        CachingRun.objects.active()
        .annotate(progress_at=Coalesce("last_progress_at", "created_at"))
        .filter(progress_at__lt=limit)
    )


def point_finished(run_id: str, point_id: str, result: dict) -> None:
    """Record one point's outcome once, keep the window full and close the run after its last point.

    The outcome, the run's counters and the claim of the next pending point
    commit together, so a callback that dies half way changes nothing and
    its redelivery counts the point once.
    """
    succeeded = result.get("status") in ("completed", "already_cached")
    now = timezone.now()
    counters = {
        "last_progress_at": now,
        "finished_points": F("finished_points") + 1,
        "tiles_stored": F("tiles_stored") + int(result.get("stored_tiles", 0)),
        "tiles_skipped": F("tiles_skipped") + int(result.get("skipped_tiles", 0)),
        "tiles_failed": F("tiles_failed") + int(result.get("failed_tiles", 0)),
    }
    error = ""
    if succeeded:
        counters["succeeded_points"] = F("succeeded_points") + 1
    else:
        error = _("Point %(point)s failed: %(error)s") % {"point": point_id, "error": result.get("error", "")}
        counters["failed_points"] = F("failed_points") + 1
        counters["last_error"] = error[:2000]

    with transaction.atomic(using=CachingRun.objects.db):
        moved = (
            RunPoint.objects.of_run(run_id)
            .filter(point_id=point_id, state__in=[RunPointState.DISPATCHED, RunPointState.PENDING])
            .update(
                state=RunPointState.SUCCEEDED if succeeded else RunPointState.FAILED,
                error="" if succeeded else str(result.get("error", ""))[:2000],
                finished_at=now,
            )
        )
        if not moved:
            logger.info("Run %s: outcome of point %s was already recorded; ignoring the duplicate", run_id, point_id)
            return
        CachingRun.objects.filter(pk=run_id).update(**counters)
        state, dispatch_complete, finished, to_cache, campaign_id = CachingRun.objects.values_list(
            "state", "dispatch_complete", "finished_points", "points_to_cache", "campaign_id"
        ).get(pk=run_id)
        claimed = _claim_pending(run_id, 1) if state in ACTIVE_RUN_STATES else []

    if not succeeded:
        Campaign.objects.record_error(campaign_id, error[:2000], now)
        logger.warning("Run %s: %s", run_id, error)
    if claimed:
        _send_claimed(run_id, claimed)
    if dispatch_complete and finished >= to_cache:
        close_run(run_id)


def close_run(run_id) -> bool:
    """End an active run as completed or failed and update the campaign; return whether this call ended it."""
    run = CachingRun.objects.get(pk=run_id)
    final_state = RunState.FAILED if run.failed_points else RunState.COMPLETED
    now = timezone.now()
    ended = CachingRun.objects.filter(pk=run_id, state__in=ACTIVE_RUN_STATES).update(state=final_state, ended_at=now)
    if not ended:
        return False
    _end_campaign(run.campaign_id, now)
    logger.info(
        "Run %s of campaign %s ended %s: %d points succeeded, %d failed",
        run_id, run.campaign_id, final_state, run.succeeded_points, run.failed_points,
    )
    return True


def _end_campaign(campaign_id: str, now) -> None:
    """Clear the caching flag and recount the campaign's cached points once, at the end of a run."""
    points = Point.objects.of_campaign(campaign_id)
    cached = points.is_cached().count()
    campaign = Campaign.objects.filter(pk=campaign_id).values("total_points").first()
    total = campaign["total_points"] if campaign else 0
    Campaign.objects.filter(pk=campaign_id).update(
        caching_in_progress=False,
        caching_completed_at=now,
        cached_points=cached,
        cache_percentage=percentage(cached, total),
        all_points_cached=total > 0 and cached >= total,
    )


def cancel_run(campaign_id: str) -> CachingRun:
    """Cancel the campaign's active run: revoke its queued tasks and end it."""
    from cachecampaign.celery import app

    if not Campaign.objects.filter(pk=campaign_id).exists():
        raise CampaignNotFound(_("Campaign %(id)s not found.") % {"id": campaign_id})
    run = CachingRun.objects.active().of_campaign(campaign_id).first()
    now = timezone.now()
    if run is None:
        cleared = Campaign.objects.filter(pk=campaign_id, caching_in_progress=True).update(
            caching_in_progress=False, caching_completed_at=now
        )
        if cleared:
            logger.warning("Campaign %s was flagged as caching with no active run; flag cleared", campaign_id)
        raise NoActiveRun(_("Campaign %(id)s is not caching.") % {"id": campaign_id})

    CachingRun.objects.filter(pk=run.pk, state__in=ACTIVE_RUN_STATES).update(state=RunState.CANCELLED, ended_at=now)
    ledger = RunPoint.objects.of_run(run.pk)
    ledger.filter(state=RunPointState.PENDING).update(state=RunPointState.CANCELLED, finished_at=now)
    in_flight = list(ledger.filter(state=RunPointState.DISPATCHED).values_list("task_id", flat=True))
    ledger.filter(state=RunPointState.DISPATCHED).update(state=RunPointState.CANCELLED, finished_at=now)
    task_ids = [task_id for task_id in in_flight if task_id] + [run.task_id]
    try:
        app.control.revoke(task_ids)
    except Exception as error:  # noqa: BLE001 - the run is cancelled either way; tasks re-check it
        logger.warning("Run %s: revoking %d tasks failed: %s", run.pk, len(task_ids), error)
    _end_campaign(campaign_id, now)
    run.refresh_from_db()
    logger.info("Run %s of campaign %s cancelled; %d queued tasks revoked", run.pk, campaign_id, len(task_ids) - 1)
    return run
