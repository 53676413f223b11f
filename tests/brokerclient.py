"""Run one cache operation in a process of its own, on the broker named by its environment.

The broker URL of the test process is fixed when Django loads its settings,
so a test that runs Celery against a Redis server of its own drives the run
through this script::

    python -m tests.brokerclient start CAMPAIGN_ID --batch-size 4
    python -m tests.brokerclient resume RUN_ID
    python -m tests.brokerclient cancel CAMPAIGN_ID
    python -m tests.brokerclient get /api/tasks/list

The environment (DATABASE_URL, CELERY_BROKER_URL, CACHECAMPAIGN_VAR_DIR,
TILE_SOURCES_FILE) comes from ``tests.workers.worker_environment``. The
script prints one JSON object on its last line of output. ``get`` sends
the request through the whole Django stack as a staff user and reports the
status code, the body and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

from django.conf import settings


def _start(arguments: argparse.Namespace) -> dict:
    from campaigns import runs

    result = runs.start_run(arguments.target, batch_size=arguments.batch_size, started_by="brokerclient")
    return {"run_id": str(result.run.id), "points_to_cache": result.run.points_to_cache,
            "scheduled": result.scheduled}


def _resume(arguments: argparse.Namespace) -> dict:
    from campaigns import runs

    outcome = runs.resume_run(arguments.target)
    return {"resumed": outcome if isinstance(outcome, (int, dict, list, str)) else repr(outcome)}


def _cancel(arguments: argparse.Namespace) -> dict:
    from campaigns import runs

    run = runs.cancel_run(arguments.target)
    return {"run_id": str(run.id), "state": run.state}


def _get(arguments: argparse.Namespace) -> dict:
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(User(username="brokerclient", is_staff=True, is_active=True))
    began = time.monotonic()
    response = client.get(arguments.target)
    seconds = time.monotonic() - began
    try:
        body = response.json()
    except ValueError:
        body = response.content.decode(errors="replace")[:2000]
    return {"status": response.status_code, "seconds": seconds, "body": body}


OPERATIONS = {"start": _start, "resume": _resume, "cancel": _cancel, "get": _get}


def main() -> int:
    parser = argparse.ArgumentParser(description="Run one cache operation on the broker named by CELERY_BROKER_URL.")
    parser.add_argument("operation", choices=sorted(OPERATIONS))
    parser.add_argument("target", help="Campaign id (start, cancel), run id (resume) or API path (get).")
    parser.add_argument("--batch-size", type=int, default=None, help="Point tasks queued or running at once.")
    arguments = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cachecampaign.settings")
    import django

    django.setup()
    try:
        payload = OPERATIONS[arguments.operation](arguments)
        payload["broker"] = settings.CELERY_BROKER_URL
        code = 0
    except Exception as error:  # noqa: BLE001 - the calling test reads the error from the output
        payload = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
        code = 2
    print(json.dumps(payload, default=str), flush=True)
    return code


def run_operation(environment: dict[str, str], operation: str, target: str, *, batch_size: int | None = None,
                  timeout: float = 60.0) -> dict:
    """Run this script in a child process with ``environment``; return its JSON output."""
    from tests.workers import ROOT

    command = [sys.executable, "-m", "tests.brokerclient", operation, target]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    completed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"tests.brokerclient {operation} {target} printed no result (exit code {completed.returncode}):\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


if __name__ == "__main__":
    sys.exit(main())
