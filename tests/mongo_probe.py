"""Run the service's MongoDB operations against recording collections and write what they sent.

Run as ``python -m tests.mongo_probe OUTPUT.json`` with MONGODB_URI and
MONGODB_NAME set; ``tests/test_mongodb_offline.py`` does so in a child
process, because settings choose the backend once per process.

The real django-mongodb-backend compiles every query. The boundary replaced
here is pymongo's ``Collection`` and ``Database``: each call (``aggregate``,
``update_many``, ``insert_many``, ``bulk_write``, ``find``,
``create_collection``, ``create_indexes`` ...) is recorded with its
arguments and returns canned documents, so no server is needed. What a
server would do with those commands is the one part this cannot check, and
the ``mongodb`` test tier covers it when a server is available.

The output maps each scenario name to its calls, in relaxed Extended JSON.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import tests.environment  # noqa: F401  # scratch folder and counting tile source, before Django starts

import django  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cachecampaign.settings")
django.setup()

from bson import json_util  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIRequestFactory, force_authenticate  # noqa: E402

from cachecampaign.routers import CAMPAIGNS_ALIAS  # noqa: E402
from campaigns.tvi_dump import RELAXED_OPTIONS  # noqa: E402
from tests.mql import match_stage, matches, stages  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DUMP_DIR = ROOT / "tests" / "data" / "tvi_dump"
CAMPAIGN_ID = "tvi_campaign"
POINT_IDS = [f"1_{CAMPAIGN_ID}", f"2_{CAMPAIGN_ID}"]

# A campaign as TVI creates it: no progress fields, no imageType, years as doubles.
TVI_CAMPAIGN = {
    "_id": CAMPAIGN_ID,
    "initialYear": 2020.0,
    "finalYear": 2020.0,
    "visParams": ["landsat-tvi-true"],
    "password": "",
    "landUse": ["Pastagem"],
}


def tvi_point(point_id: str, index: int) -> dict[str, Any]:
    return {"_id": point_id, "campaign": CAMPAIGN_ID, "lon": -54.5 + index * 0.01, "lat": -25.3, "index": index}


class Recorder:
    """Calls made to fake collections, grouped by the scenario running when they were made."""

    def __init__(self) -> None:
        self.scenarios: dict[str, list[dict[str, Any]]] = {}
        self.current = "setup"
        # The documents each collection holds; aggregate() and find() return
        # those their filter matches, and count pipelines ($facet) count them.
        self.documents: dict[str, list[dict[str, Any]]] = {}

    def record(self, collection: str, method: str, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("session", None)
        self.scenarios.setdefault(self.current, []).append(
            {"collection": collection, "method": method, "args": list(args), "kwargs": kwargs}
        )


class FakeCursor:
    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self._documents = iter(documents)

    def __iter__(self):
        return self._documents

    def next(self) -> dict[str, Any]:
        return next(self._documents)


class FakeCollection:
    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder = recorder
        self.name = name

    def _matching(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(document) for document in self.recorder.documents.get(self.name, []) if matches(document, query)]

    def aggregate(self, pipeline: list[dict[str, Any]], **kwargs: Any) -> FakeCursor:
        self.recorder.record(self.name, "aggregate", pipeline, **kwargs)
        found = self._matching(match_stage(pipeline))
        if "$facet" in stages(pipeline):
            return FakeCursor([{"__count": len(found)}])
        for stage in pipeline:
            if "$limit" in stage:
                found = found[: stage["$limit"]]
        return FakeCursor(found)

    def find(self, query: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> FakeCursor:
        self.recorder.record(self.name, "find", query, *args, **kwargs)
        return FakeCursor(self._matching(query or {}))

    def update_many(self, criteria: dict[str, Any], update: Any, **kwargs: Any) -> SimpleNamespace:
        self.recorder.record(self.name, "update_many", criteria, update, **kwargs)
        return SimpleNamespace(matched_count=1, modified_count=1)

    def insert_many(self, documents: list[dict[str, Any]], **kwargs: Any) -> SimpleNamespace:
        self.recorder.record(self.name, "insert_many", documents, **kwargs)
        return SimpleNamespace(inserted_ids=[document.get("_id") for document in documents])

    def bulk_write(self, requests: list[Any], **kwargs: Any) -> SimpleNamespace:
        written = [
            {"replaceOne": {"filter": request._filter, "replacement": request._doc, "upsert": request._upsert}}
            for request in requests
        ]
        self.recorder.record(self.name, "bulk_write", written, **kwargs)
        return SimpleNamespace(upserted_count=len(requests), matched_count=0)

    def create_indexes(self, indexes: list[Any], **kwargs: Any) -> list[str]:
        self.recorder.record(self.name, "create_indexes", [index.document for index in indexes], **kwargs)
        return [index.document["name"] for index in indexes]

    def __getattr__(self, method: str) -> Callable[..., SimpleNamespace]:
        def call(*args: Any, **kwargs: Any) -> SimpleNamespace:
            self.recorder.record(self.name, method, *args, **kwargs)
            return SimpleNamespace(matched_count=0, deleted_count=0, inserted_ids=[])

        return call


class FakeDatabase:
    """The few Database methods migrations use: listing and creating collections."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        # TVI's database as this service first meets it.
        self.collections = {"campaign", "points"}

    def list_collections(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return [{"name": name} for name in sorted(self.collections)]

    def list_collection_names(self, *args: Any, **kwargs: Any) -> list[str]:
        return sorted(self.collections)

    def create_collection(self, name: str, **kwargs: Any) -> FakeCollection:
        self.recorder.record(name, "create_collection", name, **kwargs)
        self.collections.add(name)
        return FakeCollection(self.recorder, name)

    def __getitem__(self, name: str) -> FakeCollection:
        return FakeCollection(self.recorder, name)


def install(recorder: Recorder) -> None:
    """Point the campaigns connection at fake collections; nothing reaches a server."""
    connection = connections[CAMPAIGNS_ALIAS]
    if connection.vendor != "mongodb":
        raise SystemExit("tests.mongo_probe needs MONGODB_URI and MONGODB_NAME set: the campaigns alias is not MongoDB.")
    # A non-None client makes ensure_connection() skip connect(), which would ask the server its version.
    connection.connection = SimpleNamespace()
    connection.database = FakeDatabase(recorder)
    connection.get_collection = lambda name, **kwargs: FakeCollection(recorder, name)


def scenario(recorder: Recorder, name: str, **documents: list[dict[str, Any]]) -> None:
    """Start recording calls under ``name``, with the given documents per collection (TVI's campaign by default)."""
    recorder.current = name
    recorder.documents = {"campaign": [TVI_CAMPAIGN], **documents}


def run_scenarios(recorder: Recorder) -> None:
    from campaigns import runs
    from campaigns.api.views import CampaignCacheViewSet
    from campaigns.caching import cache_point
    from campaigns.models import Campaign, Point
    from campaigns.progress import mark_point_cached

    points = [tvi_point(point_id, index) for index, point_id in enumerate(POINT_IDS, start=1)]
    now = timezone.now()

    scenario(recorder, "claim_start")
    Campaign.objects.claim_start(CAMPAIGN_ID, now)

    scenario(recorder, "add_cached_point")
    Campaign.objects.add_cached_point(CAMPAIGN_ID, now)

    scenario(recorder, "mark_cached")
    Point.objects.mark_cached(POINT_IDS[0], now, "celery-task")

    scenario(recorder, "mark_point_cached")
    mark_point_cached(POINT_IDS[0], CAMPAIGN_ID, "celery-task")

    scenario(recorder, "start_run", points=points)
    run = runs.start_run(CAMPAIGN_ID, batch_size=2, started_by="probe").run

    scenario(recorder, "dispatch", points=points)
    runs.dispatch(str(run.pk))

    for index, point in enumerate(points):
        scenario(recorder, f"cache_point_{index}", points=[point])
        result = cache_point(point["_id"], str(run.pk))
        scenario(recorder, f"point_finished_{index}", points=[point])
        runs.point_finished(str(run.pk), point["_id"], result)

    scenario(recorder, "status", points=points)
    request = APIRequestFactory().get(f"/api/cache/campaign/{CAMPAIGN_ID}/status")
    force_authenticate(request, user=User(username="probe", is_staff=True))
    response = CampaignCacheViewSet.as_view({"get": "status"})(request, campaign_id=CAMPAIGN_ID)
    if response.status_code != 200:
        raise SystemExit(f"status returned {response.status_code}: {response.data}")

    scenario(recorder, "start_for_cancel", points=points)
    runs.start_run(CAMPAIGN_ID, batch_size=2, started_by="probe")
    scenario(recorder, "cancel", points=points)
    runs.cancel_run(CAMPAIGN_ID)

    scenario(recorder, "save_loaded_campaign")
    campaign = Campaign.objects.get(pk=CAMPAIGN_ID)
    campaign.tile_preset = "seed"
    campaign.save()

    scenario(recorder, "save_update_fields")
    campaign.save(update_fields=["tile_preset"])

    scenario(recorder, "import_points", campaign=[], points=[])
    geojson = Path(os.environ["CACHECAMPAIGN_VAR_DIR"]) / "probe-points.geojson"
    geojson.write_text(
        '{"type": "FeatureCollection", "features": ['
        '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [-54.5, -25.3]}, "properties": {}}]}'
    )
    call_command("import_points", "nova", str(geojson), "--initial-year", "2020", "--final-year", "2020", verbosity=0)

    scenario(recorder, "load_tvi_dump")
    call_command("load_tvi_dump", str(DUMP_DIR / "campaign.json"), str(DUMP_DIR / "points.json"), verbosity=0)

    scenario(recorder, "export_tvi_dump", points=points)
    call_command("export_tvi_dump", str(Path(os.environ["CACHECAMPAIGN_VAR_DIR"]) / "export"), verbosity=0)
    scenario(recorder, "export_one_campaign", points=points)
    call_command(
        "export_tvi_dump", str(Path(os.environ["CACHECAMPAIGN_VAR_DIR"]) / "export-one"),
        "--campaign", CAMPAIGN_ID, verbosity=0,
    )

    scenario(recorder, "update_extra_fields")
    try:
        Point.objects.filter(pk=POINT_IDS[0]).update(extra_fields={"note": "x"})
    except ValueError as error:
        recorder.record("-", "raised", type(error).__name__, str(error))

    run_admin_changelists(recorder, points)

    scenario(recorder, "migrate")
    call_command("migrate", database=CAMPAIGNS_ALIAS, verbosity=0)

    scenario(recorder, "migrate_empty_database")
    database = connections[CAMPAIGNS_ALIAS].database
    database.collections = set()
    call_command("migrate", database=CAMPAIGNS_ALIAS, verbosity=0)


def run_admin_changelists(recorder: Recorder, points: list[dict[str, Any]]) -> None:
    """Evaluate the admin change list of Campaign and Point, when the admin registers them."""
    from django.contrib import admin
    from django.test import RequestFactory

    from campaigns.models import Campaign, Point

    superuser = User(username="probe", is_staff=True, is_superuser=True, is_active=True)
    # Query strings of the change list: none, the "not" side of a boolean filter, a search.
    queries = {Campaign: ["", "in_progress=no"], Point: ["", "cached=no", "q=1_"]}
    for model in (Campaign, Point):
        model_admin = admin.site._registry.get(model)
        if model_admin is None:
            continue
        for query in queries[model]:
            scenario(recorder, f"admin_{model._meta.model_name}_changelist?{query}", points=points)
            request = RequestFactory().get(f"/admin/campaigns/{model._meta.model_name}/?{query}")
            request.user = superuser
            changelist = model_admin.get_changelist_instance(request)
            list(changelist.result_list)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.mongo_probe OUTPUT.json")
    output = Path(sys.argv[1])
    call_command("migrate", database="default", verbosity=0)
    recorder = Recorder()
    install(recorder)
    run_scenarios(recorder)
    output.write_text(json_util.dumps(recorder.scenarios, json_options=RELAXED_OPTIONS))


if __name__ == "__main__":
    main()
