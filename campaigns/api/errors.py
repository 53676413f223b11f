"""Turn every API error into one JSON shape: ``{status, message, code, errors?, data?}``."""

from __future__ import annotations

import logging

from django.core.exceptions import SuspiciousOperation
from django.http import Http404, JsonResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from campaigns import holds, runs, single_point

logger = logging.getLogger(__name__)


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "service_unavailable"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


RUN_ERROR_STATUS = {
    runs.CampaignNotFound: status.HTTP_404_NOT_FOUND,
    runs.PointNotFound: status.HTTP_404_NOT_FOUND,
    runs.InvalidCampaign: status.HTTP_400_BAD_REQUEST,
    runs.RunAlreadyActive: status.HTTP_409_CONFLICT,
    runs.NoActiveRun: status.HTTP_409_CONFLICT,
    runs.StartedRecently: status.HTTP_409_CONFLICT,
    holds.HoldLost: status.HTTP_409_CONFLICT,
    single_point.TooManyTiles: status.HTTP_400_BAD_REQUEST,
    # The point's tile source failed, as the tile endpoint reports a failed tile.
    single_point.PointCacheFailed: status.HTTP_502_BAD_GATEWAY,
}


def error_body(message: str, code: str, **extra) -> dict:
    body = {"status": "error", "message": message, "code": code}
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def _flatten(detail, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        lines = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else f"{prefix}{key}"
            lines.extend(_flatten(value, f"{name}." if name else ""))
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    text = str(detail)
    return [f"{prefix.rstrip('.')}: {text}" if prefix else text]


def json_exception_handler(exc, context):
    if isinstance(exc, runs.RunError):
        extra = {}
        if isinstance(exc, runs.RunAlreadyActive) and exc.run is not None:
            extra["data"] = {
                "campaign_id": exc.run.campaign_id,
                "run_id": str(exc.run.id),
                "task_id": exc.run.task_id,
                "group_id": exc.run.group_id,
            }
        if isinstance(exc, single_point.PointCacheFailed):
            extra["data"] = exc.result.as_dict()
        return Response(error_body(str(exc), exc.code, **extra), status=RUN_ERROR_STATUS.get(type(exc), 400))

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        lines = _flatten(exc.detail)
        message = _("Invalid request: %(details)s") % {"details": "; ".join(lines)}
        response.data = error_body(message, "invalid", errors=exc.detail)
    else:
        detail = getattr(exc, "detail", "")
        code = detail.code if hasattr(detail, "code") else getattr(exc, "default_code", "error")
        response.data = error_body(str(detail), str(code))
    return response


def json_not_found(request, exception=None):
    """JSON 404 for API paths, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(_("Not found: %(path)s") % {"path": request.path}, "not_found"), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def json_bad_request(request, exception=None):
    """JSON 400 for API paths, Django's page elsewhere.

    Django calls this handler when it rejects a request before any view
    runs, such as a body over DATA_UPLOAD_MAX_MEMORY_SIZE.
    """
    if request.path.startswith("/api/"):
        message = _("Bad request: %(reason)s") % {"reason": exception} if exception else _("Bad request.")
        return JsonResponse(error_body(message, "bad_request"), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception or SuspiciousOperation())


def json_server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(_("Internal server error."), "server_error"), status=500)
    from django.views.defaults import server_error

    return server_error(request)
