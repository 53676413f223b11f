"""Record when a run last progressed, and schedule the watchdog that resumes stalled runs every 5 minutes."""

from django.db import migrations, models

TASK_NAME = "Resume stalled caching runs"
TASK = "campaigns.resume_stalled_runs"


def create_schedule(apps, schema_editor):
    from django.db import router
    from django.utils import timezone

    alias = schema_editor.connection.alias
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    # Beat's tables live on the default database only.
    if not router.allow_migrate_model(alias, PeriodicTask):
        return
    if PeriodicTask.objects.using(alias).filter(name=TASK_NAME).exists():
        return
    interval, _created = IntervalSchedule.objects.using(alias).get_or_create(every=5, period="minutes")
    PeriodicTask.objects.using(alias).create(
        name=TASK_NAME,
        task=TASK,
        interval=interval,
        enabled=True,
        description="Re-sends the tasks of caching runs with no finished point for CACHE_STALL_SECONDS.",
    )
    PeriodicTasks.objects.using(alias).update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    from django.db import router

    alias = schema_editor.connection.alias
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    if router.allow_migrate_model(alias, PeriodicTask):
        PeriodicTask.objects.using(alias).filter(name=TASK_NAME, task=TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_recache_schedule"),
    ]

    operations = [
        migrations.AddField(
            model_name="cachingrun",
            name="last_progress_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="last progress at"),
        ),
        migrations.RunPython(create_schedule, remove_schedule),
    ]
