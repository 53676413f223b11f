"""``manage.py cancel_caching ID``: cancel a campaign's active caching run."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns import runs
from campaigns.display import format_count
from campaigns.management.console import existing_campaign


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]
        return _(
            "Cancel the active caching run of a campaign: revoke its queued point tasks and end the run. "
            "Points already cached stay cached."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id", help=gettext_lazy("Id of the campaign (its _id)."))

    def handle(self, *args: Any, **options: Any) -> None:
        campaign_id = options["campaign_id"]
        existing_campaign(campaign_id)
        try:
            run = runs.cancel_run(campaign_id)
        except runs.NoActiveRun:
            raise CommandError(
                _("Campaign %(id)s is not caching; there is no run to cancel. See its state with campaign_status %(id)s.")
                % {"id": campaign_id}
            ) from None
        self.stdout.write(
            self.style.SUCCESS(
                _("Run %(run)s of campaign %(id)s cancelled after %(finished)s of %(total)s points.")
                % {
                    "run": run.id,
                    "id": campaign_id,
                    "finished": format_count(run.finished_points),
                    "total": format_count(run.points_to_cache),
                }
            )
        )
