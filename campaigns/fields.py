"""Model fields for the shapes TVI documents have in the wild."""

from __future__ import annotations

from django.db import models


class LegacyIntegerField(models.IntegerField):
    """An integer that older TVI documents store as a double such as ``2000.0``.

    Reading converts an integral double to ``int``; a double with a fraction
    is kept as it is so that a wrong value is visible instead of truncated.
    """

    def from_db_value(self, value, expression, connection):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    def to_python(self, value):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return super().to_python(value)
