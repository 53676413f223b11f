"""Display helpers for operators: a campaign's derived state, and numbers and times in the active language's format."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import OuterRef, Subquery
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.models import ACTIVE_RUN_STATES, CachingRun, Campaign, RunState


class CampaignState(models.TextChoices):
    IDLE = "idle", gettext_lazy("idle")
    CACHING = "caching", gettext_lazy("caching")
    COMPLETED = "completed", gettext_lazy("completed")
    FAILED = "failed", gettext_lazy("failed")
    CANCELLED = "cancelled", gettext_lazy("cancelled")


RUN_END_STATES = {
    RunState.COMPLETED: CampaignState.COMPLETED,
    RunState.FAILED: CampaignState.FAILED,
    RunState.CANCELLED: CampaignState.CANCELLED,
}


def campaign_state(campaign: Campaign, latest_run: CachingRun | None) -> CampaignState:
    """Derive a campaign's state from its caching flag and its latest run.

    The state is ``caching`` while the flag is set or the latest run is
    active. Otherwise it is how the latest run ended, or ``idle`` when the
    campaign never had a run.
    """
    if campaign.caching_in_progress or (latest_run is not None and latest_run.state in ACTIVE_RUN_STATES):
        return CampaignState.CACHING
    if latest_run is None:
        return CampaignState.IDLE
    return RUN_END_STATES.get(latest_run.state, CampaignState.IDLE)


def latest_runs(campaign_ids: list[str]) -> dict[str, CachingRun]:
    """Return the latest run of each of these campaigns, in one query."""
    if not campaign_ids:
        return {}
    newest = CachingRun.objects.filter(campaign_id=OuterRef("campaign_id")).order_by("-created_at").values("pk")[:1]
    runs = CachingRun.objects.filter(campaign_id__in=campaign_ids, pk=Subquery(newest))
    return {run.campaign_id: run for run in runs}


def campaign_ids_in_state(state: str) -> tuple[list[str], bool]:
    """Return the ids of campaigns whose latest run puts them in ``state``, and whether to exclude them instead.

    ``idle`` campaigns are those without any run, so for ``idle`` the ids of
    campaigns that had a run come back with ``True``: the caller excludes them.
    """
    newest = CachingRun.objects.filter(campaign_id=OuterRef("campaign_id")).order_by("-created_at").values("pk")[:1]
    latest = CachingRun.objects.filter(pk=Subquery(newest))
    if state == CampaignState.IDLE:
        return list(CachingRun.objects.values_list("campaign_id", flat=True).distinct()), True
    if state == CampaignState.CACHING:
        return list(latest.filter(state__in=ACTIVE_RUN_STATES).values_list("campaign_id", flat=True)), False
    run_states = [run_state for run_state, campaign_state in RUN_END_STATES.items() if campaign_state == state]
    return list(latest.filter(state__in=run_states).values_list("campaign_id", flat=True)), False


def format_percentage(value: float | None) -> str:
    """Format a percentage with two decimals in the active language, such as ``53,33 %`` in Portuguese."""
    return "%s %%" % formats.number_format(value or 0.0, 2)


def format_count(value: int | None) -> str:
    """Format a count with the active language's thousand separator, such as ``12.345`` in Portuguese."""
    return formats.number_format(value or 0, force_grouping=True)


def format_datetime(value: datetime | None) -> str:
    """Format a moment in the current time zone and the active language, or an em dash when unset."""
    if value is None:
        return "—"
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def format_duration(seconds: float | None) -> str:
    """Format a duration such as ``2 min 05 s`` or ``1 h 02 min``, or an em dash when unknown."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return _("%(seconds)s s") % {"seconds": formats.number_format(seconds, 1)}
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(hours)d h %(minutes)02d min") % {"hours": hours, "minutes": minutes}
    return _("%(minutes)d min %(seconds)02d s") % {"minutes": minutes, "seconds": secs}
