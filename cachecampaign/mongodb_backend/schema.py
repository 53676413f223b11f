"""Migrations that build TVI's collections and indexes without touching its documents.

django-mongodb-backend's schema editor treats the database as the
application's own: it creates collections (failing when they exist), writes
a new field's default into every document, unsets a removed field from every
document and drops the collection of a deleted model. TVI's database already
contains ``campaign`` and ``points`` with inspection data, so this editor:

- creates a collection only when it is missing, then adds the model's indexes;
- accepts an index whose keys TVI or an administrator already indexed under
  another name;
- adds and removes fields as indexes only: a document without a field reads
  as the field's default (see ``operations.py``);
- never drops a collection: ``delete_model`` raises ``NotSupportedError``.
"""

from __future__ import annotations

import logging

from django.db import NotSupportedError
from django_mongodb_backend.schema import DatabaseSchemaEditor as MongoDatabaseSchemaEditor
from pymongo.errors import OperationFailure

logger = logging.getLogger(__name__)

# MongoDB error code of createIndexes when an index with the same keys and
# options exists under another name.
INDEX_OPTIONS_CONFLICT = 85


class DatabaseSchemaEditor(MongoDatabaseSchemaEditor):
    def create_model(self, model) -> None:
        name = model._meta.db_table
        if self.collect_sql or name not in self.connection.introspection.table_names():
            super().create_model(model)
            return
        logger.info("Collection %s already exists; adding only the indexes of model %s", name, model._meta.label)
        self._create_model_indexes(model)

    def add_index(self, model, index, *, field=None, unique=False, column_prefix="", parent_model=None) -> None:
        try:
            super().add_index(
                model, index, field=field, unique=unique, column_prefix=column_prefix, parent_model=parent_model
            )
        except OperationFailure as error:
            if error.code != INDEX_OPTIONS_CONFLICT:
                raise
            logger.warning(
                "Index %s of collection %s not created: an index with the same keys exists under another name (%s)",
                index.name, (parent_model or model)._meta.db_table, error.details.get("errmsg") if error.details else error,
            )

    def add_field(self, model, field) -> None:
        if field.many_to_many:
            super().add_field(model, field)
            return
        # No backfill of the default: documents keep the fields they have.
        if self._field_should_be_indexed(model, field):
            self._add_field_index(model, field)
        elif self._field_should_have_unique(field):
            self._add_field_unique(model, field)

    def remove_field(self, model, field) -> None:
        if field.many_to_many:
            super().remove_field(model, field)
            return
        # The documents keep the field's values, which TVI may still read.
        if self._field_should_be_indexed(model, field):
            self._remove_field_index(model, field)
        elif self._field_should_have_unique(field):
            self._remove_field_unique(model, field)

    def delete_model(self, model) -> None:
        raise NotSupportedError(
            f"Dropping collection {model._meta.db_table!r} of model {model._meta.label} is not supported: TVI owns "
            "its documents. Drop it with the mongo shell if it really must go."
        )
