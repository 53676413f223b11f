"""``manage.py clear_cache ID``: delete a campaign's cached tiles and reset its points to not cached."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns import clearing, runs
from campaigns.display import format_count
from campaigns.management.console import existing_campaign, progress_bar
from campaigns.models import Point

# Answers that confirm the prompt, in English and Portuguese.
YES_ANSWERS = {"yes", "y", "sim", "s"}


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]
        return _(
            "Delete the stored tiles of a campaign and reset its points to not cached. Tiles that points of other "
            "campaigns also need are kept. Asks for confirmation unless --yes is given; rejected while the campaign "
            "is caching."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id", help=gettext_lazy("Id of the campaign (its _id)."))
        parser.add_argument(
            "--yes", action="store_true", help=gettext_lazy("Clear without asking for confirmation.")
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = existing_campaign(options["campaign_id"])
        if not options["yes"] and not self.confirmed(campaign.id):
            self.stdout.write(_("Clearing cancelled; nothing was changed."))
            return

        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = progress_bar(self.stdout, total=total, description=_("Tiles"), unit=_("tile"))
            bar.n = done
            bar.refresh()

        try:
            result = clearing.clear_campaign(campaign.id, progress=progress)
        except runs.RunAlreadyActive:
            raise CommandError(
                _(
                    "Campaign %(id)s is caching; wait for the run to end or stop it with cancel_caching %(id)s, "
                    "then clear it."
                )
                % {"id": campaign.id}
            ) from None
        finally:
            if bar is not None:
                bar.close()
        self.stdout.write(
            self.style.SUCCESS(
                _(
                    "Campaign %(id)s cleared: %(deleted)s tiles deleted, %(kept)s kept because other campaigns "
                    "need them, %(missing)s were not stored; %(points)s points reset to not cached."
                )
                % {
                    "id": campaign.id,
                    "deleted": format_count(result.tiles_deleted),
                    "kept": format_count(result.tiles_kept_shared),
                    "missing": format_count(result.tiles_not_stored),
                    "points": format_count(result.points_reset),
                }
            )
        )
        if result.interrupted:
            raise CommandError(
                _(
                    "Clearing campaign %(id)s stopped early because another process took over the campaign; "
                    "run clear_cache %(id)s again once it is idle."
                )
                % {"id": campaign.id}
            )

    def confirmed(self, campaign_id: str) -> bool:
        if not sys.stdin.isatty():
            raise CommandError(
                _(
                    "clear_cache deletes stored tiles and needs confirmation; without a terminal, run "
                    "clear_cache %(id)s --yes."
                )
                % {"id": campaign_id}
            )
        points = Point.objects.of_campaign(campaign_id).count()
        answer = input(
            _(
                "Delete the cached tiles of campaign %(id)s and reset its %(points)s points to not cached? "
                "Type 'yes' to continue: "
            )
            % {"id": campaign_id, "points": format_count(points)}
        )
        return answer.strip().lower() in YES_ANSWERS
