"""Cache one point inside the caller's process, and report what one point has stored.

``cache_one_point`` is synchronous: it produces the point's missing tiles in
the calling process (the API request) instead of queueing a run, so the
caller gets the outcome in the response. It holds the campaign's caching
flag while it works, so it is rejected while a run or a clear is going, and
it counts the point through ``progress.mark_point_cached``, the same
conditional transition a run uses. Points whose plan has more than
``settings.CACHE_POINT_MAX_TILES`` tiles are rejected: producing them would
hold the request for minutes, and a campaign run does it in the background.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.holds import hold_campaign
from campaigns.models import Campaign, Point
from campaigns.progress import mark_point_cached
from campaigns.runs import CampaignNotFound, InvalidCampaign, PointNotFound, RunError, campaign_plan
from tiles.seeding import seed_tiles
from tiles.storage import tile_exists

logger = logging.getLogger(__name__)

# Tiles produced between two renewals of the campaign's flag.
SEED_CHUNK = 50


class TooManyTiles(RunError):
    code = "too_many_tiles"


class PointCacheFailed(RunError):
    """Some tiles of the point failed; ``result`` has the counts and the first error."""

    code = "tiles_failed"

    def __init__(self, message: str, result: PointCacheResult):
        super().__init__(message)
        self.result = result


@dataclass
class PointCacheResult:
    status: str
    point_id: str
    campaign_id: str
    # Whether this call moved the point to cached and counted it on its campaign.
    counted: bool
    total_tiles: int = 0
    successful_tiles: int = 0
    failed_tiles: int = 0
    stored_tiles: int = 0
    skipped_tiles: int = 0
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _point_and_campaign(point_id: str) -> tuple[dict, Campaign]:
    point = Point.objects.filter(pk=point_id).values("campaign_id", "lon", "lat", "cached").first()
    if point is None:
        raise PointNotFound(_("Point %(id)s not found.") % {"id": point_id})
    campaign = Campaign.objects.filter(pk=point["campaign_id"]).first()
    if campaign is None:
        raise CampaignNotFound(
            _("Campaign %(campaign)s of point %(point)s not found.")
            % {"campaign": point["campaign_id"], "point": point_id}
        )
    return point, campaign


def cache_one_point(point_id: str, *, cached_by: str = "api") -> PointCacheResult:
    """Produce a point's missing tiles now and mark it cached when none failed.

    Raises ``PointNotFound``, ``CampaignNotFound``, ``InvalidCampaign``,
    ``TooManyTiles``, ``RunAlreadyActive`` while the campaign is caching, and
    ``PointCacheFailed`` when a tile failed (the error is recorded on the campaign).
    """
    point, campaign = _point_and_campaign(point_id)
    plan = campaign_plan(campaign)
    addresses = plan.addresses_for(point["lon"], point["lat"])
    limit = settings.CACHE_POINT_MAX_TILES
    if len(addresses) > limit:
        raise TooManyTiles(
            _(
                "Point %(point)s needs %(count)d tiles, more than the %(max)d cached within one request; "
                "start a run of campaign %(campaign)s instead."
            )
            % {"point": point_id, "count": len(addresses), "max": limit, "campaign": campaign.id}
        )

    result = PointCacheResult("completed", point_id, campaign.id, counted=False, total_tiles=len(addresses))
    with hold_campaign(campaign.id, f"caching point {point_id}") as hold:
        if Point.objects.filter(pk=point_id, cached=True).exists():
            result.status = "already_cached"
            return result
        first_error = ""
        for start in range(0, len(addresses), SEED_CHUNK):
            hold.renew()
            outcome = seed_tiles(addresses[start:start + SEED_CHUNK])
            result.stored_tiles += outcome.stored
            result.skipped_tiles += outcome.skipped
            result.failed_tiles += outcome.failed
            if outcome.failed and not first_error:
                first_error = outcome.error_summary()
        result.successful_tiles = result.stored_tiles + result.skipped_tiles
        if result.failed_tiles:
            result.status = "failed"
            result.error = _("%(failed)d of %(total)d tiles failed; first: %(error)s") % {
                "failed": result.failed_tiles, "total": result.total_tiles, "error": first_error,
            }
            message = _("Point %(point)s failed: %(error)s") % {"point": point_id, "error": result.error}
            Campaign.objects.record_error(campaign.id, message, timezone.now())
            logger.warning("Point %s of campaign %s not cached: %s", point_id, campaign.id, result.error)
            raise PointCacheFailed(message, result)
        result.counted = mark_point_cached(point_id, campaign.id, cached_by)
    logger.info(
        "Point %s of campaign %s cached on request: %d tiles stored, %d already stored",
        point_id, campaign.id, result.stored_tiles, result.skipped_tiles,
    )
    return result


def point_status(point_id: str) -> dict:
    """Return a point's cached flags and how many tiles of its campaign's plan are stored.

    Checks storage once per tile of the plan. For a campaign that cannot be
    cached the tile counts are None and ``plan_error`` gives the reason.
    """
    point = Point.objects.filter(pk=point_id).first()
    if point is None:
        raise PointNotFound(_("Point %(id)s not found.") % {"id": point_id})
    data = {
        "point_id": point.id,
        "campaign_id": point.campaign_id,
        "lon": point.lon,
        "lat": point.lat,
        "cached": point.cached is True,
        "cached_at": point.cached_at,
        "cached_by": point.cached_by,
        "enhance_in_cache": point.enhance_in_cache,
        "preset": None,
        "total_tiles": None,
        "stored_tiles": None,
        "missing_tiles": None,
        "plan_error": None,
    }
    campaign = Campaign.objects.filter(pk=point.campaign_id).first()
    if campaign is None:
        data["plan_error"] = _("Campaign %(id)s not found.") % {"id": point.campaign_id}
        return data
    try:
        plan = campaign_plan(campaign)
    except InvalidCampaign as error:
        data["plan_error"] = str(error)
        return data
    addresses = plan.addresses_for(point.lon, point.lat)
    stored = sum(1 for address in addresses if tile_exists(address))
    data.update(
        preset=plan.preset.name, total_tiles=len(addresses), stored_tiles=stored, missing_tiles=len(addresses) - stored
    )
    return data
