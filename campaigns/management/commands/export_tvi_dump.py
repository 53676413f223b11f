"""``manage.py export_tvi_dump OUTDIR``: write the campaigns and points as a TVI dump in MongoDB Extended JSON."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from tqdm import tqdm

from campaigns.management.commands.load_tvi_dump import chunk_size_argument
from campaigns.models import Campaign, Point
from campaigns.tvi_dump import CAMPAIGNS, DEFAULT_CHUNK_SIZE, JSON_MODES, POINTS, DumpKind, dumps_document, export_documents


class Command(BaseCommand):
    # A property so that the text is translated when shown: argparse rejects a lazy string.
    @property
    def help(self) -> str:  # type: ignore[override]
        return _(
            "Write the campaign and points collections to OUTDIR/campaign.json and OUTDIR/points.json in MongoDB "
            "Extended JSON, one document per line, as mongoexport does. load_tvi_dump reads them back."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("outdir", type=Path, help=_("Folder for campaign.json and points.json, created if missing."))
        parser.add_argument(
            "--campaign",
            action="append",
            dest="campaigns",
            metavar="ID",
            help=_("Export only this campaign and its points; repeat the option for several campaigns."),
        )
        parser.add_argument(
            "--json-mode",
            choices=sorted(JSON_MODES),
            default="relaxed",
            help=_(
                "Extended JSON mode: relaxed (the default, as mongoexport writes) or canonical, which also keeps "
                "the width of integers."
            ),
        )
        parser.add_argument("--force", action="store_true", help=_("Overwrite campaign.json and points.json if they exist."))
        parser.add_argument(
            "--chunk-size",
            type=chunk_size_argument,
            default=DEFAULT_CHUNK_SIZE,
            help=_("Documents read per database request (default %(default)d).") % {"default": DEFAULT_CHUNK_SIZE},
        )

    def handle(self, *args: Any, **options: Any) -> None:
        outdir: Path = options["outdir"]
        campaign_ids = options["campaigns"]
        if campaign_ids is not None:
            check_campaigns_exist(campaign_ids)
        targets = [(CAMPAIGNS, outdir / CAMPAIGNS.file_name), (POINTS, outdir / POINTS.file_name)]
        if not options["force"]:
            for _kind, path in targets:
                if path.exists():
                    raise CommandError(
                        _("%(path)s exists; pass --force to overwrite it or choose another folder.") % {"path": path}
                    )
        try:
            outdir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(_("Cannot create folder %(path)s: %(error)s") % {"path": outdir, "error": error}) from None

        show_progress = options["verbosity"] >= 1
        counts = []
        for kind, path in targets:
            documents = export_documents(kind, campaign_ids=campaign_ids, chunk_size=options["chunk_size"])
            total = expected_count(kind, campaign_ids) if show_progress else None
            with tqdm(
                total=total, desc=kind.collection, unit=_("documents"), file=sys.stderr,
                disable=None if show_progress else True,
            ) as bar:
                counts.append(write_lines(path, with_progress(documents, bar), options["json_mode"]))
        if show_progress:
            self.stdout.write(
                self.style.SUCCESS(
                    ngettext(
                        "Wrote %(count)d campaign to %(path)s.", "Wrote %(count)d campaigns to %(path)s.", counts[0]
                    )
                    % {"count": counts[0], "path": targets[0][1]}
                )
            )
            self.stdout.write(
                self.style.SUCCESS(
                    ngettext("Wrote %(count)d point to %(path)s.", "Wrote %(count)d points to %(path)s.", counts[1])
                    % {"count": counts[1], "path": targets[1][1]}
                )
            )


def check_campaigns_exist(campaign_ids: list[str]) -> None:
    found = set(Campaign.objects.filter(pk__in=campaign_ids).values_list("pk", flat=True))
    unknown = [campaign_id for campaign_id in campaign_ids if campaign_id not in found]
    if unknown:
        raise CommandError(
            ngettext(
                "Campaign %(ids)s not found; check the --campaign value.",
                "Campaigns %(ids)s not found; check the --campaign values.",
                len(unknown),
            )
            % {"ids": ", ".join(unknown)}
        )


def expected_count(kind: DumpKind, campaign_ids: list[str] | None) -> int:
    if kind is CAMPAIGNS:
        rows = Campaign.objects.all() if campaign_ids is None else Campaign.objects.filter(pk__in=campaign_ids)
    else:
        rows = Point.objects.all() if campaign_ids is None else Point.objects.filter(campaign_id__in=campaign_ids)
    return rows.count()


def with_progress(documents: Iterator[dict], bar: tqdm) -> Iterator[dict]:
    for document in documents:
        yield document
        bar.update(1)


def write_lines(path: Path, documents: Iterator[dict], json_mode: str) -> int:
    """Write one document per line to a temporary file renamed over ``path`` at the end; return the count."""
    count = 0
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            for document in documents:
                handle.write(dumps_document(document, json_mode))
                handle.write("\n")
                count += 1
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return count
