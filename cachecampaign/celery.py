"""The Celery application; tasks live in each app's ``tasks`` module."""

import os

from celery import Celery
from celery.signals import task_postrun
from kombu.transport import TRANSPORT_ALIASES

# The embedded broker writes message files atomically (see filesystem_broker).
TRANSPORT_ALIASES["filesystem"] = "cachecampaign.filesystem_broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cachecampaign.settings")

app = Celery("cachecampaign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_postrun.connect
def close_unusable_connections(**kwargs) -> None:
    """Drop database connections that broke or outlived CONN_MAX_AGE, as Django does after a request."""
    from django.db import close_old_connections

    close_old_connections()
