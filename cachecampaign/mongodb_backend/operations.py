"""Read conversions for documents that lack fields the model declares."""

from __future__ import annotations

from typing import Any, Callable

from django.db.models.expressions import Col
from django_mongodb_backend.operations import DatabaseOperations as MongoDatabaseOperations


class DatabaseOperations(MongoDatabaseOperations):
    def get_db_converters(self, expression) -> list[Callable[..., Any]]:
        """Read a missing or null value of a non-nullable field with a default as that default.

        TVI creates campaigns without the progress fields this service adds
        (``caching_in_progress``, ``total_points`` ...) and without
        ``imageType``. A relational table would hold the column default
        there, so reading the default keeps both backends alike.
        """
        converters = super().get_db_converters(expression)
        field = expression.target if isinstance(expression, Col) else None
        if field is None or field.null or not field.has_default():
            return converters

        def default_when_missing(value, expression, connection):
            return field.get_default() if value is None else value

        return [default_when_missing, *converters]
