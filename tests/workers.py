"""Start and stop real Celery worker processes against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

from django.conf import settings
from django.db import connections
from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.pidbox import Mailbox

from cachecampaign.celery import app

ROOT = Path(__file__).resolve().parent.parent


def database_url_of(alias: str = "default") -> str:
    """Return a DATABASE_URL for the database the tests are using right now."""
    config = connections[alias].settings_dict
    if config["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{config['NAME']}"
    user = config.get("USER") or ""
    password = f":{config['PASSWORD']}" if config.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"postgres://{auth}{config.get('HOST') or '127.0.0.1'}{port}/{config['NAME']}"


def worker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_of()
    if connections["campaigns"].vendor == "mongodb":
        # The worker must use the test database Django created, not MONGODB_NAME's.
        env["MONGODB_NAME"] = connections["campaigns"].settings_dict["NAME"]
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def ping_worker(name: str, broker_url: str | None = None, timeout: float = 0.5) -> bool:
    """Return whether the worker replies to a ping sent through ``broker_url`` or the test process's broker."""
    if broker_url is None:
        return bool(app.control.ping(destination=[name], timeout=timeout))
    # Celery sends control messages through its app's producer pool, whatever connection is
    # passed, and an app's broker_url prefers the CELERY_BROKER_URL variable over its own
    # setting (celery.app.utils.Settings, Celery 5.7). A kombu mailbox on its own connection
    # sends the ping through ``broker_url`` alone.
    try:
        with Connection(broker_url, connect_timeout=timeout) as connection:
            mailbox = Mailbox("celery", type="fanout", accept=["json"], serializer="json")
            replies = mailbox(connection)._broadcast("ping", {}, destination=[name], reply=True, timeout=timeout)
            return bool(replies)
    except (OSError, OperationalError, *Connection(broker_url).connection_errors):
        return False


def wait_for_worker(name: str, timeout: float = 30.0, broker_url: str | None = None,
                    process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping_worker(name, broker_url):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Celery worker {name} exited with code {process.returncode} before answering a ping.")
        time.sleep(0.2)
    raise RuntimeError(f"Celery worker {name} did not answer a ping within {timeout} s.")


@contextlib.contextmanager
def running_worker(
    *,
    concurrency: int = 2,
    extra_env: dict[str, str] | None = None,
    log_path: Path | None = None,
    broker_url: str | None = None,
) -> Iterator[subprocess.Popen]:
    """Run ``celery worker`` in a child process until the block ends.

    With ``broker_url`` the worker uses that broker instead of the test process's one.
    """
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = log_path or Path(settings.VAR_DIR) / f"worker-{name.split('@')[0]}.log"
    broker_env = {"CELERY_BROKER_URL": broker_url} if broker_url else {}
    command = [
        sys.executable, "-m", "celery", "-A", "cachecampaign", "worker",
        "--loglevel", "INFO", "--concurrency", str(concurrency), "--pool", "prefork",
        "--hostname", name, "--without-gossip", "--without-mingle",
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=worker_environment({**(extra_env or {}), **broker_env}), stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_worker(name, broker_url=broker_url, process=process)
        process.worker_name = name  # type: ignore[attr-defined]
        process.log_path = log_path  # type: ignore[attr-defined]
        yield process
    finally:
        stop_worker(process)


def stop_worker(process: subprocess.Popen, *, kill: bool = False) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
