"""``manage.py campaign_status ID``: print a campaign's caching progress and its latest run."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.api.views import run_summary
from campaigns.display import (
    campaign_state,
    format_count,
    format_datetime,
    format_duration,
    format_percentage,
)
from campaigns.management.console import existing_campaign
from campaigns.models import CachingRun
from campaigns.progress import status_payload


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]
        return _("Print the caching progress of a campaign and a summary of its latest run.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_id", help=gettext_lazy("Id of the campaign (its _id)."))
        parser.add_argument(
            "--json",
            action="store_true",
            help=gettext_lazy("Print the same fields as GET /api/cache/campaign/{id}/status, as JSON."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = existing_campaign(options["campaign_id"])
        run = CachingRun.objects.of_campaign(campaign.id).first()
        state = campaign_state(campaign, run)
        if options["json"]:
            payload = status_payload(campaign)
            payload["state"] = state.value
            payload["run"] = run_summary(run)
            if run is not None:
                payload["run"].update(
                    started_by=run.started_by, created_at=run.created_at, ended_at=run.ended_at,
                    last_error=run.last_error,
                )
            self.stdout.write(json.dumps(payload, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False))
            return

        lines = [
            _("Campaign %(id)s") % {"id": campaign.id},
            _("  State: %(state)s") % {"state": state.label},
            _("  Cached points: %(cached)s of %(total)s (%(percentage)s)")
            % {
                "cached": format_count(campaign.cached_points),
                "total": format_count(campaign.total_points),
                "percentage": format_percentage(campaign.cache_percentage),
            },
            _("  Caching started at: %(time)s") % {"time": format_datetime(campaign.caching_started_at)},
            _("  Last point cached at: %(time)s") % {"time": format_datetime(campaign.last_point_cached_at)},
            _("  Caching ended at: %(time)s") % {"time": format_datetime(campaign.caching_completed_at)},
        ]
        if campaign.caching_error:
            lines.append(
                _("  Last error (%(time)s): %(error)s")
                % {"time": format_datetime(campaign.caching_error_at), "error": campaign.caching_error}
            )
        if run is None:
            lines.append(_("  No caching run yet; start one with cache_campaign %(id)s.") % {"id": campaign.id})
        else:
            lines.extend(
                [
                    _("  Latest run: %(run)s, %(state)s, started by %(by)s")
                    % {"run": run.id, "state": run.get_state_display(), "by": run.started_by},
                    _("    Points: %(finished)s of %(total)s finished, %(failed)s failed")
                    % {
                        "finished": format_count(run.finished_points),
                        "total": format_count(run.points_to_cache),
                        "failed": format_count(run.failed_points),
                    },
                    _("    Tiles: %(stored)s stored, %(skipped)s already stored, %(failed)s failed")
                    % {
                        "stored": format_count(run.tiles_stored),
                        "skipped": format_count(run.tiles_skipped),
                        "failed": format_count(run.tiles_failed),
                    },
                    _("    Duration: %(duration)s") % {"duration": format_duration(run.duration_seconds)},
                ]
            )
        self.stdout.write("\n".join(lines))
