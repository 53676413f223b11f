"""Read campaign points from GeoJSON and CSV files, validate them and store them.

Reading is pure: ``read_points`` streams a file and returns the valid
coordinates in two float arrays plus the first errors and their total count,
so a 100,000-point file never becomes 100,000 Python objects. ``save_points``
then inserts them as TVI points, and it is the only part that touches the database.
"""

from campaigns.importers.coordinates import CoordinateError, parse_coordinate, validate_position
from campaigns.importers.csvfile import find_coordinate_columns, iter_csv_positions
from campaigns.importers.files import CSV, FORMATS, GEOJSON, detect_format, read_points
from campaigns.importers.geojson import iter_geojson_positions
from campaigns.importers.records import (
    MAX_REPORTED_ERRORS,
    ImportFileError,
    Location,
    ParsedPoints,
    RawPosition,
    RecordError,
    collect_positions,
)
from campaigns.importers.saving import SaveResult, coordinate_key, point_id, point_index, save_points

__all__ = [
    "CSV",
    "FORMATS",
    "GEOJSON",
    "MAX_REPORTED_ERRORS",
    "CoordinateError",
    "ImportFileError",
    "Location",
    "ParsedPoints",
    "RawPosition",
    "RecordError",
    "SaveResult",
    "collect_positions",
    "coordinate_key",
    "detect_format",
    "find_coordinate_columns",
    "iter_csv_positions",
    "iter_geojson_positions",
    "parse_coordinate",
    "point_id",
    "point_index",
    "read_points",
    "save_points",
    "validate_position",
]
