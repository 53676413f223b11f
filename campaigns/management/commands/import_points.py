"""``manage.py import_points CAMPAIGN FILE``: add the points of a GeoJSON or CSV file to a campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from campaigns.importers import FORMATS, ImportFileError, ParsedPoints, SaveResult, read_points, save_points
from campaigns.models import Campaign, Point
from tiles import visparams
from tiles.errors import InvalidTileRequest, NotCacheable
from tiles.grid import get_preset, preset_names

CAMPAIGN_ID_MAX_LENGTH = Campaign._meta.get_field("id").max_length


class Command(BaseCommand):
    # A property so that the text is translated when shown: argparse rejects a lazy string.
    @property
    def help(self) -> str:  # type: ignore[override]
        return _(
            "Import the points of a GeoJSON (Point, MultiPoint) or CSV (lon, lat columns) file into a campaign, "
            "creating the campaign if it does not exist. Nothing is written if any point is invalid."
        )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("campaign", help=_("Id of the campaign (its _id), created if missing."))
        parser.add_argument("file", type=Path, help=_("GeoJSON or CSV file of points in WGS84 degrees."))
        parser.add_argument(
            "--format",
            choices=FORMATS,
            help=_(
                "Format of the file. By default it is taken from the extension (.geojson, .json, .csv, .tsv, .txt)."
            ),
        )
        parser.add_argument(
            "--initial-year",
            metavar="YEAR",
            type=int,
            help=_("Sets the campaign's initialYear: the first year of imagery to cache (a calendar year)."),
        )
        parser.add_argument(
            "--final-year",
            metavar="YEAR",
            type=int,
            help=_("Sets the campaign's finalYear: the last year of imagery to cache, inclusive (a calendar year)."),
        )
        parser.add_argument(
            "--vis-params",
            metavar="NAMES",
            help=_(
                "Sets the campaign's visParams: comma-separated vis-param names of the campaign's layer, "
                "such as landsat-tvi-false,landsat-tvi-agri."
            ),
        )
        parser.add_argument(
            "--image-type",
            metavar="TYPE",
            help=_(
                "Sets the campaign's imageType: landsat or a sentinel type such as sentinel-2. "
                "New campaigns default to landsat. Planet and wms cannot be cached and are rejected."
            ),
        )
        parser.add_argument(
            "--preset",
            metavar="NAME",
            help=_("Sets the campaign's tile-plan preset by name (%(names)s). An empty name means the service default.")
            % {"names": ", ".join(preset_names())},
        )
        parser.add_argument(
            "--skip-duplicates",
            action="store_true",
            help=_(
                "Skip points whose longitude and latitude, rounded to 1e-7 degrees, already exist in the campaign "
                "or earlier in the file. Without it a re-import adds the points again under new ids."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign_id = validate_campaign_id(options["campaign"])
        alias = Point.objects.db
        existing = Campaign.objects.using(alias).filter(pk=campaign_id).first()
        changes = plan_campaign_changes(existing, options)

        try:
            parsed = read_points(options["file"], options["format"])
        except ImportFileError as error:
            raise CommandError(str(error)) from None
        if parsed.error_count:
            raise CommandError(describe_errors(options["file"], parsed))

        try:
            with transaction.atomic(using=alias):
                campaign, created = apply_campaign_changes(campaign_id, changes, alias)
                result = save_points(
                    campaign_id, parsed.positions(), skip_duplicates=options["skip_duplicates"], using=alias
                )
        except IntegrityError as error:
            raise CommandError(
                _(
                    "Nothing was imported: the database rejected the new points of campaign %(campaign)s "
                    "(%(error)s). If another import into this campaign ran at the same time, run the command again."
                )
                % {"campaign": campaign_id, "error": error}
            ) from None

        if options["verbosity"] < 1:
            return
        if created:
            self.stdout.write(
                _("Created campaign %(campaign)s (imageType %(image_type)s).")
                % {"campaign": campaign_id, "image_type": campaign.image_type}
            )
        elif changes:
            self.stdout.write(
                _("Updated campaign %(campaign)s: %(fields)s.")
                % {"campaign": campaign_id, "fields": ", ".join(field_columns(changes))}
            )
        self.write_result(campaign_id, result)
        self.write_warnings(campaign, created)

    def write_result(self, campaign_id: str, result: SaveResult) -> None:
        imported, skipped = result.imported, result.skipped
        if imported == 1:
            self.stdout.write(
                self.style.SUCCESS(
                    _("Imported 1 point into campaign %(campaign)s (id %(first)s).")
                    % {"campaign": campaign_id, "first": result.first_id}
                )
            )
        elif imported:
            self.stdout.write(
                self.style.SUCCESS(
                    _("Imported %(count)d points into campaign %(campaign)s (ids %(first)s to %(last)s).")
                    % {"count": imported, "campaign": campaign_id, "first": result.first_id, "last": result.last_id}
                )
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    ngettext(
                        "Imported no points: the %(count)d point of the file already exists in campaign %(campaign)s.",
                        "Imported no points: all %(count)d points of the file already exist in campaign %(campaign)s.",
                        skipped,
                    )
                    % {"count": skipped, "campaign": campaign_id}
                )
            )
        if skipped and imported:
            self.stdout.write(
                ngettext(
                    "Skipped %(count)d point whose coordinates already exist in the campaign or earlier in the file.",
                    "Skipped %(count)d points whose coordinates already exist in the campaign or earlier in the file.",
                    skipped,
                )
                % {"count": skipped}
            )

    def write_warnings(self, campaign: Campaign, created: bool) -> None:
        if created and (campaign.initial_year is None or campaign.final_year is None):
            self.stdout.write(
                self.style.WARNING(
                    _(
                        "Campaign %(campaign)s has no year range yet. Set it with --initial-year and --final-year "
                        "before caching it."
                    )
                    % {"campaign": campaign.id}
                )
            )
        if campaign.caching_in_progress:
            self.stdout.write(
                self.style.WARNING(
                    _("Campaign %(campaign)s is being cached now. The new points will be cached by the next run.")
                    % {"campaign": campaign.id}
                )
            )
        try:
            visparams.layer_for_image_type(campaign.image_type)
        except NotCacheable:
            self.stdout.write(
                self.style.WARNING(
                    _("Campaign %(campaign)s has imageType %(image_type)r, which this service cannot cache.")
                    % {"campaign": campaign.id, "image_type": campaign.image_type}
                )
            )


def validate_campaign_id(raw: str) -> str:
    campaign_id = raw.strip()
    if not campaign_id:
        raise CommandError(_("The campaign id is empty. Give the campaign's _id, such as teste_upload_pontos."))
    if campaign_id != raw:
        raise CommandError(
            _("The campaign id %(campaign)r starts or ends with spaces. Remove them.") % {"campaign": raw}
        )
    if len(campaign_id) > CAMPAIGN_ID_MAX_LENGTH:
        raise CommandError(
            _("The campaign id is %(length)d characters long, but the maximum is %(max)d.")
            % {"length": len(campaign_id), "max": CAMPAIGN_ID_MAX_LENGTH}
        )
    return campaign_id


def plan_campaign_changes(existing: Campaign | None, options: dict[str, Any]) -> dict[str, Any]:
    """Validate the campaign options given and return the model fields to set, by attribute name.

    Only options given explicitly appear in the result, so an existing
    campaign keeps every field no option names.
    """
    changes: dict[str, Any] = {}
    image_type = options.get("image_type")
    if image_type is not None:
        changes["image_type"] = validate_image_type(image_type)
    if options.get("initial_year") is not None:
        changes["initial_year"] = options["initial_year"]
    if options.get("final_year") is not None:
        changes["final_year"] = options["final_year"]
    if options.get("vis_params") is not None:
        changes["vis_params"] = parse_vis_params(options["vis_params"])
    if options.get("preset") is not None:
        changes["tile_preset"] = validate_preset(options["preset"])
    if not changes:
        return changes

    campaign_id = options["campaign"]
    effective_image_type = changes.get("image_type", existing.image_type if existing else visparams.LANDSAT)
    try:
        layer = visparams.layer_for_image_type(effective_image_type)
    except NotCacheable:
        if "vis_params" in changes or "initial_year" in changes or "final_year" in changes:
            raise CommandError(
                _(
                    "Campaign %(campaign)s has imageType %(image_type)r, which cannot be cached, so its years "
                    "and vis params cannot be checked. Pass --image-type landsat or a sentinel type."
                )
                % {"campaign": campaign_id, "image_type": effective_image_type}
            ) from None
        return changes

    if {"image_type", "initial_year", "final_year"} & changes.keys():
        # A year the options leave alone is the stored one, which a new image
        # type may put out of range.
        initial_label = "--initial-year" if "initial_year" in changes else _("the stored initialYear")
        final_label = "--final-year" if "final_year" in changes else _("the stored finalYear")
        validate_years(
            layer,
            (initial_label, changes.get("initial_year", existing.initial_year if existing else None)),
            (final_label, changes.get("final_year", existing.final_year if existing else None)),
        )
    if "vis_params" in changes or "image_type" in changes:
        validate_vis_params_for_layer(campaign_id, layer, existing, changes)
    return changes


def validate_image_type(raw: str) -> str:
    image_type = raw.strip().lower()
    try:
        visparams.layer_for_image_type(image_type)
    except NotCacheable:
        raise CommandError(
            _(
                "--image-type %(value)r cannot be cached. Use landsat or a sentinel type such as sentinel-2. "
                "Planet and WMS campaigns take their tiles from an outside map service."
            )
            % {"value": raw}
        ) from None
    return image_type


def year_range(layer: str) -> tuple[int, int]:
    first = visparams.FIRST_SENTINEL_YEAR if layer == visparams.SENTINEL else visparams.FIRST_LANDSAT_YEAR
    return first, visparams.LAST_YEAR


def validate_years(layer: str, initial: tuple[str, int | None], final: tuple[str, int | None]) -> None:
    """Check a campaign's (label, year) pairs against the layer's imagery years and against each other."""
    first, last = year_range(layer)
    for label, year in (initial, final):
        if year is not None and not first <= year <= last:
            raise CommandError(
                _("%(label)s %(year)s is outside the years of the %(layer)s layer. Use %(first)d to %(last)d.")
                % {"label": label, "year": year, "layer": layer, "first": first, "last": last}
            )
    initial_year, final_year = initial[1], final[1]
    if initial_year is not None and final_year is not None and initial_year > final_year:
        raise CommandError(
            _("The initial year %(initial)s is after the final year %(final)s. Give --initial-year <= --final-year.")
            % {"initial": initial_year, "final": final_year}
        )


def parse_vis_params(raw: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    if not names:
        raise CommandError(_("--vis-params is empty. Give one or more comma-separated vis-param names."))
    return names


def validate_vis_params_for_layer(
    campaign_id: str, layer: str, existing: Campaign | None, changes: dict[str, Any]
) -> None:
    """Check that the vis params the campaign will cache belong to its layer."""
    known = ", ".join(sorted(name for name, vis in visparams.REGISTRY.items() if vis.layer == layer))
    for name in changes.get("vis_params", []):
        try:
            visparams.get_vis_param(name, layer)
        except InvalidTileRequest:
            raise CommandError(
                _("Unknown vis param %(name)r for the %(layer)s layer. Use one or more of %(known)s.")
                % {"name": name, "layer": layer, "known": known}
            ) from None
    if "vis_params" in changes or existing is None:
        return
    # The image type changed but the vis params did not: the stored ones must
    # still fit the new layer.
    try:
        visparams.campaign_vis_params(layer, existing.vis_params, existing.vis_params_enable, existing.vis_param)
    except InvalidTileRequest:
        stored = existing.vis_params or existing.vis_params_enable or [existing.vis_param]
        raise CommandError(
            _(
                "Campaign %(campaign)s has vis params %(stored)s, which do not belong to the %(layer)s layer. "
                "Pass --vis-params with vis params of that layer (%(known)s)."
            )
            % {"campaign": campaign_id, "stored": ", ".join(map(str, stored)), "layer": layer, "known": known}
        ) from None


def validate_preset(raw: str) -> str | None:
    name = raw.strip()
    if not name:
        return None
    names = preset_names()
    if name not in names:
        raise CommandError(
            _("Unknown --preset %(name)r. Use one of %(names)s.") % {"name": raw, "names": ", ".join(names)}
        )
    try:
        get_preset(name)
    except InvalidTileRequest as error:
        raise CommandError(
            _("The tile-plan preset %(name)r is misconfigured in the settings: %(error)s")
            % {"name": name, "error": error}
        ) from None
    return name


def apply_campaign_changes(campaign_id: str, changes: dict[str, Any], using: str) -> tuple[Campaign, bool]:
    """Create the campaign with ``changes``, or save only the changed fields of an existing one."""
    campaign = Campaign.objects.using(using).filter(pk=campaign_id).first()
    if campaign is None:
        campaign = Campaign(id=campaign_id, **changes)
        campaign.save(using=using, force_insert=True)
        return campaign, True
    for name, value in changes.items():
        setattr(campaign, name, value)
    if changes:
        campaign.save(using=using, update_fields=list(changes))
    return campaign, False


def field_columns(changes: dict[str, Any]) -> list[str]:
    """Return the TVI names (columns) of the changed fields, such as initialYear."""
    return [Campaign._meta.get_field(name).column for name in changes]


def describe_errors(path: Path, parsed: ParsedPoints) -> str:
    lines = [
        ngettext(
            "Nothing was imported: %(path)s has %(count)d invalid point.",
            "Nothing was imported: %(path)s has %(count)d invalid points.",
            parsed.error_count,
        )
        % {"path": path, "count": parsed.error_count}
    ]
    lines.extend(f"  {message}" for message in parsed.errors)
    hidden = parsed.error_count - len(parsed.errors)
    if hidden:
        lines.append(
            ngettext("  ... and %(count)d more error.", "  ... and %(count)d more errors.", hidden) % {"count": hidden}
        )
    return "\n".join(lines)
