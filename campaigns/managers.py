"""Querysets that own the atomic transitions of campaigns, points and runs.

Every state change here is one conditional UPDATE whose row count tells the
caller whether it won, so retries and duplicate deliveries are harmless.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Case, F, Value, When
from django.db.models.functions import Round


class CampaignQuerySet(models.QuerySet):
    def claim_start(self, campaign_id: str, now: datetime) -> bool:
        """Set ``caching_in_progress`` if it was unset; return whether this call set it."""
        won = self.filter(pk=campaign_id, caching_in_progress=False).update(
            caching_in_progress=True,
            caching_started_at=now,
            caching_completed_at=None,
            caching_error=None,
            caching_error_at=None,
        )
        return won == 1

    def add_cached_point(self, campaign_id: str, now: datetime) -> int:
        """Count one more cached point and recompute the derived fields in the same update.

        SQL evaluates every SET expression against the row as it was before
        the update, so ``cached_points + 1`` is the new count everywhere.
        """
        new_count = F("cached_points") + 1
        return self.filter(pk=campaign_id).update(
            cached_points=new_count,
            last_point_cached_at=now,
            cache_percentage=Case(
                When(total_points__gt=0, then=Round(new_count * Value(100.0) / F("total_points"), 2)),
                default=Value(0.0),
                output_field=models.FloatField(),
            ),
            all_points_cached=Case(
                When(total_points__gt=0, total_points__lte=new_count, then=Value(True)),
                default=Value(False),
                output_field=models.BooleanField(),
            ),
        )

    def record_error(self, campaign_id: str, message: str, now: datetime) -> int:
        return self.filter(pk=campaign_id).update(caching_error=message[:2000], caching_error_at=now)


class PointQuerySet(models.QuerySet):
    def of_campaign(self, campaign_id: str) -> PointQuerySet:
        return self.filter(campaign_id=campaign_id)

    def not_cached(self) -> PointQuerySet:
        # exclude() matches NULL as well, which is how TVI's documents without
        # a ``cached`` field must be treated.
        return self.exclude(cached=True)

    def is_cached(self) -> PointQuerySet:
        return self.filter(cached=True)

    def mark_cached(self, point_id: str, now: datetime, cached_by: str) -> bool:
        """Move one point from not cached to cached; return whether this call moved it."""
        won = (
            self.filter(pk=point_id)
            .exclude(cached=True)
            .update(cached=True, cached_at=now, cached_by=cached_by, enhance_in_cache=1)
        )
        return won == 1

    def mark_not_cached(self) -> int:
        return self.update(cached=False, cached_at=None, cached_by=None, enhance_in_cache=None)


class CachingRunQuerySet(models.QuerySet):
    def active(self) -> CachingRunQuerySet:
        return self.filter(state__in=["dispatching", "running"])

    def of_campaign(self, campaign_id: str) -> CachingRunQuerySet:
        return self.filter(campaign_id=campaign_id)


class RunPointQuerySet(models.QuerySet):
    def of_run(self, run_id) -> RunPointQuerySet:
        return self.filter(run_id=run_id)
