"""TVI dumps: ``campaign`` and ``points`` documents in MongoDB Extended JSON, one per line.

``mongoexport`` writes this format (relaxed mode by default, canonical with
``--jsonFormat canonical``); ``bson.json_util`` reads and writes both. A
dump loads into whichever database stores the campaigns:

- on MongoDB each document is written as it is, replacing the document with
  the same ``_id``, so every field and BSON type survives;
- on a relational database the fields the model declares fill its columns
  and the others go to the ``_extra`` JSON column, encoded as relaxed
  Extended JSON. Under ``SHAPE_KEY``, ``_extra`` also records the declared
  fields the document lacked or held null in a non-null column, and the
  numbers of the other kind (a double in an integer column). An export then
  writes the document back with the same fields and values.

Loading is idempotent: a document whose ``_id`` exists replaces it.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from bson import json_util
from bson.errors import BSONError
from bson.json_util import JSONMode, JSONOptions
from django.db import connections, models, transaction
from django.utils.translation import gettext as _
from pymongo import ReplaceOne

from campaigns.importers.coordinates import CoordinateError, validate_position
from campaigns.managers import RELATIONAL_ONLY_FIELDS, is_mongodb
from campaigns.models import Campaign, Point

CAMPAIGN_FILE = "campaign.json"
POINTS_FILE = "points.json"
DEFAULT_CHUNK_SIZE = 1000
MAX_REPORTED_ERRORS = 20
# Key of ``_extra`` that records how a document differs from its row. TVI's
# field names never start with ``$``, the prefix of MongoDB operators, so the
# key does not collide with one of them.
SHAPE_KEY = "$shape"

READ_OPTIONS = JSONOptions(tz_aware=True, tzinfo=datetime.timezone.utc)
RELAXED_OPTIONS = JSONOptions(json_mode=JSONMode.RELAXED, tz_aware=True, tzinfo=datetime.timezone.utc)
CANONICAL_OPTIONS = JSONOptions(json_mode=JSONMode.CANONICAL, tz_aware=True, tzinfo=datetime.timezone.utc)
JSON_MODES = {"relaxed": RELAXED_OPTIONS, "canonical": CANONICAL_OPTIONS}

# Numeric kinds recorded in the shape when a document's number is not of the column's kind.
DOUBLE = "double"
INT = "int"

# Columns the caching service always writes together: the progress fields
# of a run (set when it starts) and the cache fields of a point (set when it
# is marked cached or not cached). Once one of them changes after a load,
# the export writes the whole group, as the documents on MongoDB then have it.
WRITE_GROUPS: dict[str, frozenset[str]] = {
    "campaign": frozenset(
        {
            "caching_in_progress", "caching_started_at", "total_points", "points_to_cache", "cached_points",
            "cache_percentage", "last_point_cached_at", "caching_completed_at", "all_points_cached",
            "caching_error", "caching_error_at",
        }
    ),
    "points": frozenset({"cached", "cachedAt", "cachedBy", "enhance_in_cache"}),
}


class DumpError(ValueError):
    """A dump file that cannot be read or a document that does not fit the model."""


@dataclass(frozen=True)
class DumpKind:
    """One collection of a dump: its model and the file name mongoexport users give it."""

    model: type[models.Model]
    file_name: str

    @property
    def collection(self) -> str:
        return self.model._meta.db_table


CAMPAIGNS = DumpKind(Campaign, CAMPAIGN_FILE)
POINTS = DumpKind(Point, POINTS_FILE)


@dataclass
class DumpCheck:
    """Result of a validation pass over a dump file."""

    documents: int = 0
    error_count: int = 0
    errors: list[str] = field(default_factory=list)

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(message)


@dataclass
class LoadResult:
    created: int = 0
    replaced: int = 0

    @property
    def total(self) -> int:
        return self.created + self.replaced


# --- Reading ---------------------------------------------------------------


def iter_dump(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, document)`` for each non-blank line of a dump file.

    Raises ``DumpError`` naming the file and line for text that is not one
    Extended JSON object, and for a file written with ``--jsonArray``.
    """
    try:
        handle = path.open(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DumpError(_("File %(path)s does not exist.") % {"path": path}) from None
    except IsADirectoryError:
        raise DumpError(_("%(path)s is a folder, not a file.") % {"path": path}) from None
    except PermissionError:
        raise DumpError(_("File %(path)s cannot be read: permission denied.") % {"path": path}) from None
    with handle:
        try:
            yield from _parse_lines(path, handle)
        except UnicodeDecodeError as error:
            raise DumpError(
                _("File %(path)s is not UTF-8 text (%(error)s); mongoexport writes UTF-8.")
                % {"path": path, "error": error}
            ) from None


def _parse_lines(path: Path, handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(handle, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("["):
            raise DumpError(
                _(
                    "%(path)s line %(number)d starts a JSON array; export with mongoexport without --jsonArray "
                    "so that each line holds one document."
                )
                % {"path": path, "number": number}
            )
        try:
            document = json_util.loads(text, json_options=READ_OPTIONS)
        except (ValueError, TypeError, BSONError) as error:
            raise DumpError(
                _("%(path)s line %(number)d is not valid MongoDB Extended JSON: %(error)s")
                % {"path": path, "number": number, "error": error}
            ) from None
        if not isinstance(document, dict):
            raise DumpError(
                _("%(path)s line %(number)d is not a JSON object but %(value)s.")
                % {"path": path, "number": number, "value": _shorten(text)}
            )
        yield number, document


def check_dump(path: Path, kind: DumpKind) -> DumpCheck:
    """Read a whole dump file and validate every document without writing anything."""
    check = DumpCheck()
    try:
        for number, document in iter_dump(path):
            check.documents += 1
            try:
                document_to_row(kind, document)
            except DumpError as error:
                check.add_error(
                    _("%(path)s line %(number)d: %(error)s") % {"path": path, "number": number, "error": error}
                )
    except DumpError as error:
        # Reading stops at a line that is not JSON: where the next document starts is unknown.
        check.add_error(str(error))
        return check
    if not check.documents:
        check.add_error(_("File %(path)s contains no documents.") % {"path": path})
    return check


def count_lines(path: Path) -> int:
    """Count the non-blank lines of a file, for a progress bar's total."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


# --- Documents and rows ----------------------------------------------------


def _shorten(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind_of(model_field: models.Field) -> str:
    target = model_field.target_field if model_field.is_relation else model_field
    return target.get_internal_type()


def _check_value(model_field: models.Field, value: Any) -> tuple[Any, str | None]:
    """Return the value a column stores for a document's value, and the numeric kind to record if it changed.

    Raises ``DumpError`` for a value the column cannot store unchanged.
    """
    internal = _kind_of(model_field)
    column = model_field.column
    if internal in ("CharField", "TextField"):
        if isinstance(value, str):
            if model_field.max_length and len(value) > model_field.max_length:
                raise DumpError(
                    _("%(column)s is %(length)d characters long; the maximum is %(max)d.")
                    % {"column": column, "length": len(value), "max": model_field.max_length}
                )
            return value, None
    elif internal == "BooleanField":
        if isinstance(value, bool):
            return value, None
    elif internal in ("IntegerField", "BigIntegerField", "PositiveIntegerField"):
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value), None
        if isinstance(value, float) and value.is_integer():
            return int(value), DOUBLE
    elif internal == "FloatField":
        if isinstance(value, float):
            return value, None
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value), INT
    elif internal == "DateTimeField":
        if isinstance(value, datetime.datetime):
            return value, None
    elif internal == "JSONField":
        return to_json_value(value), None
    else:
        raise DumpError(_("%(column)s has a type the dump loader does not handle.") % {"column": column})
    raise DumpError(
        _("%(column)s is %(value)s (%(type)s), which does not fit a %(kind)s column; fix the document.")
        % {"column": column, "value": _shorten(value), "type": type(value).__name__, "kind": internal}
    )


def to_json_value(value: Any) -> Any:
    """Encode a BSON value as relaxed Extended JSON that a JSON column stores, e.g. a date as ``{"$date": ...}``."""
    return json.loads(json_util.dumps(value, json_options=RELAXED_OPTIONS))


def document_fields(kind: DumpKind) -> list[models.Field]:
    """Return the model's fields that map onto document fields, primary key first."""
    return [
        model_field
        for model_field in kind.model._meta.concrete_fields
        if model_field.name not in RELATIONAL_ONLY_FIELDS
    ]


def document_to_row(kind: DumpKind, document: dict[str, Any]) -> dict[str, Any]:
    """Return the model's field values (by attribute name) for a document, ``extra_fields`` included.

    Raises ``DumpError`` when the document has no string ``_id``, lacks a
    field the model requires, contains a value its column cannot store, or is a
    point with invalid coordinates.
    """
    identifier = document.get("_id")
    if not isinstance(identifier, str) or not identifier:
        raise DumpError(
            _("_id is %(value)s; TVI documents have a non-empty string _id such as 10_teste.")
            % {"value": _shorten(identifier)}
        )
    values: dict[str, Any] = {}
    missing: list[str] = []
    nulls: list[str] = []
    numbers: dict[str, str] = {}
    for model_field in document_fields(kind):
        column = model_field.column
        present = column in document
        if not present or document[column] is None:
            if model_field.null:
                # The column stores a null itself; only its absence needs recording.
                values[model_field.attname] = None
                if not present:
                    missing.append(column)
                continue
            if not model_field.has_default():
                raise DumpError(_("%(id)s has no %(column)s value.") % {"id": identifier, "column": column})
            values[model_field.attname] = model_field.get_default()
            (nulls if present else missing).append(column)
            continue
        try:
            value, number_kind = _check_value(model_field, document[column])
        except DumpError as error:
            raise DumpError(_("%(id)s: %(error)s") % {"id": identifier, "error": error}) from None
        values[model_field.attname] = value
        if number_kind:
            numbers[column] = number_kind
    if kind is POINTS:
        try:
            validate_position(values["lon"], values["lat"])
        except CoordinateError as error:
            raise DumpError(_("%(id)s: %(error)s") % {"id": identifier, "error": error}) from None

    declared = {model_field.column for model_field in document_fields(kind)}
    extra = {key: to_json_value(value) for key, value in document.items() if key not in declared}
    group = WRITE_GROUPS.get(kind.collection, frozenset())
    loaded = {column: to_json_value(document[column]) for column in sorted(group) if column in document}
    shape = _shape(missing, nulls, numbers, loaded)
    if shape:
        extra[SHAPE_KEY] = shape
    values["extra_fields"] = extra
    return values


def _shape(
    missing: list[str], nulls: list[str], numbers: dict[str, str], loaded: dict[str, Any]
) -> dict[str, Any]:
    shape: dict[str, Any] = {}
    if missing:
        shape["missing"] = missing
    if nulls:
        shape["null"] = nulls
    if numbers:
        shape["numbers"] = numbers
    if loaded:
        # Values of write-group columns the document had, to tell later whether the service rewrote the group.
        shape["loaded"] = loaded
    return shape


def _placeholder(model_field: models.Field) -> Any:
    """Return what a load stores in a column for a document without the field."""
    return None if model_field.null else model_field.get_default()


def _group_rewritten(kind: DumpKind, instance: models.Model, shape: dict[str, Any]) -> bool:
    """Return whether a write-group column of the row differs from what the load stored there."""
    group = WRITE_GROUPS.get(kind.collection, frozenset())
    loaded = shape.get("loaded", {})
    for model_field in document_fields(kind):
        column = model_field.column
        if column not in group:
            continue
        value = getattr(instance, model_field.attname)
        if column in loaded:
            if to_json_value(value) != loaded[column]:
                return True
        elif value != _placeholder(model_field):
            return True
    return False



def row_to_document(kind: DumpKind, instance: models.Model) -> dict[str, Any]:
    """Rebuild the TVI document of a row: declared fields, then the fields kept in ``_extra``.

    A field the loaded document lacked stays out while its column contains the
    value the load put there, unless the service has since rewritten the
    field's write group (``WRITE_GROUPS``).
    """
    extra = dict(instance.extra_fields or {})
    shape = extra.pop(SHAPE_KEY, {})
    missing = set(shape.get("missing", ()))
    nulls = set(shape.get("null", ()))
    numbers = shape.get("numbers", {})
    rewritten = WRITE_GROUPS.get(kind.collection, frozenset()) if _group_rewritten(kind, instance, shape) else ()
    document: dict[str, Any] = {}
    for model_field in document_fields(kind):
        column = model_field.column
        value = getattr(instance, model_field.attname)
        as_loaded = value == _placeholder(model_field) and column not in rewritten
        if column in missing and as_loaded:
            continue
        if column in nulls and as_loaded:
            document[column] = None
            continue
        if numbers.get(column) == DOUBLE and isinstance(value, int):
            value = float(value)
        elif numbers.get(column) == INT and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif _kind_of(model_field) == "JSONField":
            value = from_json_value(value)
        document[column] = value
    for key, value in extra.items():
        document[key] = from_json_value(value)
    return document


def from_json_value(value: Any) -> Any:
    """Decode a value stored by ``to_json_value`` back into BSON values (dates, ObjectIds, Int64 ...)."""
    return json_util.loads(json.dumps(value), json_options=READ_OPTIONS)


# --- Loading ---------------------------------------------------------------


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def load_dump(
    path: Path,
    kind: DumpKind,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Write every document of a dump file into the database of its model, replacing same-``_id`` ones.

    The file must have passed ``check_dump``. Each chunk is written in one
    request (MongoDB) or one transaction (relational); an interrupted load
    leaves whole chunks, and loading the file again completes it.
    """
    alias = kind.model.objects.db
    result = LoadResult()
    documents = (document for _number, document in iter_dump(path))
    for chunk in _chunks(documents, chunk_size):
        if is_mongodb(alias):
            created, replaced = _write_documents(alias, kind, chunk)
        else:
            created, replaced = _write_rows(alias, kind, chunk)
        result.created += created
        result.replaced += replaced
        if on_progress is not None:
            on_progress(len(chunk))
    return result


def _write_documents(alias: str, kind: DumpKind, documents: list[dict[str, Any]]) -> tuple[int, int]:
    collection = connections[alias].get_collection(kind.collection)
    # A dump may hold one _id twice; the later document wins.
    latest = {document["_id"]: document for document in documents}
    requests = [ReplaceOne({"_id": identifier}, document, upsert=True) for identifier, document in latest.items()]
    outcome = collection.bulk_write(requests, ordered=False)
    return outcome.upserted_count, outcome.matched_count


def _write_rows(alias: str, kind: DumpKind, documents: list[dict[str, Any]]) -> tuple[int, int]:
    model = kind.model
    # A dump may hold one _id twice; the later document wins, as on MongoDB.
    rows = {document["_id"]: document_to_row(kind, document) for document in documents}
    update_fields = [model_field.name for model_field in model._meta.concrete_fields if not model_field.primary_key]
    with transaction.atomic(using=alias):
        existing = set(model.objects.using(alias).filter(pk__in=list(rows)).values_list("pk", flat=True))
        model.objects.using(alias).bulk_create(
            [model(**values) for values in rows.values()],
            update_conflicts=True,
            unique_fields=["pk"],
            update_fields=update_fields,
        )
    replaced = len(existing)
    return len(rows) - replaced, replaced


# --- Exporting -------------------------------------------------------------


def export_documents(
    kind: DumpKind, *, campaign_ids: list[str] | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[dict[str, Any]]:
    """Yield the documents of a collection in ``_id`` order, streaming; optionally only those of some campaigns."""
    alias = kind.model.objects.db
    if is_mongodb(alias):
        collection = connections[alias].get_collection(kind.collection)
        query: dict[str, Any] = {}
        if campaign_ids is not None:
            key = "_id" if kind is CAMPAIGNS else Point._meta.get_field("campaign").column
            query = {key: {"$in": campaign_ids}}
        yield from collection.find(query, sort=[("_id", 1)], batch_size=chunk_size)
        return
    rows = kind.model.objects.using(alias).order_by("pk")
    if campaign_ids is not None:
        rows = rows.filter(pk__in=campaign_ids) if kind is CAMPAIGNS else rows.filter(campaign_id__in=campaign_ids)
    for instance in rows.iterator(chunk_size=chunk_size):
        yield row_to_document(kind, instance)


def dumps_document(document: dict[str, Any], json_mode: str = "relaxed") -> str:
    """Return one document as a line of Extended JSON, without the newline."""
    return json_util.dumps(document, json_options=JSON_MODES[json_mode], ensure_ascii=False)
