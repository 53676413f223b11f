"""Hold a campaign's caching flag for work that is not a run: clearing tiles, caching one point.

Every operation that changes a campaign's tiles or cached flags holds
``caching_in_progress`` while it works, so no run starts in the middle of a
clear and no clear deletes tiles a run has just counted. The flag is taken
with one conditional update, as ``runs.start_run`` takes it, and the holder
renews ``caching_started_at`` while it works: ``runs.start_run`` takes over a
flag as stale only when no run is active and that time is older than
``runs.STALE_FLAG_AFTER``. Releasing puts back the start time of the
campaign's last run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from typing import Iterator

from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import CachingRun, Campaign
from campaigns.runs import STALE_FLAG_AFTER, CampaignNotFound, RunAlreadyActive, RunError

logger = logging.getLogger(__name__)

# Seconds between two renewals of a held flag; well under STALE_FLAG_AFTER.
RENEW_EVERY_SECONDS = min(15.0, STALE_FLAG_AFTER.total_seconds() / 4)


class HoldLost(RunError):
    """Another process cleared or took over the flag this holder held, such as ``runs.cancel_run``."""

    code = "hold_lost"


class CampaignHold:
    """The caching flag of one campaign, held by this process."""

    def __init__(self, campaign_id: str, held_since: datetime):
        self.campaign_id = campaign_id
        self.held_since = held_since
        self._renewed_at = time.monotonic()

    def renew(self, *, force: bool = False) -> None:
        """Renew the hold when ``RENEW_EVERY_SECONDS`` have passed; raise ``HoldLost`` if it is gone."""
        if not force and time.monotonic() - self._renewed_at < RENEW_EVERY_SECONDS:
            return
        now = timezone.now()
        if not Campaign.objects.renew_hold(self.campaign_id, self.held_since, now):
            raise HoldLost(
                _("Another process cleared the caching flag of campaign %(id)s during this work; try again.")
                % {"id": self.campaign_id}
            )
        self.held_since = now
        self._renewed_at = time.monotonic()


@contextlib.contextmanager
def hold_campaign(campaign_id: str, purpose: str) -> Iterator[CampaignHold]:
    """Hold the campaign's caching flag for the duration of the block.

    Raises ``CampaignNotFound`` for an unknown campaign and ``RunAlreadyActive``
    when a run or another holder has the flag. ``purpose`` names the work in
    the log.
    """
    started_at = Campaign.objects.filter(pk=campaign_id).values_list("caching_started_at", flat=True).first()
    if started_at is None and not Campaign.objects.filter(pk=campaign_id).exists():
        raise CampaignNotFound(_("Campaign %(id)s not found.") % {"id": campaign_id})
    now = timezone.now()
    if not Campaign.objects.claim_hold(campaign_id, now):
        active = CachingRun.objects.active().of_campaign(campaign_id).first()
        raise RunAlreadyActive(
            _("Campaign %(id)s is caching; wait for the run to end or cancel it first.") % {"id": campaign_id},
            active,
        )
    logger.info("Campaign %s held for %s", campaign_id, purpose)
    hold = CampaignHold(campaign_id, now)
    try:
        yield hold
    finally:
        if Campaign.objects.release_hold(campaign_id, hold.held_since, started_at):
            logger.info("Campaign %s released after %s", campaign_id, purpose)
        else:
            logger.warning("Campaign %s: the flag held for %s was cleared by another process", campaign_id, purpose)
