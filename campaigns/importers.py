"""Read campaign points from GeoJSON and CSV files, validate them and store them.

Reading is pure: ``read_points`` streams a file and returns the valid
coordinates in two compact float arrays (16 bytes per point) plus the first
errors and their total count, so a 100,000-point file never becomes 100,000
Python objects. ``save_points`` then writes them as TVI points with ids
``{index}_{campaign}``; it is the only function here that touches the database.
"""

from __future__ import annotations

import csv
import io
import math
import re
from array import array
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import ijson
from django.db import transaction
from django.utils.translation import gettext as _

from campaigns.models import Point

GEOJSON = "geojson"
CSV = "csv"
FORMATS = (GEOJSON, CSV)
EXTENSION_FORMATS = {".geojson": GEOJSON, ".json": GEOJSON, ".csv": CSV, ".tsv": CSV, ".txt": CSV}

MAX_REPORTED_ERRORS = 20
SAVE_CHUNK_SIZE = 2000
# Coordinates that agree to 1e-7 degrees (about 1 cm) count as the same place.
DUPLICATE_PRECISION = 10**7

MIN_LONGITUDE, MAX_LONGITUDE = -180.0, 180.0
MIN_LATITUDE, MAX_LATITUDE = -90.0, 90.0

LONGITUDE_COLUMN, LONGITUDE_ALIASES = "lon", ("lng", "longitude", "x")
LATITUDE_COLUMN, LATITUDE_ALIASES = "lat", ("latitude", "y")
CSV_DELIMITERS = (",", ";", "\t")

POINT_INDEX = re.compile(r"[0-9]+")


class ImportFileError(ValueError):
    """A file that cannot be read as a whole: missing, empty, not JSON, no coordinate columns."""


class CoordinateError(ValueError):
    """A longitude/latitude pair that is not a valid WGS84 position."""


@dataclass(frozen=True)
class RawPosition:
    """A position as the file gives it, before validation, with where it was found."""

    location: str
    lon: object
    lat: object


@dataclass(frozen=True)
class RecordError:
    location: str
    message: str


@dataclass
class ParsedPoints:
    """Valid positions of a file in file order, and what was wrong with the others."""

    lons: array = field(default_factory=lambda: array("d"))
    lats: array = field(default_factory=lambda: array("d"))
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def __len__(self) -> int:
        return len(self.lons)

    def positions(self) -> Iterator[tuple[float, float]]:
        return zip(self.lons, self.lats)

    def add_error(self, location: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(_("%(location)s: %(message)s") % {"location": location, "message": message})


@dataclass(frozen=True)
class SaveResult:
    imported: int
    skipped: int
    first_id: str | None
    last_id: str | None


# --- Coordinate validation -------------------------------------------------


def parse_coordinate(raw: object, axis: str) -> float:
    """Convert one coordinate to a finite float, or raise CoordinateError naming ``axis`` and the value.

    Accepts JSON numbers and decimal text such as ``"-48.16"``; rejects booleans,
    null, empty text, NaN and infinities.
    """
    if isinstance(raw, bool) or raw is None:
        raise CoordinateError(_("%(axis)s %(value)s is not a number.") % {"axis": axis, "value": _display(raw)})
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise CoordinateError(_("%(axis)s is missing.") % {"axis": axis})
        try:
            # float() also accepts "1_000", which no coordinate file means.
            if "_" in text:
                raise ValueError(text)
            value = float(text)
        except ValueError:
            raise CoordinateError(
                _("%(axis)s %(value)s is not a number.") % {"axis": axis, "value": _display(raw)}
            ) from None
    else:
        raise CoordinateError(_("%(axis)s %(value)s is not a number.") % {"axis": axis, "value": _display(raw)})
    if not math.isfinite(value):
        raise CoordinateError(
            _("%(axis)s %(value)s is not a finite number.") % {"axis": axis, "value": _display(raw)}
        )
    return value


def validate_position(raw_lon: object, raw_lat: object) -> tuple[float, float]:
    """Return (lon, lat) as floats in WGS84 degrees, or raise CoordinateError saying what is wrong.

    A pair whose latitude is out of range but which would be valid with the two
    values exchanged is reported as swapped, the usual mistake behind it.
    """
    lon = parse_coordinate(raw_lon, _("longitude"))
    lat = parse_coordinate(raw_lat, _("latitude"))
    lat_valid = MIN_LATITUDE <= lat <= MAX_LATITUDE
    lon_valid = MIN_LONGITUDE <= lon <= MAX_LONGITUDE
    if not lat_valid and MIN_LATITUDE <= lon <= MAX_LATITUDE and MIN_LONGITUDE <= lat <= MAX_LONGITUDE:
        raise CoordinateError(
            _(
                "longitude %(lon)s and latitude %(lat)s look swapped: the latitude is outside -90 to 90, "
                "but the pair is valid the other way round. Put the longitude first."
            )
            % {"lon": _display(raw_lon), "lat": _display(raw_lat)}
        )
    if not lon_valid:
        raise CoordinateError(_("longitude %(value)s is outside -180 to 180.") % {"value": _display(raw_lon)})
    if not lat_valid:
        raise CoordinateError(_("latitude %(value)s is outside -90 to 90.") % {"value": _display(raw_lat)})
    return lon, lat


def _display(raw: object) -> str:
    if isinstance(raw, str):
        return repr(raw)
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


# --- Reading files ---------------------------------------------------------


def detect_format(path: Path, requested: str | None = None) -> str:
    """Return the file format: ``requested`` if given, else the one its extension names."""
    if requested:
        if requested not in FORMATS:
            raise ImportFileError(
                _("Unknown format %(format)r; use %(formats)s.") % {"format": requested, "formats": ", ".join(FORMATS)}
            )
        return requested
    found = EXTENSION_FORMATS.get(path.suffix.lower())
    if found is None:
        raise ImportFileError(
            _(
                "Cannot tell the format of %(path)s from its extension %(suffix)r; "
                "use a .geojson, .json or .csv file, or pass --format geojson or --format csv."
            )
            % {"path": path, "suffix": path.suffix}
        )
    return found


def read_points(path: Path | str, file_format: str | None = None) -> ParsedPoints:
    """Stream a GeoJSON or CSV file and validate every position in it.

    Raises ImportFileError when the file cannot be read as a whole (missing,
    empty, malformed JSON, no coordinate columns, no points at all). Invalid
    positions do not raise: they are counted, and the first
    ``MAX_REPORTED_ERRORS`` are kept as messages naming the feature or line.
    """
    path = Path(path)
    chosen = detect_format(path, file_format)
    try:
        with path.open("rb") as binary:
            if _is_blank(binary):
                raise ImportFileError(_("File %(path)s is empty.") % {"path": path})
            if chosen == GEOJSON:
                parsed = collect_positions(iter_geojson_positions(binary))
            else:
                # Only the coordinate columns are used and they are ASCII, so
                # text in another encoding elsewhere in a row does no harm.
                text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")
                try:
                    parsed = collect_positions(iter_csv_positions(text))
                finally:
                    text.detach()
    except FileNotFoundError:
        raise ImportFileError(_("File %(path)s does not exist.") % {"path": path}) from None
    except IsADirectoryError:
        raise ImportFileError(_("%(path)s is a folder, not a file.") % {"path": path}) from None
    except PermissionError:
        raise ImportFileError(_("File %(path)s cannot be read: permission denied.") % {"path": path}) from None
    if not parsed.error_count and not len(parsed):
        raise ImportFileError(_("File %(path)s contains no points.") % {"path": path})
    return parsed


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


def _is_blank(binary: IO[bytes]) -> bool:
    """Return whether a file holds only whitespace (or a byte-order mark), leaving it at the start."""
    blank = True
    while chunk := binary.read(64 * 1024):
        if chunk.lstrip(b"\xef\xbb\xbf \t\r\n"):
            blank = False
            break
    binary.seek(0)
    return blank


# --- GeoJSON ---------------------------------------------------------------


def feature_location(number: int, member: int | None = None) -> str:
    if member is None:
        return _("Feature %(number)d") % {"number": number}
    return _("Feature %(number)d, point %(member)d") % {"number": number, "member": member}


def iter_geojson_positions(binary: IO[bytes]) -> Iterator[RawPosition | RecordError]:
    """Yield the positions of a GeoJSON FeatureCollection, Feature, Point or MultiPoint.

    A FeatureCollection's ``features`` array is streamed one feature at a
    time. Features are numbered from 1; a lone Feature or geometry is feature 1.
    Each position of a MultiPoint is yielded on its own.
    """
    reader = _GeoJSONStream(binary)
    yield from reader.positions()


class _GeoJSONStream:
    """Walks ijson's parse events of one GeoJSON document and builds one feature at a time."""

    def __init__(self, binary: IO[bytes]) -> None:
        if binary.read(3) != b"\xef\xbb\xbf":
            binary.seek(0)
        self._events = ijson.basic_parse(binary, use_float=True)
        # Number of the feature being parsed, so that a JSON syntax error can name it.
        self._feature_number: int | None = None

    def positions(self) -> Iterator[RawPosition | RecordError]:
        event, _value = self._next()
        if event != "start_map":
            raise ImportFileError(
                _("A GeoJSON file must contain one JSON object: a FeatureCollection, a Feature or a geometry.")
            )
        members: dict[str, Any] = {}
        streamed_features = False
        while True:
            event, key = self._next()
            if event == "end_map":
                break
            if key == "features":
                streamed_features = True
                yield from self._stream_features()
            else:
                members[key] = self._build_value(*self._next())
        self._expect_end()

        kind = members.get("type")
        if streamed_features and kind != "FeatureCollection":
            raise ImportFileError(
                _("The GeoJSON object has a features array but its type is %(type)s, not FeatureCollection.")
                % {"type": _display(kind)}
            )
        if streamed_features:
            return
        if kind == "FeatureCollection":
            raise ImportFileError(_("The GeoJSON FeatureCollection has no features array."))
        if kind == "Feature":
            yield from feature_positions(members, 1)
        elif kind in ("Point", "MultiPoint"):
            yield from geometry_positions(members, 1)
        else:
            raise ImportFileError(
                _(
                    "GeoJSON type %(type)s cannot be imported; use a FeatureCollection, a Feature, "
                    "a Point or a MultiPoint."
                )
                % {"type": _display(kind)}
            )

    def _stream_features(self) -> Iterator[RawPosition | RecordError]:
        event, _value = self._next()
        if event != "start_array":
            raise ImportFileError(_("The GeoJSON features member must be an array."))
        number = 0
        while True:
            self._feature_number = number + 1
            event, value = self._next()
            if event == "end_array":
                break
            number += 1
            feature = self._build_value(event, value)
            yield from feature_positions(feature, number)
        self._feature_number = None

    def _build_value(self, event: str, value: Any) -> Any:
        if event not in ("start_map", "start_array"):
            return value
        builder = ijson.ObjectBuilder()
        builder.event(event, value)
        depth = 1
        while depth:
            event, value = self._next()
            builder.event(event, value)
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
        return builder.value

    def _expect_end(self) -> None:
        try:
            self._next()
        except StopIteration:
            return
        raise ImportFileError(_("The GeoJSON file has more content after its JSON object."))

    def _next(self) -> tuple[str, Any]:
        try:
            return next(self._events)
        except ijson.JSONError as error:
            raise self._syntax_error(error) from None

    def _syntax_error(self, error: Exception) -> ImportFileError:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if re.search(r"\b(nan|infinity|-?inf)\b", str(error), re.IGNORECASE):
            detail += " " + _("(NaN and Infinity are not valid JSON numbers.)")
        if self._feature_number is not None:
            return ImportFileError(
                _("Feature %(number)d is not valid JSON: %(detail)s")
                % {"number": self._feature_number, "detail": detail}
            )
        return ImportFileError(_("The file is not valid JSON: %(detail)s") % {"detail": detail})


def feature_positions(feature: object, number: int) -> Iterator[RawPosition | RecordError]:
    location = feature_location(number)
    if not isinstance(feature, dict):
        yield RecordError(location, _("a feature must be a JSON object, found %(value)s.") % {"value": _display(feature)})
        return
    if "geometry" not in feature:
        yield RecordError(location, _("the feature has no geometry member."))
        return
    yield from geometry_positions(feature["geometry"], number)


def geometry_positions(geometry: object, number: int) -> Iterator[RawPosition | RecordError]:
    location = feature_location(number)
    if geometry is None:
        yield RecordError(location, _("the geometry is null."))
        return
    if not isinstance(geometry, dict):
        yield RecordError(location, _("the geometry must be a JSON object, found %(value)s.") % {"value": _display(geometry)})
        return
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if kind == "Point":
        yield _position(location, coordinates)
    elif kind == "MultiPoint":
        if not isinstance(coordinates, list) or not coordinates:
            yield RecordError(
                location,
                _("the MultiPoint has no positions (coordinates %(value)s).") % {"value": _short(coordinates)},
            )
            return
        for member, position in enumerate(coordinates, start=1):
            yield _position(feature_location(number, member), position)
    else:
        yield RecordError(
            location,
            _("geometry type %(type)s cannot be imported; use Point or MultiPoint.") % {"type": _display(kind)},
        )


def _position(location: str, coordinates: object) -> RawPosition | RecordError:
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        return RecordError(
            location,
            _("coordinates must be [longitude, latitude], found %(value)s.") % {"value": _short(coordinates)},
        )
    # A third value (altitude) is allowed by GeoJSON and ignored.
    return RawPosition(location, coordinates[0], coordinates[1])


def _short(value: object, limit: int = 80) -> str:
    text = _display(value) if not isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- CSV -------------------------------------------------------------------


def line_location(number: int) -> str:
    return _("Line %(number)d") % {"number": number}


def detect_delimiter(header_line: str) -> str:
    """Return the delimiter among comma, semicolon and tab that the header line uses most."""
    counts = {delimiter: header_line.count(delimiter) for delimiter in CSV_DELIMITERS}
    best = max(CSV_DELIMITERS, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def find_coordinate_columns(header: list[str]) -> tuple[int, int]:
    """Return the indexes of the longitude and latitude columns of a CSV header.

    Names match without regard to case or surrounding spaces. ``lon`` and
    ``lat`` win; an alias (lng, longitude, x; latitude, y) is used only when
    exactly one of them is present. The error lists the header's columns.
    """
    names = [name.strip().lower() for name in header]
    lon_index = _find_column(names, header, LONGITUDE_COLUMN, LONGITUDE_ALIASES, _("longitude"))
    lat_index = _find_column(names, header, LATITUDE_COLUMN, LATITUDE_ALIASES, _("latitude"))
    return lon_index, lat_index


def _find_column(names: list[str], header: list[str], column: str, aliases: tuple[str, ...], axis: str) -> int:
    columns = ", ".join(repr(name) for name in header)
    exact = [index for index, name in enumerate(names) if name == column]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise ImportFileError(
            _("The CSV header has %(count)d columns named %(name)s; keep one. Its columns are: %(columns)s.")
            % {"count": len(exact), "name": column, "columns": columns}
        )
    matches = [index for index, name in enumerate(names) if name in aliases]
    if len(matches) == 1:
        return matches[0]
    accepted = ", ".join([column, *aliases])
    if not matches:
        raise ImportFileError(
            _(
                "The CSV header has no %(axis)s column (one of %(accepted)s). Its columns are: %(columns)s."
            )
            % {"axis": axis, "accepted": accepted, "columns": columns}
        )
    found = ", ".join(repr(header[index]) for index in matches)
    raise ImportFileError(
        _(
            "The CSV header has several possible %(axis)s columns (%(found)s); rename the right one to %(name)s. "
            "Its columns are: %(columns)s."
        )
        % {"axis": axis, "found": found, "name": column, "columns": columns}
    )


def iter_csv_positions(text: IO[str]) -> Iterator[RawPosition | RecordError]:
    """Yield the positions of a CSV file whose header names the coordinate columns.

    Lines are numbered as in a text editor, the header being line 1 when the
    file starts with it. Blank lines are skipped. With a semicolon or tab
    delimiter a decimal comma (``-48,16``) is read as a decimal point.
    """
    blank_lines = 0
    header_line = ""
    for line in text:
        if line.strip():
            header_line = line
            break
        blank_lines += 1
    if not header_line:
        return
    delimiter = detect_delimiter(header_line)
    reader = csv.reader(chain([header_line], text), delimiter=delimiter)
    try:
        header = next(reader)
        lon_index, lat_index = find_coordinate_columns(header)
        needed = max(lon_index, lat_index) + 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            location = line_location(reader.line_num + blank_lines)
            if len(row) < needed:
                yield RecordError(
                    location,
                    _("the row has %(count)d columns but the coordinates are in column %(needed)d; row: %(row)s")
                    % {"count": len(row), "needed": needed, "row": _short(delimiter.join(row))},
                )
                continue
            lon, lat = row[lon_index], row[lat_index]
            if delimiter != ",":
                lon, lat = _decimal_point(lon), _decimal_point(lat)
            yield RawPosition(location, lon, lat)
    except csv.Error as error:
        raise ImportFileError(
            _("Line %(number)d is not valid CSV: %(detail)s") % {"number": reader.line_num + blank_lines, "detail": error}
        ) from None


def _decimal_point(text: str) -> str:
    if text.count(",") == 1 and "." not in text:
        return text.replace(",", ".")
    return text


# --- Saving ----------------------------------------------------------------


def point_id(index: int, campaign_id: str) -> str:
    return f"{index}_{campaign_id}"


def point_index(point_id_value: str, campaign_id: str) -> int | None:
    """Return N of an id ``N_{campaign}``, or None for ids of any other shape."""
    suffix = f"_{campaign_id}"
    if not point_id_value.endswith(suffix):
        return None
    prefix = point_id_value[: -len(suffix)]
    return int(prefix) if POINT_INDEX.fullmatch(prefix) else None


def coordinate_key(lon: float, lat: float) -> tuple[int, int]:
    return round(lon * DUPLICATE_PRECISION), round(lat * DUPLICATE_PRECISION)


def scan_existing_points(campaign_id: str, using: str, *, with_coordinates: bool) -> tuple[int, set[tuple[int, int]]]:
    """Return the highest numeric index among the campaign's point ids and, if asked, their coordinate keys.

    Ids are streamed, so a campaign of 100,000 points is never loaded at once.
    """
    highest = 0
    keys: set[tuple[int, int]] = set()
    points = Point.objects.using(using).filter(campaign_id=campaign_id)
    if with_coordinates:
        rows: Iterator[tuple[Any, ...]] = points.values_list("id", "lon", "lat").iterator(chunk_size=SAVE_CHUNK_SIZE)
    else:
        rows = points.values_list("id").iterator(chunk_size=SAVE_CHUNK_SIZE)
    for row in rows:
        index = point_index(row[0], campaign_id)
        if index is not None and index > highest:
            highest = index
        if with_coordinates and row[1] is not None and row[2] is not None:
            keys.add(coordinate_key(row[1], row[2]))
    return highest, keys


def save_points(
    campaign_id: str,
    positions: Iterable[tuple[float, float]],
    *,
    skip_duplicates: bool = False,
    using: str | None = None,
    chunk_size: int = SAVE_CHUNK_SIZE,
) -> SaveResult:
    """Insert validated (lon, lat) positions as points of a campaign, numbering ids after the existing ones.

    Ids are ``{index}_{campaign}`` from the highest existing numeric index plus
    one; ids of other shapes do not count. With ``skip_duplicates`` a position
    whose rounded coordinates already exist in the campaign (or earlier in
    ``positions``) is skipped. ``cached`` is left NULL, which TVI reads as not
    cached. Runs in one transaction on ``using`` (the points' database by
    default): an error leaves the campaign as it was.
    """
    alias = using or Point.objects.db
    imported = skipped = 0
    first_id: str | None = None
    last_id: str | None = None
    with transaction.atomic(using=alias):
        # NOTE: two imports into the same campaign at once may compute the same
        # next index on databases without a write lock at BEGIN; the second
        # then fails on the primary key and rolls back instead of mixing ids.
        highest, existing = scan_existing_points(campaign_id, alias, with_coordinates=skip_duplicates)
        next_index = highest + 1
        chunk: list[Point] = []
        for lon, lat in positions:
            if skip_duplicates:
                key = coordinate_key(lon, lat)
                if key in existing:
                    skipped += 1
                    continue
                existing.add(key)
            new_id = point_id(next_index, campaign_id)
            next_index += 1
            first_id = first_id or new_id
            last_id = new_id
            chunk.append(Point(id=new_id, campaign_id=campaign_id, lon=lon, lat=lat))
            if len(chunk) >= chunk_size:
                Point.objects.using(alias).bulk_create(chunk)
                imported += len(chunk)
                chunk = []
        if chunk:
            Point.objects.using(alias).bulk_create(chunk)
            imported += len(chunk)
    return SaveResult(imported=imported, skipped=skipped, first_id=first_id, last_id=last_id)
