"""Open a point file, pick its reader and validate every position in it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

from django.utils.translation import gettext as _

from campaigns.importers.csvfile import iter_csv_positions
from campaigns.importers.geojson import iter_geojson_positions
from campaigns.importers.records import ImportFileError, ParsedPoints, collect_positions

GEOJSON = "geojson"
CSV = "csv"
FORMATS = (GEOJSON, CSV)
EXTENSION_FORMATS = {".geojson": GEOJSON, ".json": GEOJSON, ".csv": CSV, ".tsv": CSV, ".txt": CSV}
BLANK_BYTES = b"\xef\xbb\xbf \t\r\n"


def detect_format(path: Path, requested: str | None = None) -> str:
    """Return the file format: ``requested`` if given, else the one its extension names."""
    if requested:
        if requested not in FORMATS:
            raise ImportFileError(
                _("Unknown format %(format)r. Use %(formats)s.") % {"format": requested, "formats": ", ".join(FORMATS)}
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
    positions do not raise: they are counted, and the first ones are kept as
    messages naming the feature or line.
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
                parsed = _read_csv(binary)
    except FileNotFoundError:
        raise ImportFileError(_("File %(path)s does not exist.") % {"path": path}) from None
    except IsADirectoryError:
        raise ImportFileError(_("%(path)s is a folder, not a file.") % {"path": path}) from None
    except PermissionError:
        raise ImportFileError(_("File %(path)s cannot be read: permission denied.") % {"path": path}) from None
    if not parsed.error_count and not len(parsed):
        raise ImportFileError(_("File %(path)s contains no points.") % {"path": path})
    return parsed


def _read_csv(binary: IO[bytes]) -> ParsedPoints:
    # Only the coordinate columns are used and they are ASCII, so text in
    # another encoding elsewhere in a row does no harm.
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")
    try:
        return collect_positions(iter_csv_positions(text))
    finally:
        text.detach()


def _is_blank(binary: IO[bytes]) -> bool:
    """Return whether a file holds only whitespace and a byte-order mark, leaving it at the start."""
    blank = True
    while chunk := binary.read(64 * 1024):
        if chunk.strip(BLANK_BYTES):
            blank = False
            break
    binary.seek(0)
    return blank
