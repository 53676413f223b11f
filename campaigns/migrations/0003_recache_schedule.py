"""Create the "Re-cache campaigns" periodic task: daily at 03:00 America/Sao_Paulo.

Operators change the time or disable it in the admin (Periodic tasks); this
migration creates the schedule only when no periodic task of that name
exists, so a changed schedule survives a re-run.
"""

from django.db import migrations

TASK_NAME = "Re-cache campaigns"
TASK = "campaigns.recache_due_campaigns"
SCHEDULE = {
    "minute": "0",
    "hour": "3",
    "day_of_week": "*",
    "day_of_month": "*",
    "month_of_year": "*",
    "timezone": "America/Sao_Paulo",
}


def create_schedule(apps, schema_editor):
    alias = schema_editor.connection.alias
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    from django.db import router

    # Beat's tables live on the default database; the campaigns alias may
    # be TVI's MongoDB database, which runs this migration too.
    if not router.allow_migrate_model(alias, PeriodicTask):
        return
    if PeriodicTask.objects.using(alias).filter(name=TASK_NAME).exists():
        return
    crontab = CrontabSchedule.objects.using(alias).filter(**SCHEDULE).first()
    if crontab is None:
        crontab = CrontabSchedule.objects.using(alias).create(**SCHEDULE)
    PeriodicTask.objects.using(alias).create(
        name=TASK_NAME,
        task=TASK,
        crontab=crontab,
        enabled=True,
        description=(
            "Starts caching runs for campaigns with points not cached yet and for campaigns whose tiles "
            "are older than CACHE_MAX_TILE_AGE_DAYS."
        ),
    )
    # Beat's DatabaseScheduler reloads its schedule when this marker changes.
    PeriodicTasks.objects.using(alias).update_or_create(ident=1, defaults={"last_update": _now()})


def remove_schedule(apps, schema_editor):
    alias = schema_editor.connection.alias
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    from django.db import router

    if router.allow_migrate_model(alias, PeriodicTask):
        PeriodicTask.objects.using(alias).filter(name=TASK_NAME, task=TASK).delete()


def _now():
    from django.utils import timezone

    return timezone.now()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0002_base_manager_for_tvi_writes"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
