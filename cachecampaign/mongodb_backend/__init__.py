"""Database backend for TVI's MongoDB: django-mongodb-backend with TVI's data protected.

Set ``ENGINE`` to ``cachecampaign.mongodb_backend``. It differs from
``django_mongodb_backend`` in three ways, each because TVI owns the
``campaign`` and ``points`` documents and this service only shares them:

- migrations never rewrite or drop documents (``schema.py``);
- a field the model declares but a document lacks reads as the field's
  default when the field is not nullable (``operations.py``);
- an unreachable server raises ``OperationalError``, as Django expects of a
  backend, so ``makemigrations`` can warn and go on (``introspection.py``).
"""
