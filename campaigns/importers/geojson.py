"""Streaming reader of the Point and MultiPoint positions of a GeoJSON file."""

from __future__ import annotations

import re
from typing import IO, Any, Iterator

import ijson
from django.utils.translation import gettext as _

from campaigns.importers.coordinates import display_value
from campaigns.importers.records import FEATURE, ImportFileError, Location, RawPosition, RecordError, shorten

BYTE_ORDER_MARK = b"\xef\xbb\xbf"
SINGLE_OBJECT_TYPES = ("Feature", "Point", "MultiPoint")
# Marks a top-level "type" member that is absent or not a string.
NO_TYPE = object()


def iter_geojson_positions(binary: IO[bytes]) -> Iterator[RawPosition | RecordError]:
    """Yield the positions of a GeoJSON FeatureCollection, Feature, Point or MultiPoint.

    ``binary`` must be seekable: a first pass reads the top-level ``type``
    member, which JSON allows after ``features``. A FeatureCollection's features
    are then parsed one at a time by ijson's C backend, so memory stays flat
    whatever the file size. Features are numbered from 1, and a lone Feature
    or geometry is feature 1. Each position of a MultiPoint is yielded on its own.
    """
    kind, features_event = _read_top_level(binary)
    if kind == "FeatureCollection":
        if features_event is None:
            raise ImportFileError(_("The GeoJSON FeatureCollection has no features member."))
        if features_event != "start_array":
            raise ImportFileError(_("The features member of the GeoJSON FeatureCollection must be an array."))
        yield from _stream_features(binary)
    elif kind in SINGLE_OBJECT_TYPES:
        document = _single_object(binary)
        if kind == "Feature":
            yield from feature_positions(document, 1)
        else:
            yield from geometry_positions(document, 1)
    elif kind is NO_TYPE:
        raise ImportFileError(
            _("The GeoJSON object has no type. Give it type FeatureCollection, Feature, Point or MultiPoint.")
        )
    else:
        raise ImportFileError(
            _(
                "GeoJSON type %(type)s cannot be imported. Use a FeatureCollection, a Feature, "
                "a Point or a MultiPoint."
            )
            % {"type": display_value(kind)}
        )


def feature_positions(feature: object, number: int) -> Iterator[RawPosition | RecordError]:
    location = Location(FEATURE, number)
    if not isinstance(feature, dict):
        yield RecordError(
            location, _("a feature must be a JSON object, found %(value)s.") % {"value": shorten(feature)}
        )
        return
    if "geometry" not in feature:
        yield RecordError(location, _("the feature has no geometry member."))
        return
    yield from geometry_positions(feature["geometry"], number)


def geometry_positions(geometry: object, number: int) -> Iterator[RawPosition | RecordError]:
    location = Location(FEATURE, number)
    if geometry is None:
        yield RecordError(location, _("the geometry is null."))
        return
    if not isinstance(geometry, dict):
        yield RecordError(
            location, _("the geometry must be a JSON object, found %(value)s.") % {"value": shorten(geometry)}
        )
        return
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    if kind == "Point":
        yield _position(location, coordinates)
    elif kind == "MultiPoint":
        if not isinstance(coordinates, list) or not coordinates:
            yield RecordError(
                location,
                _("the MultiPoint has no positions (coordinates %(value)s).") % {"value": shorten(coordinates)},
            )
            return
        for member, position in enumerate(coordinates, start=1):
            yield _position(Location(FEATURE, number, member), position)
    else:
        yield RecordError(
            location,
            _("geometry type %(type)s cannot be imported. Use Point or MultiPoint.") % {"type": display_value(kind)},
        )


def _position(location: Location, coordinates: object) -> RawPosition | RecordError:
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        return RecordError(
            location,
            _("coordinates must be [longitude, latitude], found %(value)s.") % {"value": shorten(coordinates)},
        )
    # A third value (altitude) is allowed by GeoJSON and ignored.
    return RawPosition(location, coordinates[0], coordinates[1])


def _rewind(binary: IO[bytes]) -> None:
    binary.seek(0)
    if binary.read(len(BYTE_ORDER_MARK)) != BYTE_ORDER_MARK:
        binary.seek(0)


def _read_top_level(binary: IO[bytes]) -> tuple[object, str | None]:
    """Return the top-level ``type`` value (NO_TYPE if absent or not text) and the first event of ``features``.

    Stops as soon as both are known, so files that put ``type`` and
    ``features`` first are parsed here only up to the start of the array.
    """
    _rewind(binary)
    kind: object = NO_TYPE
    type_seen = False
    features_event: str | None = None
    try:
        for prefix, event, value in ijson.parse(binary):
            if prefix == "":
                if event == "start_map" or event == "map_key":
                    continue
                if event == "end_map":
                    break
                raise ImportFileError(
                    _("A GeoJSON file must contain one JSON object: a FeatureCollection, a Feature or a geometry.")
                )
            if prefix == "type" and not type_seen:
                type_seen = True
                kind = value if event == "string" else NO_TYPE
            elif prefix == "features" and features_event is None:
                features_event = event
            if type_seen and (kind != "FeatureCollection" or features_event is not None):
                break
    except ijson.JSONError as error:
        raise _syntax_error(error, None) from None
    return kind, features_event


def _stream_features(binary: IO[bytes]) -> Iterator[RawPosition | RecordError]:
    _rewind(binary)
    number = 0
    try:
        for feature in ijson.items(binary, "features.item", use_float=True):
            number += 1
            yield from feature_positions(feature, number)
    except ijson.JSONError as error:
        # ijson (checked with 3.6 and its C backend) yields every complete
        # feature before it raises, so the error lies in the next feature or
        # after the end of the array.
        raise _syntax_error(error, number + 1) from None


def _single_object(binary: IO[bytes]) -> Any:
    _rewind(binary)
    try:
        # list() reads to the end of the file, so ijson reports any content after the object.
        return list(ijson.items(binary, "", use_float=True))[0]
    except ijson.JSONError as error:
        raise _syntax_error(error, 1) from None


def _syntax_error(error: Exception, feature_number: int | None) -> ImportFileError:
    """Turn an ijson error into a message naming the feature and quoting the text near the error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = lines[0] if lines else type(error).__name__
    # yajl's message continues with the text around the error.
    if len(lines) > 1 and not lines[1].startswith("(right here)"):
        detail = _("%(detail)s near %(text)s") % {"detail": detail, "text": lines[1]}
    if re.search(r"\b(nan|infinity|inf)\b", str(error), re.IGNORECASE):
        detail = "%s %s" % (detail, _("(NaN and Infinity are not valid JSON numbers.)"))
    if "premature EOF" in detail:
        if feature_number is None or feature_number <= 1:
            return ImportFileError(_("The file ends before its JSON is complete, so it looks truncated."))
        return ImportFileError(
            _("The file ends after feature %(count)d, before its JSON is complete, so it looks truncated.")
            % {"count": feature_number - 1}
        )
    if "trailing garbage" in detail:
        return ImportFileError(
            _("The GeoJSON file has more content after its JSON object: %(detail)s") % {"detail": detail}
        )
    if feature_number is None:
        return ImportFileError(_("The file is not valid JSON: %(detail)s") % {"detail": detail})
    return ImportFileError(
        _("Feature %(number)d is not valid JSON: %(detail)s") % {"number": feature_number, "detail": detail}
    )
