"""The Django admin of campaigns, points and caching runs.

Campaigns show their progress and derived state, run history and a live
progress panel; points show their stored tiles as a picture grid. Runs are
read-only records. The actions live in ``campaigns.admin_actions``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns import admin_actions
from campaigns.display import (
    CampaignState,
    campaign_ids_in_state,
    campaign_state,
    format_count,
    format_datetime,
    format_duration,
    format_percentage,
    latest_runs,
)
from campaigns.models import CachingRun, Campaign, Point, RunPoint, RunPointState
from campaigns.tile_grid import point_tile_grid
from tiles.address import TileAddress
from tiles.errors import InvalidTileRequest, StorageError
from tiles.storage import read_tile
from tiles.views import parse_address

# Runs listed on a campaign's change page, newest first.
RUN_HISTORY_LENGTH = 20
# Milliseconds between two reads of a running campaign's progress on its change page.
PROGRESS_POLL_MILLISECONDS = 2000
PROGRESS_FIELDS = (
    "caching_in_progress",
    "caching_started_at",
    "total_points",
    "points_to_cache",
    "cached_points",
    "cache_percentage",
    "last_point_cached_at",
    "caching_completed_at",
    "all_points_cached",
    "caching_error",
    "caching_error_at",
)


def progress_bar_html(cached: int, total: int, percentage: float) -> str:
    """Render cached/total, the percentage and a bar whose width is the percentage."""
    width = f"{max(0.0, min(percentage or 0.0, 100.0)):.2f}"
    return format_html(
        '<div class="cc-progress" title="{}"><div class="cc-progress-bar" style="width: {}%"></div></div>'
        '<span class="cc-progress-text">{} / {} · {}</span>',
        format_percentage(percentage),
        width,
        format_count(cached),
        format_count(total),
        format_percentage(percentage),
    )


class CampaignStateFilter(admin.SimpleListFilter):
    title = gettext_lazy("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return CampaignState.choices

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        if value not in CampaignState.values:
            return queryset.none()
        ids, exclude = campaign_ids_in_state(value)
        if value == CampaignState.CACHING:
            return queryset.filter(caching_in_progress=True) | queryset.filter(pk__in=ids)
        queryset = queryset.not_caching()
        return queryset.exclude(pk__in=ids) if exclude else queryset.filter(pk__in=ids)


class InProgressFilter(admin.SimpleListFilter):
    title = gettext_lazy("caching in progress")
    parameter_name = "in_progress"

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(caching_in_progress=True)
        if self.value() == "no":
            # exclude() also matches TVI documents without the field.
            return queryset.not_caching()
        return queryset


class CampaignChangeList(ChangeList):
    """Reads the latest run of every campaign on the page in one query, for the state column."""

    def get_results(self, request):
        super().get_results(request)
        newest = latest_runs([campaign.id for campaign in self.result_list])
        for campaign in self.result_list:
            campaign.latest_run = newest.get(campaign.id)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = (
        "id", "image_type", "state_display", "progress_display", "error_display",
        "caching_started_at", "caching_completed_at",
    )
    list_filter = (CampaignStateFilter, "image_type", InProgressFilter)
    search_fields = ("id",)
    readonly_fields = PROGRESS_FIELDS
    fieldsets = (
        (None, {"fields": ("id", "image_type", "initial_year", "final_year", "tile_preset")}),
        (gettext_lazy("Vis params"), {"fields": ("vis_params", "vis_params_enable", "vis_param")}),
        (gettext_lazy("Caching progress"), {"fields": PROGRESS_FIELDS}),
    )
    actions = [
        admin_actions.start_caching,
        admin_actions.cancel_caching,
        admin_actions.recache_failed,
        admin_actions.clear_cache,
    ]
    list_per_page = 50

    class Media:
        css = {"all": ["campaigns/admin/campaigns.css"]}
        js = ["campaigns/admin/campaign_progress.js"]

    def get_changelist(self, request, **kwargs):
        return CampaignChangeList

    def _state(self, campaign: Campaign) -> CampaignState:
        if not hasattr(campaign, "latest_run"):
            campaign.latest_run = CachingRun.objects.of_campaign(campaign.id).first()
        return campaign_state(campaign, campaign.latest_run)

    @admin.display(description=gettext_lazy("state"))
    def state_display(self, campaign: Campaign) -> str:
        state = self._state(campaign)
        return format_html('<span class="cc-state cc-state-{}">{}</span>', state.value, state.label)

    @admin.display(description=gettext_lazy("progress"), ordering="cache_percentage")
    def progress_display(self, campaign: Campaign) -> str:
        return progress_bar_html(campaign.cached_points, campaign.total_points, campaign.cache_percentage)

    @admin.display(description=gettext_lazy("last error"))
    def error_display(self, campaign: Campaign) -> str:
        if not campaign.caching_error:
            return "—"
        return format_html(
            '<span title="{}">{}</span>', campaign.caching_error, Truncator(campaign.caching_error).chars(80)
        )

    def get_readonly_fields(self, request, obj=None):
        # The id is TVI's primary key: set once, when the campaign is added here.
        return (("id",) if obj is not None else ()) + PROGRESS_FIELDS

    def get_urls(self):
        urls = [
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="campaigns_campaign_progress",
            )
        ]
        return urls + super().get_urls()

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """Staff-only JSON of a campaign's progress, with numbers formatted for the active language."""
        campaign = self.get_object(request, unquote(object_id))
        if campaign is None or not self.has_view_permission(request, campaign):
            raise Http404(_("Campaign %(id)s not found.") % {"id": object_id})
        return JsonResponse(progress_data(campaign))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        campaign = self.get_object(request, unquote(object_id))
        if campaign is not None:
            runs = list(CachingRun.objects.of_campaign(campaign.id)[:RUN_HISTORY_LENGTH])
            extra_context.update(
                run_history=[run_row(run) for run in runs],
                progress=progress_data(campaign, runs[0] if runs else None),
                progress_url=reverse("admin:campaigns_campaign_progress", args=[quote(campaign.pk)]),
                progress_poll_milliseconds=PROGRESS_POLL_MILLISECONDS,
            )
        return super().change_view(request, object_id, form_url, extra_context)


def run_row(run: CachingRun) -> dict:
    return {
        "run": run,
        "state": run.get_state_display(),
        "created_at": format_datetime(run.created_at),
        "ended_at": format_datetime(run.ended_at),
        "duration": format_duration(run.duration_seconds),
        "points_to_cache": format_count(run.points_to_cache),
        "finished": format_count(run.finished_points),
        "succeeded": format_count(run.succeeded_points),
        "failed": format_count(run.failed_points),
        "tiles_stored": format_count(run.tiles_stored),
        "tiles_skipped": format_count(run.tiles_skipped),
        "tiles_failed": format_count(run.tiles_failed),
        "url": reverse("admin:campaigns_cachingrun_change", args=[run.pk]),
    }


def progress_data(campaign: Campaign, latest_run: CachingRun | None = None) -> dict:
    """Return a campaign's progress with display strings in the active language, for the live panel."""
    if latest_run is None:
        latest_run = CachingRun.objects.of_campaign(campaign.id).first()
    state = campaign_state(campaign, latest_run)
    percentage = campaign.cache_percentage or 0.0
    data = {
        "campaign_id": campaign.id,
        "caching_in_progress": bool(campaign.caching_in_progress),
        "state": state.value,
        "state_label": str(state.label),
        "cached_points": campaign.cached_points,
        "total_points": campaign.total_points,
        "cache_percentage": percentage,
        "bar_width": f"{max(0.0, min(percentage, 100.0)):.2f}",
        "percentage_display": format_percentage(percentage),
        "points_display": _("%(cached)s of %(total)s points cached")
        % {"cached": format_count(campaign.cached_points), "total": format_count(campaign.total_points)},
        "started_display": format_datetime(campaign.caching_started_at),
        "last_point_display": format_datetime(campaign.last_point_cached_at),
        "completed_display": format_datetime(campaign.caching_completed_at),
        "error": campaign.caching_error or "",
        "run": None,
    }
    if latest_run is not None:
        data["run"] = {
            "run_id": str(latest_run.id),
            "state": latest_run.state,
            "state_label": str(latest_run.get_state_display()),
            "points_display": _("%(finished)s of %(total)s points finished, %(failed)s failed")
            % {
                "finished": format_count(latest_run.finished_points),
                "total": format_count(latest_run.points_to_cache),
                "failed": format_count(latest_run.failed_points),
            },
            "tiles_display": _("%(stored)s tiles stored, %(skipped)s already stored, %(failed)s failed")
            % {
                "stored": format_count(latest_run.tiles_stored),
                "skipped": format_count(latest_run.tiles_skipped),
                "failed": format_count(latest_run.tiles_failed),
            },
        }
    return data


@admin.register(CachingRun)
class CachingRunAdmin(admin.ModelAdmin):
    """Runs are records of what happened: every field is read-only and they are neither added nor deleted here."""

    list_display = (
        "campaign_id", "state", "started_by", "created_at", "ended_at", "duration_display",
        "points_to_cache", "succeeded_points", "failed_points", "tiles_stored", "error_display",
    )
    list_filter = ("state", "started_by", "preset")
    search_fields = ("campaign_id", "=id", "=task_id")
    date_hierarchy = "created_at"
    exclude = ("plan",)

    def get_readonly_fields(self, request, obj=None):
        names = [field.name for field in CachingRun._meta.concrete_fields if field.name != "plan"]
        return names + ["plan_display", "duration_display", "failed_point_list"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=gettext_lazy("duration"))
    def duration_display(self, run: CachingRun) -> str:
        return format_duration(run.duration_seconds)

    @admin.display(description=gettext_lazy("last error"))
    def error_display(self, run: CachingRun) -> str:
        return Truncator(run.last_error).chars(80) if run.last_error else "—"

    @admin.display(description=gettext_lazy("plan"))
    def plan_display(self, run: CachingRun) -> str:
        plan = run.plan or {}
        preset = plan.get("preset", {})
        return _(
            "layer %(layer)s, years %(years)s, vis params %(vis_params)s, zooms %(zooms)s, buffer %(buffer)s, "
            "periods %(periods)s"
        ) % {
            "layer": plan.get("layer", "?"),
            "years": ", ".join(str(year) for year in plan.get("years", [])),
            "vis_params": ", ".join(plan.get("vis_params", [])),
            "zooms": ", ".join(str(zoom) for zoom in preset.get("zooms", [])),
            "buffer": preset.get("buffer", 0),
            "periods": ", ".join(preset.get("periods", [])),
        }

    @admin.display(description=gettext_lazy("failed points (first 20)"))
    def failed_point_list(self, run: CachingRun) -> str:
        failed = RunPoint.objects.of_run(run.pk).filter(state=RunPointState.FAILED).order_by("pk")[:20]
        rows = [format_html("<li><code>{}</code>: {}</li>", entry.point_id, entry.error) for entry in failed]
        if not rows:
            return "—"
        return format_html("<ul>{}</ul>", format_html("".join(rows)))


class CachedFilter(admin.SimpleListFilter):
    title = gettext_lazy("cached")
    parameter_name = "cached"

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.is_cached()
        if self.value() == "no":
            # A point without the field (NULL) is not cached, as in TVI.
            return queryset.not_cached()
        return queryset


@admin.register(Point)
class PointAdmin(admin.ModelAdmin):
    list_display = ("id", "campaign_display", "lon", "lat", "cached_display", "cached_at", "cached_by")
    list_filter = (CachedFilter, "campaign")
    search_fields = ("id",)
    readonly_fields = ("cached", "cached_at", "cached_by", "enhance_in_cache")
    fields = ("id", "campaign", "lon", "lat", "cached", "cached_at", "cached_by", "enhance_in_cache")
    raw_id_fields = ("campaign",)
    list_per_page = 100
    show_full_result_count = False

    class Media:
        css = {"all": ["campaigns/admin/campaigns.css"]}

    @admin.display(description=gettext_lazy("campaign"), ordering="campaign")
    def campaign_display(self, point: Point) -> str:
        return point.campaign_id

    @admin.display(description=gettext_lazy("cached"), boolean=True)
    def cached_display(self, point: Point) -> bool:
        return point.cached is True

    def get_readonly_fields(self, request, obj=None):
        # The id is TVI's primary key: set once, when the point is added here.
        return (("id",) if obj is not None else ()) + self.readonly_fields

    def get_urls(self):
        urls = [
            path(
                "tile/<str:layer>/<int:x>/<int:y>/<int:z>/",
                self.admin_site.admin_view(self.tile_view),
                name="campaigns_point_tile",
            )
        ]
        return urls + super().get_urls()

    def tile_view(self, request: HttpRequest, layer: str, x: int, y: int, z: int) -> HttpResponse:
        """Return a stored tile straight from tile storage; 404 when it is not stored, never produced here."""
        if not self.has_view_permission(request):
            raise Http404(_("Tile not found."))
        try:
            address = parse_address(layer, str(x), str(y), str(z), request.GET)
            data = read_tile(address)
        except (InvalidTileRequest, StorageError) as error:
            raise Http404(str(error)) from error
        if data is None:
            raise Http404(_("Tile not stored."))
        response = HttpResponse(data, content_type="image/png")
        response["Cache-Control"] = "private, max-age=60"
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        point = self.get_object(request, unquote(object_id))
        if point is not None:
            try:
                zoom = int(request.GET.get("zoom", ""))
            except ValueError:
                zoom = None
            extra_context["tile_grid"] = point_tile_grid(point, zoom, admin_tile_url)
        return super().change_view(request, object_id, form_url, extra_context)


def admin_tile_url(address: TileAddress) -> str:
    query = {"period": address.period.value, "year": address.year, "visparam": address.vis_param}
    if address.month is not None:
        query["month"] = address.month
    base = reverse("admin:campaigns_point_tile", args=[address.layer, address.x, address.y, address.z])
    return f"{base}?{urlencode(query)}"
