"""Streaming reader of the positions of a CSV file with a header row."""

from __future__ import annotations

import csv
from itertools import chain
from typing import IO, Iterator

from django.utils.translation import gettext as _

from campaigns.importers.coordinates import LATITUDE, LONGITUDE, axis_label
from campaigns.importers.records import LINE, ImportFileError, Location, RawPosition, RecordError, shorten

LONGITUDE_COLUMN, LONGITUDE_ALIASES = "lon", ("lng", "longitude", "x")
LATITUDE_COLUMN, LATITUDE_ALIASES = "lat", ("latitude", "y")
DELIMITERS = (",", ";", "\t")


def detect_delimiter(header_line: str) -> str:
    """Return the delimiter among comma, semicolon and tab that the header line uses most."""
    counts = {delimiter: header_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(DELIMITERS, key=lambda delimiter: counts[delimiter])
    return best if counts[best] else ","


def find_coordinate_columns(header: list[str]) -> tuple[int, int]:
    """Return the indexes of the longitude and latitude columns of a CSV header.

    Names match without regard to case or surrounding spaces. Columns named
    ``lon`` and ``lat`` win. Otherwise an alias (lng, longitude or x for the
    longitude, latitude or y for the latitude) is used only when exactly one
    of them is present. The error lists the header's columns.
    """
    names = [name.strip().lower() for name in header]
    lon_index = _find_column(names, header, LONGITUDE_COLUMN, LONGITUDE_ALIASES, LONGITUDE)
    lat_index = _find_column(names, header, LATITUDE_COLUMN, LATITUDE_ALIASES, LATITUDE)
    return lon_index, lat_index


def _find_column(names: list[str], header: list[str], column: str, aliases: tuple[str, ...], axis: str) -> int:
    columns = ", ".join(repr(name) for name in header)
    exact = [index for index, name in enumerate(names) if name == column]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise ImportFileError(
            _("The CSV header has %(count)d columns named %(name)s. Keep one. Its columns are: %(columns)s.")
            % {"count": len(exact), "name": column, "columns": columns}
        )
    matches = [index for index, name in enumerate(names) if name in aliases]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ImportFileError(
            _("The CSV header has no %(axis)s column (one of %(accepted)s). Its columns are: %(columns)s.")
            % {"axis": axis_label(axis), "accepted": ", ".join([column, *aliases]), "columns": columns}
        )
    found = ", ".join(repr(header[index]) for index in matches)
    raise ImportFileError(
        _(
            "The CSV header has several possible %(axis)s columns (%(found)s). Rename the right one to %(name)s. "
            "Its columns are: %(columns)s."
        )
        % {"axis": axis_label(axis), "found": found, "name": column, "columns": columns}
    )


def iter_csv_positions(text: IO[str]) -> Iterator[RawPosition | RecordError]:
    """Yield the positions of a CSV file whose header names the coordinate columns.

    Lines are numbered as in a text editor, so the header is line 1 unless
    blank lines precede it. Blank lines are skipped. With a semicolon or tab
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
            complete = len(row) >= needed and row[lon_index].strip() and row[lat_index].strip()
            if not complete and not any(cell.strip() for cell in row):
                # A blank line, or one of delimiters only as spreadsheets write at the end.
                continue
            if len(row) < needed:
                yield RecordError(
                    Location(LINE, reader.line_num + blank_lines),
                    _("the row has %(count)d columns but the coordinates are in column %(needed)d. Row: %(row)s")
                    % {"count": len(row), "needed": needed, "row": shorten(delimiter.join(row))},
                )
                continue
            lon, lat = row[lon_index], row[lat_index]
            if delimiter != ",":
                lon, lat = _decimal_point(lon), _decimal_point(lat)
            yield RawPosition(Location(LINE, reader.line_num + blank_lines), lon, lat)
    except csv.Error as error:
        raise ImportFileError(
            _("Line %(number)d is not valid CSV: %(detail)s")
            % {"number": reader.line_num + blank_lines, "detail": error}
        ) from None


def _decimal_point(text: str) -> str:
    if text.count(",") == 1 and "." not in text:
        return text.replace(",", ".")
    return text
