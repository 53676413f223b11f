"""Collection listing that reports an unreachable server the way Django expects."""

from __future__ import annotations

from django.db import OperationalError
from django_mongodb_backend.introspection import DatabaseIntrospection as MongoDatabaseIntrospection
from pymongo.errors import ConnectionFailure


class DatabaseIntrospection(MongoDatabaseIntrospection):
    def table_names(self, cursor=None, include_views=False) -> list[str]:
        # makemigrations checks the migration history of every database and
        # skips one that raises OperationalError, as SQL drivers do when they
        # cannot connect. pymongo raises ConnectionFailure instead.
        try:
            return super().table_names(cursor, include_views)
        except ConnectionFailure as error:
            # The message leaves out HOST: a connection string may contain a password.
            raise OperationalError(
                f"Cannot reach the MongoDB server of database alias {self.connection.alias!r}: {error}. "
                "Check MONGODB_URI and that the server is running."
            ) from error
