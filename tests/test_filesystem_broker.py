"""The embedded filesystem broker must survive a message file that is empty or cut short.

kombu's own filesystem transport (kombu 5.7) creates a message file, then
locks and writes it; cachecampaign registers a transport that renames whole
files into place and skips undecodable ones. A consumer lists the queue folder and reads files without
the lock. A consumer that reads a file between its creation and its write,
or a file left by a sender killed in that gap, gets an empty or partial
body, so ``json.loads`` raises and the worker stops with "Unrecoverable
error: JSONDecodeError". The shorter the polling interval, the more often a
consumer looks at a file in that gap. These tests put such a file in the
queue and expect the worker to set it aside and go on.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from campaigns import runs
from tests.conftest import BOTH_DATABASES, wait_for_run_end
from tests.workers import running_worker

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES),
    pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("filesystem://"),
                       reason="the suite runs on another broker"),
]


def queue_folder() -> Path:
    return Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])


@pytest.fixture
def message_file():
    """Write a message file into the queue as kombu names one of the default "celery" queue; remove it after."""
    written: list[Path] = []

    def write(content: bytes) -> Path:
        path = queue_folder() / f"{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.celery.msg"
        path.write_bytes(content)
        written.append(path)
        return path

    yield write
    for path in written:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("content", [b"", b'{"body": "eyJ'], ids=["empty", "partial"])
def test_worker_survives_unreadable_message(make_campaign, message_file, content):
    make_campaign("mensagem_ruim", points=3, spacing=0.5)
    message_file(content)

    with running_worker(concurrency=1) as worker:
        runs.start_run("mensagem_ruim", batch_size=3)
        run = wait_for_run_end("mensagem_ruim", timeout=30)
        alive = worker.poll() is None

    assert alive
    assert run.state == "completed"
    assert run.succeeded_points == 3
    assert "Unrecoverable error" not in Path(worker.log_path).read_text(errors="replace")
