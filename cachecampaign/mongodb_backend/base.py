"""The database wrapper Django loads for ``ENGINE = "cachecampaign.mongodb_backend"``."""

from __future__ import annotations

from django_mongodb_backend.base import DatabaseWrapper as MongoDatabaseWrapper

from cachecampaign.mongodb_backend.introspection import DatabaseIntrospection
from cachecampaign.mongodb_backend.operations import DatabaseOperations
from cachecampaign.mongodb_backend.schema import DatabaseSchemaEditor


class DatabaseWrapper(MongoDatabaseWrapper):
    SchemaEditorClass = DatabaseSchemaEditor
    introspection_class = DatabaseIntrospection
    ops_class = DatabaseOperations
