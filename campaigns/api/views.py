"""The cache API: start and watch campaign runs, list and look up Celery tasks."""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import clearing, estimates, monitoring, runs, single_point
from campaigns.api.errors import ServiceUnavailable
from campaigns.api.parsers import JSONBodyParser
from campaigns.api.serializers import (
    CampaignStatusResponse,
    CancelCampaignResponse,
    ClearResponse,
    ErrorResponse,
    EstimateResponse,
    PointStatusResponse,
    StartCampaignRequest,
    StartCampaignResponse,
    StartPointRequest,
    StartPointResponse,
    TaskListResponse,
    TaskStatusResponse,
)
from campaigns.models import CachingRun, Campaign
from campaigns.progress import status_payload

# An id in a path is anything but a slash or a NUL byte: PostgreSQL rejects NUL in a text
# parameter with an error, so such a path is a 404 like any other unknown id.
ID_REGEX = r"[^/\x00]+"
ERRORS = {code: OpenApiResponse(ErrorResponse) for code in (400, 401, 403, 404, 409)}
PRESET_PARAMETER = OpenApiParameter(
    "preset", str, OpenApiParameter.QUERY, required=False,
    description="Tile-plan preset to estimate with; the campaign's own preset when absent.",
)


# Fields that status_payload() and run_summary() read. The status endpoint
# loads only these: TVI campaigns carry extra fields and each run a plan
# snapshot, which the status never shows. A field missing here still loads,
# but with one more query, which tests/test_api.py's statement count catches.
STATUS_CAMPAIGN_FIELDS = (
    "id", "total_points", "cached_points", "cache_percentage", "caching_in_progress", "caching_started_at",
    "last_point_cached_at", "points_to_cache", "all_points_cached", "caching_completed_at", "caching_error",
    "caching_error_at",
)
RUN_SUMMARY_FIELDS = (
    "id", "task_id", "group_id", "state", "batch_size", "preset", "tiles_per_point", "points_to_cache",
    "finished_points", "succeeded_points", "failed_points", "tiles_stored", "tiles_skipped", "tiles_failed",
)


def run_summary(run: CachingRun | None) -> dict | None:
    if run is None:
        return None
    return {
        "run_id": str(run.id),
        "task_id": run.task_id,
        "group_id": run.group_id,
        "state": run.state,
        "batch_size": run.batch_size,
        "preset": run.preset,
        "tiles_per_point": run.tiles_per_point,
        "total_tiles": run.tiles_per_point * run.points_to_cache,
        "finished_points": run.finished_points,
        "succeeded_points": run.succeeded_points,
        "failed_points": run.failed_points,
        "tiles_stored": run.tiles_stored,
        "tiles_skipped": run.tiles_skipped,
        "tiles_failed": run.tiles_failed,
    }


class CampaignCacheViewSet(viewsets.ViewSet):
    lookup_field = "campaign_id"
    lookup_value_regex = ID_REGEX
    parser_classes = [JSONBodyParser]

    @extend_schema(request=StartCampaignRequest, responses={200: StartCampaignResponse, **ERRORS})
    @action(detail=False, methods=["post"], url_path="start")
    def start(self, request: Request) -> Response:
        body = StartCampaignRequest(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        result = runs.start_run(
            values["campaign_id"],
            batch_size=values.get("batch_size"),
            preset=values.get("preset"),
            started_by=f"api:{request.user.get_username()}",
        )
        run = result.run
        if result.scheduled:
            message = _("Scheduled %(count)d cache tasks") % {"count": run.points_to_cache}
        else:
            message = _("Nothing to cache: every point of campaign %(id)s is already cached") % {"id": run.campaign_id}
        return Response(
            {
                "status": "scheduled" if result.scheduled else "completed",
                "message": message,
                "data": {
                    "task_id": run.task_id,
                    "campaign_id": run.campaign_id,
                    "total_points": run.total_points,
                    "already_cached": run.already_cached,
                    "points_to_cache": run.points_to_cache,
                    "group_id": run.group_id,
                    "run_id": str(run.id),
                    "batch_size": run.batch_size,
                    "preset": run.preset,
                    "tiles_per_point": run.tiles_per_point,
                    "total_tiles": run.tiles_per_point * run.points_to_cache,
                },
            }
        )

    @extend_schema(responses={200: CampaignStatusResponse, **ERRORS})
    @action(detail=True, methods=["get"], url_path="status")
    def status(self, request: Request, campaign_id: str) -> Response:
        # Three statements per token request: the token with its user, the
        # campaign and its latest run.
        campaign = Campaign.objects.filter(pk=campaign_id).only(*STATUS_CAMPAIGN_FIELDS).first()
        if campaign is None:
            raise runs.CampaignNotFound(_("Campaign %(id)s not found.") % {"id": campaign_id})
        data = status_payload(campaign)
        latest_run = CachingRun.objects.of_campaign(campaign_id).only(*RUN_SUMMARY_FIELDS).first()
        data["run"] = run_summary(latest_run)
        return Response(
            {
                "status": "success",
                "message": _("Cache status for campaign %(id)s") % {"id": campaign_id},
                "data": data,
            }
        )


    @extend_schema(request=None, responses={200: CancelCampaignResponse, **ERRORS})
    @action(detail=True, methods=["post"], url_path="cancel")
    def cancel(self, request: Request, campaign_id: str) -> Response:
        """Cancel the campaign's active run: revoke its queued point tasks and end it."""
        run = runs.cancel_run(campaign_id)
        return Response(
            {
                "status": "cancelled",
                "message": _("Caching of campaign %(id)s cancelled after %(finished)d of %(total)d points.")
                % {"id": campaign_id, "finished": run.finished_points, "total": run.points_to_cache},
                "data": run_summary(run),
            }
        )

    @extend_schema(responses={200: ClearResponse, **ERRORS})
    def destroy(self, request: Request, campaign_id: str) -> Response:
        """Clear the campaign's cache: reset every point to not cached and delete its tiles.

        Tiles that points of other campaigns also need are kept. Rejected
        with 409 while the campaign is caching.
        """
        result = clearing.clear_campaign(campaign_id)
        return Response(
            {
                "status": "success",
                "message": _(
                    "Cache of campaign %(id)s cleared: %(deleted)d tiles deleted, %(kept)d kept for other "
                    "campaigns, %(points)d points reset."
                )
                % {
                    "id": campaign_id,
                    "deleted": result.tiles_deleted,
                    "kept": result.tiles_kept_shared,
                    "points": result.points_reset,
                },
                "data": result.as_dict(),
            }
        )

    @extend_schema(parameters=[PRESET_PARAMETER], responses={200: EstimateResponse, **ERRORS})
    @action(detail=True, methods=["get"], url_path="estimate")
    def estimate(self, request: Request, campaign_id: str) -> Response:
        """Estimate the tiles, bytes and time that caching the campaign's not-cached points takes."""
        preset = request.query_params.get("preset") or None
        data = estimates.estimate_campaign(campaign_id, preset)
        return Response(
            {
                "status": "success",
                "message": _("Estimate for campaign %(id)s: %(tiles)d tiles to produce for %(points)d points.")
                % {"id": campaign_id, "tiles": data["unique_tiles"], "points": data["points_to_cache"]},
                "data": data,
            }
        )


class PointCacheViewSet(viewsets.ViewSet):
    lookup_field = "point_id"
    lookup_value_regex = ID_REGEX
    parser_classes = [JSONBodyParser]

    @extend_schema(request=StartPointRequest, responses={200: StartPointResponse, 502: OpenApiResponse(ErrorResponse), **ERRORS})
    @action(detail=False, methods=["post"], url_path="start")
    def start(self, request: Request) -> Response:
        """Cache one point within the request and count it on its campaign once.

        Tile failures give 502 with the counts in ``data``; 409 while the
        point's campaign is caching.
        """
        body = StartPointRequest(data=request.data)
        body.is_valid(raise_exception=True)
        point_id = body.validated_data["point_id"]
        result = single_point.cache_one_point(point_id, cached_by="api")
        if result.status == "already_cached":
            message = _("Point %(id)s is already cached.") % {"id": point_id}
        else:
            message = _("Point %(id)s cached: %(stored)d tiles stored, %(skipped)d already stored.") % {
                "id": point_id, "stored": result.stored_tiles, "skipped": result.skipped_tiles,
            }
        return Response({"status": result.status, "message": message, "data": result.as_dict()})

    @extend_schema(responses={200: PointStatusResponse, **ERRORS})
    @action(detail=True, methods=["get"], url_path="status")
    def status(self, request: Request, point_id: str) -> Response:
        """Return the point's cached flags and how many tiles of its campaign's plan are stored."""
        data = single_point.point_status(point_id)
        return Response(
            {
                "status": "success",
                "message": _("Cache status for point %(id)s") % {"id": point_id},
                "data": data,
            }
        )

    @extend_schema(responses={200: ClearResponse, **ERRORS})
    def destroy(self, request: Request, point_id: str) -> Response:
        """Clear one point: reset it to not cached and delete its tiles that no other point needs."""
        result = clearing.clear_point(point_id)
        return Response(
            {
                "status": "success",
                "message": _(
                    "Cache of point %(id)s cleared: %(deleted)d tiles deleted, %(kept)d kept for other points."
                )
                % {"id": point_id, "deleted": result.tiles_deleted, "kept": result.tiles_kept_shared},
                "data": result.as_dict(),
            }
        )


class TaskViewSet(viewsets.ViewSet):
    parser_classes = [JSONBodyParser]

    @extend_schema(responses={200: TaskListResponse, 503: OpenApiResponse(ErrorResponse), **ERRORS})
    @action(detail=False, methods=["get"], url_path="list")
    def list_tasks(self, request: Request) -> Response:
        try:
            return Response(monitoring.list_tasks())
        except monitoring.MonitoringUnavailable as error:
            raise ServiceUnavailable(str(error)) from error

    @extend_schema(responses={200: TaskStatusResponse, **ERRORS})
    @action(detail=False, methods=["get"], url_path=rf"status/(?P<task_id>{ID_REGEX})")
    def task_status(self, request: Request, task_id: str) -> Response:
        if len(task_id) > 255:
            raise NotFound(_("Task %(id)s not found.") % {"id": task_id[:255]})
        try:
            return Response(monitoring.task_status(task_id))
        except monitoring.UnknownTask as error:
            raise NotFound(str(error)) from error
