"""A small evaluator of MongoDB query filters, enough for the filters the service sends.

It returns whether a document matches a ``$match`` filter, so tests can
check what a compiled filter selects (a point without ``cached`` must count
as not cached) instead of comparing its exact shape, which changes between
django-mongodb-backend releases. Supported: field equality, ``$eq``,
``$ne``, ``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``,
``$exists``, ``$regex`` with ``$options``, ``$and``, ``$or`` and ``$nor``. Anything else raises, so a new
operator is noticed instead of silently mismatched.
"""

from __future__ import annotations

import re
from typing import Any

MISSING = object()


def matches(document: dict[str, Any], query: dict[str, Any]) -> bool:
    """Return whether ``document`` matches the query filter ``query``."""
    for key, condition in query.items():
        if key == "$and":
            if not all(matches(document, part) for part in condition):
                return False
        elif key == "$or":
            if not any(matches(document, part) for part in condition):
                return False
        elif key == "$nor":
            if any(matches(document, part) for part in condition):
                return False
        elif key.startswith("$"):
            raise NotImplementedError(f"query operator {key} is not supported by tests/mql.py")
        elif not _field_matches(document.get(key, MISSING), condition):
            return False
    return True


def _field_matches(value: Any, condition: Any) -> bool:
    if isinstance(condition, dict) and condition and all(key.startswith("$") for key in condition):
        if "$regex" in condition:
            flags = re.IGNORECASE if "i" in condition.get("$options", "") else 0
            if not isinstance(value, str) or not re.search(condition["$regex"], value, flags):
                return False
            condition = {key: operand for key, operand in condition.items() if key not in ("$regex", "$options")}
        return all(_operator_matches(value, operator, operand) for operator, operand in condition.items())
    return _equals(value, condition)


def _equals(value: Any, operand: Any) -> bool:
    # As in MongoDB, {field: null} also matches a document without the field.
    if operand is None:
        return value is MISSING or value is None
    if value is MISSING:
        return False
    if isinstance(value, list) and not isinstance(operand, list):
        return operand in value
    if _is_number(value) and _is_number(operand):
        return value == operand
    return type(value) is type(operand) and value == operand


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _operator_matches(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return _equals(value, operand)
    if operator == "$ne":
        return not _equals(value, operand)
    if operator == "$in":
        return any(_equals(value, item) for item in operand)
    if operator == "$nin":
        return not any(_equals(value, item) for item in operand)
    if operator == "$exists":
        return (value is not MISSING) == bool(operand)
    if operator in ("$gt", "$gte", "$lt", "$lte"):
        if value is MISSING or value is None or operand is None:
            return False
        if operator == "$gt":
            return value > operand
        if operator == "$gte":
            return value >= operand
        if operator == "$lt":
            return value < operand
        return value <= operand
    raise NotImplementedError(f"query operator {operator} is not supported by tests/mql.py")


def match_stage(pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the filter of a pipeline's ``$match`` stages, combined; ``{}`` when it has none."""
    filters = [stage["$match"] for stage in pipeline if "$match" in stage]
    if not filters:
        return {}
    return filters[0] if len(filters) == 1 else {"$and": filters}


def stages(pipeline: list[dict[str, Any]]) -> list[str]:
    """Return the stage names of a pipeline, such as ``["$match", "$project"]``."""
    return [next(iter(stage)) for stage in pipeline]


def contains_key(value: Any, key: str) -> bool:
    """Return whether ``key`` appears as a dict key anywhere inside ``value``."""
    if isinstance(value, dict):
        return key in value or any(contains_key(item, key) for item in value.values())
    if isinstance(value, list):
        return any(contains_key(item, key) for item in value)
    return False
