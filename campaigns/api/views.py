"""The cache API: start and watch campaign runs, list and look up Celery tasks."""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns import monitoring, runs
from campaigns.api.errors import ServiceUnavailable
from campaigns.api.serializers import (
    CampaignStatusResponse,
    ErrorResponse,
    StartCampaignRequest,
    StartCampaignResponse,
    TaskListResponse,
    TaskStatusResponse,
)
from campaigns.models import CachingRun, Campaign
from campaigns.progress import status_payload

ERRORS = {code: OpenApiResponse(ErrorResponse) for code in (400, 401, 403, 404, 409)}


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
    lookup_value_regex = "[^/]+"

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
        campaign = Campaign.objects.filter(pk=campaign_id).first()
        if campaign is None:
            raise runs.CampaignNotFound(_("Campaign %(id)s not found.") % {"id": campaign_id})
        data = status_payload(campaign)
        data["run"] = run_summary(CachingRun.objects.of_campaign(campaign_id).first())
        return Response(
            {
                "status": "success",
                "message": _("Cache status for campaign %(id)s") % {"id": campaign_id},
                "data": data,
            }
        )


class TaskViewSet(viewsets.ViewSet):
    @extend_schema(responses={200: TaskListResponse, 503: OpenApiResponse(ErrorResponse), **ERRORS})
    @action(detail=False, methods=["get"], url_path="list")
    def list_tasks(self, request: Request) -> Response:
        try:
            return Response(monitoring.list_tasks())
        except monitoring.MonitoringUnavailable as error:
            raise ServiceUnavailable(str(error)) from error

    @extend_schema(responses={200: TaskStatusResponse, **ERRORS})
    @action(detail=False, methods=["get"], url_path=r"status/(?P<task_id>[^/]+)")
    def task_status(self, request: Request, task_id: str) -> Response:
        if len(task_id) > 255:
            raise NotFound(_("Task %(id)s not found.") % {"id": task_id[:255]})
        try:
            return Response(monitoring.task_status(task_id))
        except monitoring.UnknownTask as error:
            raise NotFound(str(error)) from error
