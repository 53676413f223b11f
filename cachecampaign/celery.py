"""The Celery application; tasks live in each app's ``tasks`` module."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cachecampaign.settings")

app = Celery("cachecampaign")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
