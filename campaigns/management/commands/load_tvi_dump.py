"""``manage.py load_tvi_dump CAMPAIGN_FILE POINTS_FILE``: load a TVI dump in MongoDB Extended JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from tqdm import tqdm

from campaigns.tvi_dump import CAMPAIGNS, DEFAULT_CHUNK_SIZE, POINTS, DumpCheck, DumpKind, LoadResult, check_dump, load_dump

MAX_CHUNK_SIZE = 10_000


def chunk_size_argument(raw: str) -> int:
    """Parse --chunk-size, an integer from 1 to MAX_CHUNK_SIZE."""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CHUNK_SIZE:
        raise CommandError(
            _("Invalid --chunk-size %(value)r; use an integer from 1 to %(max)d.") % {"value": raw, "max": MAX_CHUNK_SIZE}
        )
    return value


class Command(BaseCommand):
    # A property so that the text is translated when shown: argparse rejects a lazy string.
    @property
    def help(self) -> str:  # type: ignore[override]
        return _(
            "Load the campaign and points collections of a TVI dump (MongoDB Extended JSON, one document per line, "
            "as mongoexport writes) into the campaigns database. A document replaces the one with the same _id, so "
            "loading a dump again changes nothing. Every file is checked before anything is written."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign_file", type=Path, help=_("Dump of the campaign collection, such as campaign.json."))
        parser.add_argument("points_file", type=Path, help=_("Dump of the points collection, such as points.json."))
        parser.add_argument(
            "--chunk-size",
            type=chunk_size_argument,
            default=DEFAULT_CHUNK_SIZE,
            help=_("Documents written per database request (default %(default)d).") % {"default": DEFAULT_CHUNK_SIZE},
        )

    def handle(self, *args: Any, **options: Any) -> None:
        files = ((CAMPAIGNS, options["campaign_file"]), (POINTS, options["points_file"]))
        checks = [(kind, path, check_dump(path, kind)) for kind, path in files]
        problems = [(path, check) for _kind, path, check in checks if check.error_count]
        if problems:
            raise CommandError("\n".join(describe_errors(path, check) for path, check in problems))

        show_progress = options["verbosity"] >= 1
        results = []
        for kind, path, check in checks:
            results.append(self.load(kind, path, check.documents, options["chunk_size"], show_progress))
        if show_progress:
            self.write_summary(results)

    def load(self, kind: DumpKind, path: Path, documents: int, chunk_size: int, show_progress: bool) -> LoadResult:
        # tqdm turns itself off when stderr is not a terminal (disable=None).
        with tqdm(
            total=documents, desc=kind.collection, unit=_("documents"), file=sys.stderr,
            disable=None if show_progress else True,
        ) as bar:
            return load_dump(path, kind, chunk_size=chunk_size, on_progress=bar.update)

    def write_summary(self, results: list[LoadResult]) -> None:
        campaigns, points = results
        connection = connections[CAMPAIGNS.model.objects.db]
        self.stdout.write(
            self.style.SUCCESS(
                ngettext(
                    "Loaded %(count)d campaign into the %(vendor)s database %(alias)s "
                    "(%(created)d new, %(replaced)d replaced).",
                    "Loaded %(count)d campaigns into the %(vendor)s database %(alias)s "
                    "(%(created)d new, %(replaced)d replaced).",
                    campaigns.total,
                )
                % {
                    "count": campaigns.total,
                    "vendor": connection.display_name,
                    "alias": connection.alias,
                    "created": campaigns.created,
                    "replaced": campaigns.replaced,
                }
            )
        )
        self.stdout.write(
            self.style.SUCCESS(
                ngettext(
                    "Loaded %(count)d point (%(created)d new, %(replaced)d replaced).",
                    "Loaded %(count)d points (%(created)d new, %(replaced)d replaced).",
                    points.total,
                )
                % {"count": points.total, "created": points.created, "replaced": points.replaced}
            )
        )


def describe_errors(path: Path, check: DumpCheck) -> str:
    lines = [
        ngettext(
            "Nothing was loaded: %(path)s has %(count)d error.",
            "Nothing was loaded: %(path)s has %(count)d errors.",
            check.error_count,
        )
        % {"path": path, "count": check.error_count}
    ]
    lines.extend(f"  {message}" for message in check.errors)
    hidden = check.error_count - len(check.errors)
    if hidden:
        lines.append(
            ngettext("  ... and %(count)d more error.", "  ... and %(count)d more errors.", hidden) % {"count": hidden}
        )
    return "\n".join(lines)
