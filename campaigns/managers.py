"""Querysets that own the atomic transitions of campaigns, points and runs.

Every state change here is one conditional UPDATE whose row count tells the
caller whether it won, so retries and duplicate deliveries are harmless.
"""

from __future__ import annotations

from datetime import datetime

from typing import Any

from django.db import connections, models
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Greatest, Round


def _percentage_of(count) -> Case:
    return Case(
        When(total_points__gt=0, then=Round(count * Value(100.0) / F("total_points"), 2)),
        default=Value(0.0),
        output_field=models.FloatField(),
    )


# Fields that exist only in relational tables: on MongoDB the TVI document
# itself keeps the fields the model does not declare, so these are never written.
RELATIONAL_ONLY_FIELDS = frozenset({"extra_fields"})


def is_mongodb(alias: str) -> bool:
    return connections[alias].vendor == "mongodb"


class TviDocumentQuerySet(models.QuerySet):
    """Writes of TVI's documents: on MongoDB, ``$set`` or insert only the fields the model declares for TVI.

    ``save()``, ``create()`` and ``bulk_create()`` pass every concrete field
    to ``_insert`` and ``_update``; these drop the relational-only ones when
    the database is MongoDB. Models using this queryset set
    ``base_manager_name = "objects"`` so that ``save()`` comes through here.
    """

    def _insert(self, objs, fields, *args: Any, using: str | None = None, **kwargs: Any):
        if is_mongodb(using or self.db):
            fields = [field for field in fields if field.name not in RELATIONAL_ONLY_FIELDS]
        return super()._insert(objs, fields, *args, using=using, **kwargs)

    def _update(self, values):
        if is_mongodb(self.db):
            values = [value for value in values if value[0].name not in RELATIONAL_ONLY_FIELDS]
        return super()._update(values)

    def update(self, **kwargs: Any) -> int:
        if is_mongodb(self.db) and RELATIONAL_ONLY_FIELDS & kwargs.keys():
            names = ", ".join(sorted(RELATIONAL_ONLY_FIELDS & kwargs.keys()))
            raise ValueError(
                f"{names} exists only on relational databases; on MongoDB, TVI's document keeps the fields "
                "the model does not declare. Update the document with pymongo instead."
            )
        return super().update(**kwargs)


class CampaignQuerySet(TviDocumentQuerySet):
    def not_caching(self) -> CampaignQuerySet:
        # exclude() also matches documents without the field, as TVI creates them.
        return self.exclude(caching_in_progress=True)

    def claim_start(self, campaign_id: str, now: datetime, *, not_started_since: datetime | None = None) -> bool:
        """Set ``caching_in_progress`` if it was unset; return whether this call set it.

        With ``not_started_since``, a campaign whose last run started at or
        after that moment is not claimed either.
        """
        claimable = self.filter(pk=campaign_id).not_caching()
        if not_started_since is not None:
            claimable = claimable.filter(
                Q(caching_started_at__isnull=True) | Q(caching_started_at__lt=not_started_since)
            )
        won = claimable.update(
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

    def remove_cached_point(self, campaign_id: str) -> int:
        """Count one cached point less and recompute the derived fields in the same update."""
        new_count = Greatest(F("cached_points") - 1, Value(0))
        return self.filter(pk=campaign_id).update(
            cached_points=new_count,
            cache_percentage=_percentage_of(new_count),
            all_points_cached=False,
        )

    def reset_progress(self, campaign_id: str, total_points: int) -> int:
        """Record that none of the campaign's ``total_points`` points is cached."""
        return self.filter(pk=campaign_id).update(
            total_points=total_points,
            cached_points=0,
            points_to_cache=0,
            cache_percentage=0.0,
            all_points_cached=False,
            last_point_cached_at=None,
        )

    def record_error(self, campaign_id: str, message: str, now: datetime) -> int:
        return self.filter(pk=campaign_id).update(caching_error=message[:2000], caching_error_at=now)

    def claim_hold(self, campaign_id: str, now: datetime) -> bool:
        """Set ``caching_in_progress`` for work that is not a run; return whether this call set it.

        Only ``caching_started_at`` changes with the flag, to ``now``, so that
        ``runs.start_run`` does not take the flag over as stale while the
        holder renews it.
        """
        won = self.filter(pk=campaign_id).not_caching().update(
            caching_in_progress=True, caching_started_at=now
        )
        return won == 1

    def renew_hold(self, campaign_id: str, held_since: datetime, now: datetime) -> bool:
        """Move a held flag's ``caching_started_at`` from ``held_since`` to ``now``; return whether it was still held."""
        renewed = self.filter(pk=campaign_id, caching_in_progress=True, caching_started_at=held_since).update(
            caching_started_at=now
        )
        return renewed == 1

    def release_hold(self, campaign_id: str, held_since: datetime, started_at: datetime | None) -> bool:
        """Clear a held flag and put back the ``caching_started_at`` of the last run; return whether it was held."""
        released = self.filter(pk=campaign_id, caching_in_progress=True, caching_started_at=held_since).update(
            caching_in_progress=False, caching_started_at=started_at
        )
        return released == 1


class PointQuerySet(TviDocumentQuerySet):
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

    def unmark_cached(self, point_id: str) -> bool:
        """Move one point from cached to not cached; return whether this call moved it."""
        return self.filter(pk=point_id, cached=True).mark_not_cached() == 1


class CachingRunQuerySet(models.QuerySet):
    def active(self) -> CachingRunQuerySet:
        return self.filter(state__in=["dispatching", "running"])

    def of_campaign(self, campaign_id: str) -> CachingRunQuerySet:
        return self.filter(campaign_id=campaign_id)


class RunPointQuerySet(models.QuerySet):
    def of_run(self, run_id) -> RunPointQuerySet:
        return self.filter(run_id=run_id)
