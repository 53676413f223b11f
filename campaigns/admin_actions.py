"""Admin actions on campaigns: start, cancel and re-cache runs, and clear the cache behind a confirmation."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.validators import MaxValueValidator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from campaigns import clearing, runs
from campaigns.display import campaign_state, format_count, latest_runs
from campaigns.models import Campaign, Point
from tiles.grid import preset_names


def started_by(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


class StartCachingForm(forms.Form):
    batch_size = forms.IntegerField(
        label=gettext_lazy("Batch size"),
        min_value=1,
        help_text=gettext_lazy("Point tasks of each campaign queued or running at once."),
    )
    preset = forms.ChoiceField(label=gettext_lazy("Tile-plan preset"), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Settings are read per form, so that a changed maximum applies without a restart of this module.
        batch_size = self.fields["batch_size"]
        batch_size.max_value = settings.CACHE_MAX_BATCH_SIZE
        batch_size.validators.append(MaxValueValidator(settings.CACHE_MAX_BATCH_SIZE))
        batch_size.widget.attrs["max"] = settings.CACHE_MAX_BATCH_SIZE
        batch_size.initial = settings.CACHE_DEFAULT_BATCH_SIZE
        self.fields["preset"].choices = [("", _("The campaign's own preset"))] + [
            (name, name) for name in preset_names()
        ]


def _intermediate_context(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, **extra) -> dict:
    return {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "queryset": queryset,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media,
        **extra,
    }


def _report_start(request: HttpRequest, campaign: Campaign, result: runs.StartResult) -> None:
    run = result.run
    if result.scheduled:
        messages.success(
            request,
            ngettext(
                "Campaign %(id)s: caching started, %(count)s point to cache.",
                "Campaign %(id)s: caching started, %(count)s points to cache.",
                run.points_to_cache,
            )
            % {"id": campaign.id, "count": format_count(run.points_to_cache)},
        )
    else:
        messages.info(
            request, _("Campaign %(id)s: nothing to cache, every point is already cached.") % {"id": campaign.id}
        )


@admin.action(description=gettext_lazy("Start caching"), permissions=["change"])
def start_caching(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    """Ask for the batch size and preset, then start a run of every selected campaign."""
    if "apply" in request.POST:
        form = StartCachingForm(request.POST)
        if form.is_valid():
            batch_size = form.cleaned_data["batch_size"]
            preset = form.cleaned_data["preset"] or None
            for campaign in queryset:
                try:
                    result = runs.start_run(
                        campaign.id, batch_size=batch_size, preset=preset, started_by=started_by(request)
                    )
                except runs.RunError as error:
                    messages.error(
                        request,
                        _("Campaign %(id)s was not started: %(reason)s") % {"id": campaign.id, "reason": error},
                    )
                    continue
                _report_start(request, campaign, result)
            return None
    else:
        form = StartCachingForm()
    context = _intermediate_context(
        modeladmin, request, queryset, form=form, title=_("Start caching"), action="start_caching"
    )
    return TemplateResponse(request, "admin/campaigns/campaign/start_caching.html", context)


@admin.action(description=gettext_lazy("Cancel caching"), permissions=["change"])
def cancel_caching(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    for campaign in queryset:
        try:
            run = runs.cancel_run(campaign.id)
        except runs.NoActiveRun:
            messages.warning(request, _("Campaign %(id)s is not caching; nothing to cancel.") % {"id": campaign.id})
            continue
        except runs.RunError as error:
            messages.error(request, str(error))
            continue
        messages.success(
            request,
            _("Campaign %(id)s: caching cancelled after %(finished)s of %(total)s points.")
            % {
                "id": campaign.id,
                "finished": format_count(run.finished_points),
                "total": format_count(run.points_to_cache),
            },
        )


@admin.action(description=gettext_lazy("Re-cache failed points"), permissions=["change"])
def recache_failed(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Start a run of each selected campaign; a failed point is not cached, so the run caches exactly those."""
    campaigns = list(queryset)
    previous = latest_runs([campaign.id for campaign in campaigns])
    for campaign in campaigns:
        failed_before = previous[campaign.id].failed_points if campaign.id in previous else 0
        try:
            result = runs.start_run(campaign.id, started_by=started_by(request))
        except runs.RunError as error:
            messages.error(
                request, _("Campaign %(id)s was not started: %(reason)s") % {"id": campaign.id, "reason": error}
            )
            continue
        run = result.run
        if not result.scheduled:
            messages.info(
                request, _("Campaign %(id)s: no failed point to re-cache, every point is cached.") % {"id": campaign.id}
            )
            continue
        messages.success(
            request,
            ngettext(
                "Campaign %(id)s: re-caching %(count)s point that is not cached (%(failed)s failed in the last run).",
                "Campaign %(id)s: re-caching %(count)s points that are not cached (%(failed)s failed in the last run).",
                run.points_to_cache,
            )
            % {
                "id": campaign.id,
                "count": format_count(run.points_to_cache),
                "failed": format_count(failed_before),
            },
        )


@admin.action(description=gettext_lazy("Clear cache"), permissions=["change"])
def clear_cache(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    """After a confirmation page, delete each selected campaign's tiles and reset its points."""
    campaigns = list(queryset)
    if request.POST.get("confirm") == "yes":
        for campaign in campaigns:
            try:
                result = clearing.clear_campaign(campaign.id)
            except runs.RunAlreadyActive:
                messages.error(
                    request,
                    _("Campaign %(id)s is caching and was not cleared; cancel the run first.") % {"id": campaign.id},
                )
                continue
            except runs.RunError as error:
                messages.error(request, str(error))
                continue
            messages.success(
                request,
                _(
                    "Campaign %(id)s cleared: %(deleted)s tiles deleted, %(kept)s kept because other campaigns "
                    "need them; %(points)s points reset to not cached."
                )
                % {
                    "id": campaign.id,
                    "deleted": format_count(result.tiles_deleted),
                    "kept": format_count(result.tiles_kept_shared),
                    "points": format_count(result.points_reset),
                },
            )
        return None

    newest = latest_runs([campaign.id for campaign in campaigns])
    rows = [
        {
            "campaign": campaign,
            "points": format_count(Point.objects.of_campaign(campaign.id).count()),
            "cached": format_count(Point.objects.of_campaign(campaign.id).is_cached().count()),
            "state": campaign_state(campaign, newest.get(campaign.id)),
        }
        for campaign in campaigns
    ]
    context = _intermediate_context(
        modeladmin, request, queryset, rows=rows, title=_("Clear the cache of these campaigns?"), action="clear_cache"
    )
    return TemplateResponse(request, "admin/campaigns/campaign/clear_cache_confirmation.html", context)
