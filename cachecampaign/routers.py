"""Database router that keeps the domain collections on their own alias."""

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


def alias_for_model(model) -> str:
    meta = model._meta
    if meta.app_label in DOMAIN_APPS and meta.model_name not in RELATIONAL_MODELS:
        return CAMPAIGNS_ALIAS
    return "default"


class CampaignRouter:
    def db_for_read(self, model, **hints):
        return alias_for_model(model)

    def db_for_write(self, model, **hints):
        return alias_for_model(model)

    def allow_relation(self, obj1, obj2, **hints):
        return alias_for_model(type(obj1)) == alias_for_model(type(obj2))

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label in DOMAIN_APPS and model_name is not None and model_name not in RELATIONAL_MODELS:
            target = CAMPAIGNS_ALIAS
        else:
            target = "default"
        if target == CAMPAIGNS_ALIAS and shares_default_database():
            # Both aliases are one database with one django_migrations table:
            # the tables are created by ``migrate`` on default, or a migration
            # recorded there would never run on the campaigns alias.
            return db == "default"
        return db == target
