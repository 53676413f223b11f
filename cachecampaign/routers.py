"""Database router that keeps the domain collections on their own alias.

``Campaign`` and ``Point`` go to the ``campaigns`` alias when it names a
database of its own (TVI's MongoDB, or CAMPAIGNS_DATABASE_URL). When that
alias is the same database as ``default``, they use ``default``'s connection:
two connections of one process to one SQLite file would contend for its
write lock, and a transaction on one would block writes on the other.
"""

from __future__ import annotations

from django.conf import settings

CAMPAIGNS_ALIAS = "campaigns"
DOMAIN_APPS = {"campaigns"}
# Models of the domain app that belong with Django's tables, not with TVI's
# collections (run bookkeeping the TVI front end never reads).
RELATIONAL_MODELS = {"cachingrun", "runpoint"}


def shares_default_database() -> bool:
    """Return True when the campaigns alias is the same database as default."""
    default = settings.DATABASES["default"]
    campaigns = settings.DATABASES[CAMPAIGNS_ALIAS]
    if campaigns.get("TEST", {}).get("MIRROR") == "default":
        return True
    keys = ("ENGINE", "NAME", "HOST", "PORT")
    return all(default.get(key) == campaigns.get(key) for key in keys)


def domain_alias() -> str:
    return "default" if shares_default_database() else CAMPAIGNS_ALIAS


def is_domain_model(app_label: str, model_name: str | None) -> bool:
    # makemigrations passes the class name ("CachingRun"), migrate the lower-case model_name.
    return app_label in DOMAIN_APPS and model_name is not None and model_name.lower() not in RELATIONAL_MODELS


def alias_for_model(model) -> str:
    meta = model._meta
    return domain_alias() if is_domain_model(meta.app_label, meta.model_name) else "default"


class CampaignRouter:
    def db_for_read(self, model, **hints):
        return alias_for_model(model)

    def db_for_write(self, model, **hints):
        return alias_for_model(model)

    def allow_relation(self, obj1, obj2, **hints):
        return alias_for_model(type(obj1)) == alias_for_model(type(obj2))

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if is_domain_model(app_label, model_name):
            return db == domain_alias()
        if db == CAMPAIGNS_ALIAS and not shares_default_database():
            # TVI's database holds only the two domain collections.
            return False
        return db == "default"
