"""Inspection of the Celery workers' tasks, and the state of one task."""

from __future__ import annotations

import logging
import queue
import threading

from celery.result import AsyncResult
from django.conf import settings
from django.utils.translation import gettext as _
from django_celery_results.models import TaskResult

from cachecampaign.celery import app
from campaigns.models import CachingRun, RunPoint

logger = logging.getLogger(__name__)


class MonitoringUnavailable(Exception):
    """The broker or every worker failed to respond."""


class UnknownTask(Exception):
    """A task id no result record and no run of this service has seen."""


def _task_entry(worker: str, request: dict, state: str) -> dict:
    return {
        "task_id": request.get("id", ""),
        "name": request.get("name", ""),
        "state": state,
        "args": list(request.get("args") or []),
        "worker": worker,
    }


def list_tasks(timeout: float | None = None) -> dict:
    """Return the active, scheduled and reserved tasks of every worker that responds.

    Raises ``MonitoringUnavailable`` when the broker cannot be reached or no
    worker responds to a ping within ``timeout`` seconds.
    """
    timeout = timeout or settings.CELERY_INSPECT_TIMEOUT
    deadline = settings.CELERY_INSPECT_DEADLINE
    outcome: queue.Queue = queue.Queue(maxsize=1)

    def inspect_in_background() -> None:
        try:
            outcome.put(_inspect(timeout))
        except Exception as error:  # noqa: BLE001 - handed to the caller below
            outcome.put(error)

    # A broker that accepts connections but never responds would hang kombu's
    # calls, so the request waits for a daemon thread at most ``deadline`` s.
    threading.Thread(target=inspect_in_background, name="celery-inspect", daemon=True).start()
    try:
        result = outcome.get(timeout=deadline)
    except queue.Empty:
        logger.warning("Listing Celery tasks timed out: the broker did not respond within %s s", deadline)
        raise MonitoringUnavailable(
            _("The Celery broker did not answer within %(seconds)s s; check that it is running and not overloaded.")
            % {"seconds": deadline}
        ) from None
    if isinstance(result, MonitoringUnavailable):
        raise result
    if isinstance(result, Exception):
        logger.warning("Listing Celery tasks failed: %s", result)
        raise MonitoringUnavailable(
            _("The Celery broker could not be reached: %(error)s") % {"error": result}
        ) from result
    workers, active, scheduled, reserved = result

    payload = {
        "active": [_task_entry(w, task, "ACTIVE") for w, tasks in active.items() for task in tasks],
        "scheduled": [
            _task_entry(w, entry.get("request", {}), "SCHEDULED") for w, tasks in scheduled.items() for entry in tasks
        ],
        "reserved": [_task_entry(w, task, "RESERVED") for w, tasks in reserved.items() for task in tasks],
    }
    payload["stats"] = {
        "total_active": len(payload["active"]),
        "total_scheduled": len(payload["scheduled"]),
        "total_reserved": len(payload["reserved"]),
        "workers": len(workers),
    }
    return payload


def _inspect(timeout: float) -> tuple[list[str], dict, dict, dict]:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
        replies = app.control.ping(timeout=timeout, connection=connection) or []
        workers = [name for reply in replies for name in reply]
        if not workers:
            raise MonitoringUnavailable(
                _("No Celery worker answered within %(seconds)s s; start one with: celery -A cachecampaign worker")
                % {"seconds": timeout}
            )
        inspect = app.control.inspect(destination=workers, timeout=timeout, limit=len(workers), connection=connection)
        return workers, inspect.active() or {}, inspect.scheduled() or {}, inspect.reserved() or {}


def task_status(task_id: str) -> dict:
    """Return the state of a task that the result backend or a run of this service has recorded.

    Raises ``UnknownTask`` for any other id.
    """
    known = (
        TaskResult.objects.filter(task_id=task_id).exists()
        or RunPoint.objects.filter(task_id=task_id).exists()
        or CachingRun.objects.filter(task_id=task_id).exists()
    )
    if not known:
        raise UnknownTask(_("Task %(id)s not found.") % {"id": task_id})
    result = AsyncResult(task_id, app=app)
    state = result.state
    value = None
    if state == "SUCCESS":
        value = result.result
    elif state in ("FAILURE", "RETRY", "REVOKED"):
        error = result.result
        value = {"error": str(error), "type": type(error).__name__} if isinstance(error, BaseException) else error
    return {
        "task_id": task_id,
        "state": state,
        "ready": result.ready(),
        "successful": result.successful(),
        "result": value,
    }
