"""Helpers the campaign commands share: argument checks and a progress bar on the command's output."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandError, OutputWrapper
from django.utils.translation import gettext as _
from tqdm import tqdm

from campaigns.models import Campaign
from tiles.grid import preset_names


class CommandOutput:
    """A file-like view of a command's ``stdout`` for tqdm, which writes ``\\r`` updates without newlines."""

    def __init__(self, output: OutputWrapper):
        self.output = output

    def write(self, text: str) -> None:
        self.output.write(text, ending="")

    def flush(self) -> None:
        self.output.flush()


def progress_bar(output: OutputWrapper, *, total: int, description: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=description, unit=unit, file=CommandOutput(output), dynamic_ncols=False, ncols=80)


def existing_campaign(campaign_id: str) -> Campaign:
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise CommandError(
            _("Campaign %(id)s not found; give the campaign's _id as TVI shows it, or import it with import_points.")
            % {"id": campaign_id}
        )
    return campaign


def checked_batch_size(value: int | None) -> int | None:
    maximum = settings.CACHE_MAX_BATCH_SIZE
    if value is not None and not 1 <= value <= maximum:
        raise CommandError(
            _("Invalid --batch-size %(value)d; use an integer from 1 to %(max)d.") % {"value": value, "max": maximum}
        )
    return value


def checked_preset(value: str | None) -> str | None:
    names = preset_names()
    if value is not None and value not in names:
        raise CommandError(
            _("Unknown --preset %(value)r; use one of %(names)s.") % {"value": value, "names": ", ".join(names)}
        )
    return value
