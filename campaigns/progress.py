"""The per-point transition, the campaign's progress counters and the status payload."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from campaigns.models import Campaign, Point

logger = logging.getLogger(__name__)


def mark_point_cached(point_id: str, campaign_id: str, cached_by: str) -> bool:
    """Mark a point cached and count it on its campaign, once.

    The point moves from not cached to cached in one conditional update; only
    the call that moved it increments the campaign, so a retried or
    duplicated task counts the point once. Returns whether this call moved it.
    """
    now = timezone.now()
    with transaction.atomic(using=Point.objects.db):
        moved = Point.objects.mark_cached(point_id, now, cached_by)
        if moved:
            Campaign.objects.add_cached_point(campaign_id, now)
    if not moved:
        logger.info("Point %s of campaign %s was already cached; not counted again", point_id, campaign_id)
    return moved


def percentage(cached: int, total: int) -> float:
    return round(cached * 100.0 / total, 2) if total > 0 else 0.0


def status_payload(campaign: Campaign) -> dict:
    """Return the campaign's progress as the status endpoint reports it, from stored fields only."""
    return {
        "campaign_id": campaign.id,
        "total_points": campaign.total_points,
        "cached_points": campaign.cached_points,
        "cache_percentage": campaign.cache_percentage,
        "caching_in_progress": campaign.caching_in_progress,
        "caching_started_at": campaign.caching_started_at,
        "last_point_cached_at": campaign.last_point_cached_at,
        "points_to_cache": campaign.points_to_cache,
        "all_points_cached": campaign.all_points_cached,
        "caching_completed_at": campaign.caching_completed_at,
        "caching_error": campaign.caching_error,
        "caching_error_at": campaign.caching_error_at,
    }
