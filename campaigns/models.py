"""Campaigns and points as TVI stores them, and the records of caching runs.

``Campaign`` and ``Point`` map onto TVI's ``campaign`` and ``points``
collections: the column names are TVI's (``initialYear``, ``cachedAt``) and
the primary keys are TVI's strings. Python attributes use snake_case and name
their column explicitly. ``CachingRun`` and ``RunPoint`` are this service's
own bookkeeping and always live on the relational ``default`` database.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _

from campaigns.fields import LegacyIntegerField
from campaigns.managers import CampaignQuerySet, CachingRunQuerySet, PointQuerySet, RunPointQuerySet


class Campaign(models.Model):
    id = models.CharField(_("id"), primary_key=True, max_length=255, db_column="_id")
    initial_year = LegacyIntegerField(_("initial year"), db_column="initialYear", null=True, blank=True)
    final_year = LegacyIntegerField(_("final year"), db_column="finalYear", null=True, blank=True)
    vis_params = models.JSONField(_("vis params"), db_column="visParams", null=True, blank=True)
    vis_params_enable = models.JSONField(
        _("vis params (older name)"), db_column="visParamsEnable", null=True, blank=True
    )
    vis_param = models.CharField(_("vis param (single)"), db_column="visParam", max_length=100, null=True, blank=True)
    image_type = models.CharField(_("image type"), db_column="imageType", max_length=100, default="landsat")
    tile_preset = models.CharField(
        _("tile-plan preset"),
        max_length=100,
        null=True,
        blank=True,
        help_text=_("Tile-plan preset used to cache this campaign; empty means the service default."),
    )

    caching_in_progress = models.BooleanField(_("caching in progress"), default=False)
    caching_started_at = models.DateTimeField(_("caching started at"), null=True, blank=True)
    total_points = models.IntegerField(_("total points"), default=0)
    points_to_cache = models.IntegerField(_("points to cache"), default=0)
    cached_points = models.IntegerField(_("cached points"), default=0)
    cache_percentage = models.FloatField(_("cache percentage"), default=0.0)
    last_point_cached_at = models.DateTimeField(_("last point cached at"), null=True, blank=True)
    caching_completed_at = models.DateTimeField(_("caching completed at"), null=True, blank=True)
    all_points_cached = models.BooleanField(_("all points cached"), default=False)
    caching_error = models.TextField(_("caching error"), null=True, blank=True)
    caching_error_at = models.DateTimeField(_("caching error at"), null=True, blank=True)

    # Fields of TVI documents this model does not declare, kept on relational
    # databases so that a loaded dump exports back unchanged. On MongoDB the
    # document itself keeps them and this attribute is never written.
    extra_fields = models.JSONField(_("other TVI fields"), default=dict, blank=True, db_column="_extra")

    objects = CampaignQuerySet.as_manager()

    class Meta:
        db_table = "campaign"
        # save() writes through the queryset that keeps relational-only fields off MongoDB.
        base_manager_name = "objects"
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class Point(models.Model):
    id = models.CharField(_("id"), primary_key=True, max_length=300, db_column="_id")
    campaign = models.ForeignKey(
        Campaign,
        verbose_name=_("campaign"),
        db_column="campaign",
        db_constraint=False,
        db_index=False,
        # TVI owns the points: deleting a campaign here must never delete
        # inspection data as a side effect.
        on_delete=models.DO_NOTHING,
        related_name="points",
    )
    lon = models.FloatField(_("longitude"))
    lat = models.FloatField(_("latitude"))
    # A missing field (NULL) means not cached, as in TVI.
    cached = models.BooleanField(_("cached"), null=True, blank=True, default=None)
    cached_at = models.DateTimeField(_("cached at"), db_column="cachedAt", null=True, blank=True)
    cached_by = models.CharField(_("cached by"), db_column="cachedBy", max_length=100, null=True, blank=True)
    enhance_in_cache = models.IntegerField(_("enhance in cache"), null=True, blank=True)
    extra_fields = models.JSONField(_("other TVI fields"), default=dict, blank=True, db_column="_extra")

    objects = PointQuerySet.as_manager()

    class Meta:
        db_table = "points"
        # save() writes through the queryset that keeps relational-only fields off MongoDB.
        base_manager_name = "objects"
        verbose_name = _("point")
        verbose_name_plural = _("points")
        ordering = ["id"]
        indexes = [models.Index(fields=["campaign", "cached"], name="points_campaign_cached")]

    def __str__(self) -> str:
        return self.id


class RunState(models.TextChoices):
    DISPATCHING = "dispatching", _("dispatching")
    RUNNING = "running", _("running")
    COMPLETED = "completed", _("completed")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


ACTIVE_RUN_STATES = (RunState.DISPATCHING, RunState.RUNNING)


class CachingRun(models.Model):
    """One caching run of a campaign: its plan, its counters and how it ended."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign_id = models.CharField(_("campaign"), max_length=255, db_index=True)
    task_id = models.CharField(_("dispatch task id"), max_length=255, unique=True)
    group_id = models.CharField(_("group id"), max_length=255)
    state = models.CharField(_("state"), max_length=20, choices=RunState.choices, default=RunState.DISPATCHING)
    started_by = models.CharField(_("started by"), max_length=150, default="api")
    batch_size = models.PositiveIntegerField(_("batch size"))
    preset = models.CharField(_("tile-plan preset"), max_length=100)
    # Snapshot of what every point of this run caches: layer, years, vis
    # params, zooms, buffer, periods and months.
    plan = models.JSONField(_("plan"), default=dict)
    tiles_per_point = models.PositiveIntegerField(_("tiles per point"), default=0)

    total_points = models.PositiveIntegerField(_("total points"), default=0)
    already_cached = models.PositiveIntegerField(_("already cached"), default=0)
    points_to_cache = models.PositiveIntegerField(_("points to cache"), default=0)
    dispatch_complete = models.BooleanField(_("dispatch complete"), default=False)
    finished_points = models.PositiveIntegerField(_("finished points"), default=0)
    succeeded_points = models.PositiveIntegerField(_("succeeded points"), default=0)
    failed_points = models.PositiveIntegerField(_("failed points"), default=0)
    tiles_stored = models.PositiveBigIntegerField(_("tiles stored"), default=0)
    tiles_skipped = models.PositiveBigIntegerField(_("tiles already stored"), default=0)
    tiles_failed = models.PositiveBigIntegerField(_("tiles failed"), default=0)
    last_error = models.TextField(_("last error"), blank=True, default="")

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    # When a point of the run last finished; a watchdog resumes runs that
    # stop progressing (a killed worker, a broker that lost its queues).
    last_progress_at = models.DateTimeField(_("last progress at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)

    objects = CachingRunQuerySet.as_manager()

    class Meta:
        verbose_name = _("caching run")
        verbose_name_plural = _("caching runs")
        ordering = ["-created_at"]
        constraints = [
            # A second guard next to the atomic flag on the campaign: a
            # campaign has at most one active run.
            models.UniqueConstraint(
                fields=["campaign_id"],
                condition=models.Q(state__in=["dispatching", "running"]),
                name="one_active_run_per_campaign",
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} @ {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_RUN_STATES

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None or self.created_at is None:
            return None
        return (self.ended_at - self.created_at).total_seconds()


class RunPointState(models.TextChoices):
    PENDING = "pending", _("pending")
    DISPATCHED = "dispatched", _("dispatched")
    SUCCEEDED = "succeeded", _("succeeded")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


FINISHED_POINT_STATES = (RunPointState.SUCCEEDED, RunPointState.FAILED)


class RunPoint(models.Model):
    """A point a run set out to cache; its state makes every step idempotent."""

    run = models.ForeignKey(CachingRun, on_delete=models.CASCADE, related_name="run_points")
    point_id = models.CharField(_("point"), max_length=300)
    state = models.CharField(_("state"), max_length=20, choices=RunPointState.choices, default=RunPointState.PENDING)
    task_id = models.CharField(_("task id"), max_length=255, null=True, blank=True, db_index=True)
    error = models.TextField(_("error"), blank=True, default="")
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    objects = RunPointQuerySet.as_manager()

    class Meta:
        verbose_name = _("run point")
        verbose_name_plural = _("run points")
        constraints = [models.UniqueConstraint(fields=["run", "point_id"], name="one_entry_per_run_point")]
        # Claiming the next pending point reads this index in order, so it
        # costs the same at the start and at the end of a 100,000-point run.
        indexes = [models.Index(fields=["run", "state", "id"], name="runpoint_run_state_id")]

    def __str__(self) -> str:
        return f"{self.point_id} ({self.state})"
