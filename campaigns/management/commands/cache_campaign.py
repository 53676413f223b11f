"""``manage.py cache_campaign ID``: start caching a campaign, and with ``--wait`` follow the run to its end."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns import runs
from campaigns.display import format_count, format_percentage
from campaigns.management.console import checked_batch_size, checked_preset, existing_campaign, progress_bar
from campaigns.models import CachingRun, Campaign, RunState

STARTED_BY = "cache_campaign"
# Seconds a finished run may take to clear its campaign's caching flag.
FLAG_CLEAR_SECONDS = 10.0


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]
        return _(
            "Start caching the not-cached points of a campaign on the Celery workers. With --wait, follow the run "
            "with a progress bar and exit with an error if it fails or is cancelled."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id", help=gettext_lazy("Id of the campaign (its _id)."))
        parser.add_argument(
            "--batch-size",
            type=int,
            help=gettext_lazy("Point tasks of this campaign queued or running at once (default: CACHE_DEFAULT_BATCH_SIZE)."),
        )
        parser.add_argument(
            "--preset", help=gettext_lazy("Tile-plan preset to cache with; by default the campaign's own preset.")
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help=gettext_lazy(
                "Resume the campaign's active run instead of starting one: send again the point tasks a killed "
                "worker or a restarted broker lost."
            ),
        )
        parser.add_argument(
            "--wait", action="store_true", help=gettext_lazy("Follow the run until it ends, with a progress bar.")
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=0.0,
            help=gettext_lazy("With --wait, seconds to follow the run before giving up; 0 waits until it ends."),
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=1.0,
            help=gettext_lazy("With --wait, seconds between two reads of the run's progress."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign_id = options["campaign_id"]
        batch_size = checked_batch_size(options["batch_size"])
        preset = checked_preset(options["preset"])
        if options["timeout"] < 0:
            raise CommandError(_("Invalid --timeout %(value)s; use 0 or more seconds.") % {"value": options["timeout"]})
        if options["poll_interval"] <= 0:
            raise CommandError(
                _("Invalid --poll-interval %(value)s; use more than 0 seconds.") % {"value": options["poll_interval"]}
            )
        existing_campaign(campaign_id)
        if options["resume"]:
            self.resume(campaign_id, options)
            return

        try:
            result = runs.start_run(campaign_id, batch_size=batch_size, preset=preset, started_by=STARTED_BY)
        except runs.RunAlreadyActive as error:
            run_id = str(error.run.id) if error.run else "?"
            raise CommandError(
                _(
                    "Campaign %(id)s is already caching (run %(run)s); follow it with campaign_status %(id)s "
                    "or stop it with cancel_caching %(id)s."
                )
                % {"id": campaign_id, "run": run_id}
            ) from None
        except runs.RunError as error:
            raise CommandError(str(error)) from None

        run = result.run
        if not result.scheduled:
            self.stdout.write(
                _("Nothing to cache: every one of the %(total)s points of campaign %(id)s is already cached.")
                % {"total": format_count(run.total_points), "id": campaign_id}
            )
            return
        self.stdout.write(
            _(
                "Run %(run)s of campaign %(id)s started: %(count)s of %(total)s points to cache, "
                "%(tiles)s tiles per point, batch size %(batch)d, preset %(preset)s."
            )
            % {
                "run": run.id,
                "id": campaign_id,
                "count": format_count(run.points_to_cache),
                "total": format_count(run.total_points),
                "tiles": format_count(run.tiles_per_point),
                "batch": run.batch_size,
                "preset": run.preset,
            }
        )
        if options["wait"]:
            self.follow(run, options["timeout"], options["poll_interval"])

    def resume(self, campaign_id: str, options: dict) -> None:
        run = CachingRun.objects.active().of_campaign(campaign_id).first()
        if run is None:
            raise CommandError(
                _("Campaign %(id)s has no active run to resume; start one with cache_campaign %(id)s.")
                % {"id": campaign_id}
            )
        try:
            outcome = runs.resume_run(str(run.pk))
        except runs.RunError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            _("Run %(run)s of campaign %(id)s resumed: %(resent)d point tasks sent again, %(sent)d new.")
            % {"run": run.pk, "id": campaign_id, "resent": outcome["resent"], "sent": outcome["sent"]}
        )
        if options["wait"]:
            self.follow(run, options["timeout"], options["poll_interval"])

    def follow(self, run: CachingRun, timeout: float, poll_interval: float) -> None:
        """Show the run's progress until it ends; raise ``CommandError`` if it failed, was cancelled or timed out."""
        began = time.monotonic()
        bar = progress_bar(self.stdout, total=run.points_to_cache, description=_("Points"), unit=_("point"))
        try:
            while True:
                run.refresh_from_db()
                bar.total = run.points_to_cache
                bar.n = run.finished_points
                bar.set_postfix_str(_("%(failed)d failed") % {"failed": run.failed_points}, refresh=False)
                bar.refresh()
                if not run.is_active:
                    break
                if timeout and time.monotonic() - began > timeout:
                    raise CommandError(
                        _(
                            "Run %(run)s of campaign %(id)s is still going after %(seconds)s s; it goes on in the "
                            "background. Follow it with campaign_status %(id)s."
                        )
                        % {"run": run.id, "id": run.campaign_id, "seconds": timeout}
                    )
                time.sleep(poll_interval)
        finally:
            bar.close()
        self._wait_for_flag(run.campaign_id)
        campaign = Campaign.objects.get(pk=run.campaign_id)
        summary = _(
            "%(succeeded)s points cached and %(failed)s failed in this run; campaign %(id)s now has %(cached)s of "
            "%(total)s points cached (%(percentage)s)."
        ) % {
            "succeeded": format_count(run.succeeded_points),
            "failed": format_count(run.failed_points),
            "id": run.campaign_id,
            "cached": format_count(campaign.cached_points),
            "total": format_count(campaign.total_points),
            "percentage": format_percentage(campaign.cache_percentage),
        }
        if run.state == RunState.CANCELLED:
            raise CommandError(
                _("Run %(run)s of campaign %(id)s was cancelled. %(summary)s")
                % {"run": run.id, "id": run.campaign_id, "summary": summary}
            )
        if run.state == RunState.FAILED:
            raise CommandError(
                _(
                    "Run %(run)s of campaign %(id)s failed. %(summary)s Last error: %(error)s. Fix the cause and "
                    "run cache_campaign %(id)s again: it caches only the points that are not cached."
                )
                % {"run": run.id, "id": run.campaign_id, "summary": summary, "error": run.last_error}
            )
        self.stdout.write(self.style.SUCCESS(_("Run %(run)s completed. %(summary)s") % {"run": run.id, "summary": summary}))

    def _wait_for_flag(self, campaign_id: str) -> None:
        # close_run ends the run first and clears the campaign's flag and
        # counters right after; read the campaign once both are written.
        deadline = time.monotonic() + FLAG_CLEAR_SECONDS
        while time.monotonic() < deadline:
            if not Campaign.objects.filter(pk=campaign_id, caching_in_progress=True).exists():
                return
            time.sleep(0.1)
