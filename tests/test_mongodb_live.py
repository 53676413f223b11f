"""The ``mongodb`` tier: the service against a real MongoDB server (6.0 or newer).

Runs only when MONGODB_URI and MONGODB_NAME are set, for example against the
compose file's server::

    docker compose -f docker/compose.yaml up -d mongodb
    MONGODB_URI=mongodb://127.0.0.1:27017 MONGODB_NAME=tvi .venv/bin/python -m pytest -m mongodb

Django creates and drops a ``test_<MONGODB_NAME>`` database; MONGODB_NAME's
own database is not touched. Without MONGODB_URI every test here is skipped
with the reason shown by ``pytest -ra``.
"""

from __future__ import annotations

import threading
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from bson import json_util
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from campaigns.models import Campaign, Point, RunState
from campaigns.tvi_dump import READ_OPTIONS
from tests.conftest import BOTH_DATABASES, wait_for_run_end

pytestmark = [pytest.mark.mongodb, pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)]

DUMP_DIR = Path(__file__).resolve().parent / "data" / "tvi_dump"
POINT_CACHE_FIELDS = {"cached", "cachedAt", "cachedBy", "enhance_in_cache"}


def collection(name: str):
    return connections["campaigns"].get_collection(name)


def source_documents(file_name: str) -> dict[str, dict[str, Any]]:
    documents = {}
    for line in (DUMP_DIR / file_name).read_text(encoding="utf-8").splitlines():
        if line.strip():
            document = json_util.loads(line, json_options=READ_OPTIONS)
            documents[document["_id"]] = document
    return documents


def load_synthetic_dump() -> None:
    call_command(
        "load_tvi_dump", str(DUMP_DIR / "campaign.json"), str(DUMP_DIR / "points.json"), stdout=StringIO()
    )


def test_loaded_documents_equal_dump():
    load_synthetic_dump()

    for name, file_name in (("campaign", "campaign.json"), ("points", "points.json")):
        stored = {document["_id"]: document for document in collection(name).find({})}
        assert stored == source_documents(file_name)
    assert collection("points").find_one({"_id": "3_sintetica_landsat"})["weight"].to_decimal() == 1.25


def test_export_round_trip_canonical(tmp_path):
    load_synthetic_dump()

    call_command("export_tvi_dump", str(tmp_path), "--json-mode", "canonical", stdout=StringIO())

    for file_name in ("campaign.json", "points.json"):
        exported = {}
        for line in (tmp_path / file_name).read_text(encoding="utf-8").splitlines():
            document = json_util.loads(line, json_options=READ_OPTIONS)
            exported[document["_id"]] = document
        assert exported == source_documents(file_name)


def test_migrations_created_points_index():
    indexes = collection("points").index_information()

    assert indexes["points_campaign_cached"]["key"] == [("campaign", 1), ("cached", 1)]
    names = set(connections["campaigns"].database.list_collection_names())
    assert names <= {"campaign", "points", "django_migrations"}


def test_missing_progress_fields_read_as_defaults(staff_client):
    collection("campaign").insert_one({"_id": "nova_tvi", "initialYear": 2020.0, "finalYear": 2020.0})

    body = staff_client.get("/api/cache/campaign/nova_tvi/status").json()

    assert body["data"]["total_points"] == 0
    assert body["data"]["cached_points"] == 0
    assert body["data"]["caching_in_progress"] is False
    assert body["data"]["all_points_cached"] is False
    campaign = Campaign.objects.get(pk="nova_tvi")
    assert campaign.initial_year == 2020
    assert campaign.image_type == "landsat"


def test_claim_start_wins_once_under_race():
    collection("campaign").insert_one({"_id": "corrida", "initialYear": 2020.0, "finalYear": 2020.0})
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait(timeout=10)
        results.append(Campaign.objects.claim_start("corrida", timezone.now()))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(results) == [False] * 7 + [True]


def test_not_cached_selection_includes_missing_field():
    load_synthetic_dump()

    selected = set(Point.objects.of_campaign("sintetica_landsat").not_cached().values_list("pk", flat=True))

    assert selected == {"1_sintetica_landsat", "2_sintetica_landsat"}


def test_point_transition_counts_once():
    load_synthetic_dump()
    now = timezone.now()
    Campaign.objects.filter(pk="sintetica_landsat").update(total_points=3, cached_points=1)

    first = Point.objects.mark_cached("1_sintetica_landsat", now, "celery-task")
    second = Point.objects.mark_cached("1_sintetica_landsat", now, "celery-task")
    Campaign.objects.add_cached_point("sintetica_landsat", now)

    assert (first, second) == (True, False)
    document = collection("campaign").find_one({"_id": "sintetica_landsat"})
    assert document["cached_points"] == 2
    assert document["cache_percentage"] == 66.67
    assert document["all_points_cached"] is False
    assert document["owner"] == source_documents("campaign.json")["sintetica_landsat"]["owner"]


@pytest.mark.worker
def test_caching_run_keeps_tvi_fields(celery_worker, staff_client):
    load_synthetic_dump()

    response = staff_client.post("/api/cache/campaign/start", {"campaign_id": "sintetica_landsat"}, format="json")

    assert response.status_code == 200, response.json()
    run = wait_for_run_end("sintetica_landsat")
    assert run.state == RunState.COMPLETED
    source = source_documents("points.json")
    for document in collection("points").find({"campaign": "sintetica_landsat"}):
        assert "_extra" not in document
        assert document["cached"] is True
        original = {key: value for key, value in source[document["_id"]].items() if key not in POINT_CACHE_FIELDS}
        assert {key: value for key, value in document.items() if key not in POINT_CACHE_FIELDS} == original
    campaign = collection("campaign").find_one({"_id": "sintetica_landsat"})
    assert "_extra" not in campaign
    assert campaign["cached_points"] == 3
    assert campaign["cache_percentage"] == 100.0
    assert campaign["initialYear"] == 2020.0
    assert isinstance(campaign["initialYear"], float)
    status = staff_client.get("/api/cache/campaign/sintetica_landsat/status").json()["data"]
    assert status["all_points_cached"] is True


def test_admin_changelists_render(client, django_user_model):
    from django.contrib import admin

    load_synthetic_dump()
    superuser = django_user_model.objects.create_superuser("admin", "admin@example.org", "s3cret-pass")
    client.force_login(superuser)

    for model in (Campaign, Point):
        if model not in admin.site._registry:
            continue
        response = client.get(f"/admin/campaigns/{model._meta.model_name}/")
        assert response.status_code == 200, model
