"""Clear the cache of a campaign or of one point: delete stored tiles and reset the cached flags.

Tile keys name no campaign (``landsat/landsat-tvi-true/DRY/2020/13/2940/4705.png``),
so points of several campaigns can share a stored tile. A clear deletes only
the tiles that no point outside what it clears needs, whatever that point's
``cached`` flag, and keeps the others: deleting a shared tile would leave
another campaign's cached point without its tiles. The tiles considered are
those of the campaign's current plan and of the plan of every run it had,
since a run may have used another preset.

A clear holds the campaign's caching flag (``campaigns.holds``), so it is
rejected while a run is active and no run starts before it ends. It resets
the cached flags first and deletes tiles after, so an interrupted clear
leaves points not cached with some tiles still stored, which the next run
finds and keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from campaigns.holds import CampaignHold, HoldLost, hold_campaign
from campaigns.models import Campaign, Point
from campaigns.runs import CampaignNotFound, PointNotFound
from campaigns.tile_sets import TileSet, campaign_plans, run_plans_by_campaign, tile_set_of_points, tiles_needed_elsewhere
from tiles.storage import tile_key, tile_storage

logger = logging.getLogger(__name__)

# Called with (tiles handled so far, tiles to handle) while tiles are deleted.
Progress = Callable[[int, int], None]
PROGRESS_EVERY = 100


@dataclass
class ClearResult:
    campaign_id: str
    point_id: str | None
    # Points whose cached flags were reset, and of those how many were cached.
    points_reset: int
    points_were_cached: int
    # Tiles the cleared points need under their plans, split by outcome.
    tiles_planned: int
    tiles_deleted: int
    tiles_not_stored: int
    tiles_kept_shared: int
    # True when another process took the campaign's flag and the clear stopped early.
    interrupted: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def clear_campaign(campaign_id: str, *, progress: Progress | None = None) -> ClearResult:
    """Reset every point of a campaign to not cached and delete the tiles no other campaign needs.

    Raises ``CampaignNotFound``, or ``RunAlreadyActive`` while the campaign is caching.
    """
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise CampaignNotFound(_("Campaign %(id)s not found.") % {"id": campaign_id})
    with hold_campaign(campaign_id, "clearing its cache") as hold:
        points = Point.objects.of_campaign(campaign_id)
        flagged = points.filter(Q(cached=True) | Q(enhance_in_cache__isnull=False) | Q(cached_at__isnull=False))
        with transaction.atomic(using=Point.objects.db):
            were_cached = points.is_cached().count()
            reset = flagged.mark_not_cached()
            Campaign.objects.reset_progress(campaign_id, points.count())
        logger.info("Campaign %s: cached flags of %d points reset", campaign_id, reset)

        plans = campaign_plans(campaign, run_plans_by_campaign([campaign_id]).get(campaign_id, ()))
        tile_set = tile_set_of_points(points, plans, on_point=hold.renew)
        shared = tiles_needed_elsewhere(tile_set, exclude_campaign=campaign_id)
        result = ClearResult(
            campaign_id=campaign_id,
            point_id=None,
            points_reset=reset,
            points_were_cached=were_cached,
            tiles_planned=tile_set.tile_count(),
            tiles_deleted=0,
            tiles_not_stored=0,
            tiles_kept_shared=tile_set.tile_count() - tile_set.count_excluding(shared),
        )
        _delete_tiles(tile_set, shared, hold, result, progress)
    logger.info(
        "Campaign %s cleared: %d tiles deleted, %d not stored, %d kept for other campaigns%s",
        campaign_id, result.tiles_deleted, result.tiles_not_stored, result.tiles_kept_shared,
        " (interrupted)" if result.interrupted else "",
    )
    return result


def clear_point(point_id: str, *, progress: Progress | None = None) -> ClearResult:
    """Reset one point to not cached and delete the tiles of it that no other point needs.

    The campaign's ``cached_points`` goes down by one only when this call
    moved the point from cached to not cached. Raises ``PointNotFound``, or
    ``RunAlreadyActive`` while the point's campaign is caching.
    """
    point = Point.objects.filter(pk=point_id).values("campaign_id", "lon", "lat").first()
    if point is None:
        raise PointNotFound(_("Point %(id)s not found.") % {"id": point_id})
    campaign_id = point["campaign_id"]
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise CampaignNotFound(
            _("Campaign %(campaign)s of point %(point)s not found.") % {"campaign": campaign_id, "point": point_id}
        )
    with hold_campaign(campaign_id, f"clearing point {point_id}") as hold:
        with transaction.atomic(using=Point.objects.db):
            moved = Point.objects.unmark_cached(point_id)
            if moved:
                Campaign.objects.remove_cached_point(campaign_id)
            else:
                Point.objects.filter(pk=point_id).mark_not_cached()

        plans = campaign_plans(campaign, run_plans_by_campaign([campaign_id]).get(campaign_id, ()))
        tile_set = tile_set_of_points(Point.objects.filter(pk=point_id), plans)
        shared = tiles_needed_elsewhere(tile_set, exclude_point=point_id)
        result = ClearResult(
            campaign_id=campaign_id,
            point_id=point_id,
            points_reset=1,
            points_were_cached=1 if moved else 0,
            tiles_planned=tile_set.tile_count(),
            tiles_deleted=0,
            tiles_not_stored=0,
            tiles_kept_shared=tile_set.tile_count() - tile_set.count_excluding(shared),
        )
        _delete_tiles(tile_set, shared, hold, result, progress)
    logger.info(
        "Point %s of campaign %s cleared: %d tiles deleted, %d not stored, %d kept for other points",
        point_id, campaign_id, result.tiles_deleted, result.tiles_not_stored, result.tiles_kept_shared,
    )
    return result


def _delete_tiles(
    tile_set: TileSet, shared: dict, hold: CampaignHold, result: ClearResult, progress: Progress | None
) -> None:
    storage = tile_storage()
    total = tile_set.count_excluding(shared)
    handled = 0
    if progress is not None:
        progress(0, total)
    for address in tile_set.addresses(excluded=shared):
        key = tile_key(address)
        if storage.exists(key):
            storage.delete(key)
            result.tiles_deleted += 1
        else:
            result.tiles_not_stored += 1
        handled += 1
        if handled % PROGRESS_EVERY == 0:
            try:
                hold.renew()
            except HoldLost as error:
                logger.warning("Clearing campaign %s stopped after %d tiles: %s", result.campaign_id, handled, error)
                result.interrupted = True
                break
            if progress is not None:
                progress(handled, total)
    if progress is not None and not result.interrupted:
        progress(handled, total)
