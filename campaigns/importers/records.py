"""Records the file readers yield (raw positions and per-record errors) and the validated result."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

from django.utils.translation import gettext as _

from campaigns.importers.coordinates import CoordinateError, display_value, validate_position

MAX_REPORTED_ERRORS = 20

FEATURE = "feature"
LINE = "line"


class ImportFileError(ValueError):
    """A file that cannot be read as a whole: missing, empty, not JSON, no coordinate columns."""


class Location(NamedTuple):
    """Place of a record in its file: a GeoJSON feature (and MultiPoint member) or a CSV line.

    Features and MultiPoint members are numbered from 1. CSV lines are
    physical line numbers, so the header is line 1.
    """

    kind: str
    number: int
    member: int | None = None

    def describe(self) -> str:
        # Called only when an error is reported, because a gettext call per
        # record took most of the time of a 100,000-point import.
        if self.kind == LINE:
            return _("Line %(number)d") % {"number": self.number}
        if self.member is None:
            return _("Feature %(number)d") % {"number": self.number}
        return _("Feature %(number)d, point %(member)d") % {"number": self.number, "member": self.member}


class RawPosition(NamedTuple):
    """A position as the file gives it, before validation."""

    location: Location
    lon: object
    lat: object


class RecordError(NamedTuple):
    location: Location
    message: str


@dataclass
class ParsedPoints:
    """Valid positions of a file in file order, and what was wrong with the others.

    Coordinates are kept in two float arrays, 16 bytes per point, so that a
    100,000-point file takes 1.6 MB once read.
    """

    lons: array = field(default_factory=lambda: array("d"))
    lats: array = field(default_factory=lambda: array("d"))
    # The first MAX_REPORTED_ERRORS error messages, each naming its feature or line.
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def __len__(self) -> int:
        return len(self.lons)

    def positions(self) -> Iterator[tuple[float, float]]:
        return zip(self.lons, self.lats)

    def add_error(self, location: Location, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(_("%(location)s: %(message)s") % {"location": location.describe(), "message": message})


def collect_positions(records: Iterable[RawPosition | RecordError]) -> ParsedPoints:
    """Validate every position a reader yields, keeping the valid ones and counting the errors."""
    parsed = ParsedPoints()
    for record in records:
        if isinstance(record, RecordError):
            parsed.add_error(record.location, record.message)
            continue
        try:
            lon, lat = validate_position(record.lon, record.lat)
        except CoordinateError as error:
            parsed.add_error(record.location, str(error))
            continue
        parsed.lons.append(lon)
        parsed.lats.append(lat)
    return parsed


def shorten(value: object, limit: int = 80) -> str:
    text = str(value) if isinstance(value, (list, dict)) else display_value(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
