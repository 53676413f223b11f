"""MongoDB deployments verified without a server: system checks, migrations and the queries sent.

Settings pick the campaigns backend once per process, so every check here
runs in a child process with MONGODB_URI and MONGODB_NAME set (the URI names
127.0.0.1 with a 300 ms server selection timeout, and nothing listens
there). ``tests.mongo_probe`` runs the caching run, the status endpoint, the
commands, saves and migrations with the real django-mongodb-backend. It
records what reaches pymongo's collections, and the tests below check those
commands. What a server does with them is checked by the ``mongodb`` tier
(``tests/test_mongodb_live.py``) when MONGODB_URI points at a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from campaigns.models import Campaign, Point
from campaigns.tvi_dump import READ_OPTIONS
from tests.mql import contains_key, match_stage, matches, stages

ROOT = Path(__file__).resolve().parent.parent
DUMP_DIR = ROOT / "tests" / "data" / "tvi_dump"
CAMPAIGN_ID = "tvi_campaign"
POINT_ID = f"1_{CAMPAIGN_ID}"
OFFLINE_URI = "mongodb://127.0.0.1:27017/?serverSelectionTimeoutMS=300"
CHILD_TIMEOUT_SECONDS = 300

Calls = list[dict[str, Any]]


def mongodb_environment(var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The child uses its own scratch folder, SQLite default database and
    # filesystem broker, whatever this test session runs on.
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "TILE_SOURCES_FILE", "CAMPAIGNS_DATABASE_URL"):
        env.pop(name, None)
    env.update(
        {
            "CACHECAMPAIGN_VAR_DIR": str(var_dir),
            "MONGODB_URI": OFFLINE_URI,
            "MONGODB_NAME": "tvi_offline",
            "DJANGO_SETTINGS_MODULE": "cachecampaign.settings",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def run_child(arguments: list[str], var_dir: Path) -> subprocess.CompletedProcess:
    var_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=mongodb_environment(var_dir),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
    )


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict[str, Calls]:
    """The calls each scenario of tests.mongo_probe made, by scenario name."""
    folder = tmp_path_factory.mktemp("mongo-probe")
    output = folder / "calls.json"
    child = run_child(["-m", "tests.mongo_probe", str(output)], folder / "var")
    assert child.returncode == 0, f"mongo_probe failed:\n{child.stdout}\n{child.stderr}"
    return json_util.loads(output.read_text(), json_options=READ_OPTIONS)


def calls_of(probe: dict[str, Calls], scenario: str, method: str | None = None) -> Calls:
    assert scenario in probe, f"scenario {scenario} sent nothing; recorded: {sorted(probe)}"
    return [call for call in probe[scenario] if method is None or call["method"] == method]


def set_keys(call: dict[str, Any]) -> set[str]:
    """Return the fields an update_many call sets; the backend sends a one-stage pipeline."""
    update = call["args"][1]
    assert isinstance(update, list) and len(update) == 1, f"expected one pipeline stage, got {update}"
    assert stages(update) == ["$set"]
    return set(update[0]["$set"])


def declared_columns(model) -> set[str]:
    return {field.column for field in model._meta.concrete_fields if field.name != "extra_fields"}


def written_documents(call: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the documents or ``$set`` stages a write call sends."""
    if call["method"] == "insert_many":
        return call["args"][0]
    if call["method"] == "update_many":
        return [stage.get("$set", {}) for stage in call["args"][1]]
    if call["method"] == "bulk_write":
        return [request["replaceOne"]["replacement"] for request in call["args"][0]]
    return []


# --- Configuration ---------------------------------------------------------


def test_system_check_passes_with_mongodb(tmp_path):
    child = run_child(["manage.py", "check", "--database", "campaigns", "--database", "default"], tmp_path)

    assert child.returncode == 0, child.stderr
    assert "System check identified no issues" in child.stdout


def test_migrations_up_to_date_with_mongodb(tmp_path):
    child = run_child(["manage.py", "makemigrations", "--check", "--dry-run"], tmp_path)

    assert child.returncode == 0, child.stdout + child.stderr
    assert "No changes detected" in child.stdout
    # No server: the history check of the campaigns alias is skipped with a warning.
    assert "Cannot reach the MongoDB server of database alias 'campaigns'" in child.stderr
    assert "serverSelectionTimeoutMS" not in child.stderr


def test_campaigns_alias_uses_protecting_engine(tmp_path):
    code = (
        "import django; django.setup(); from django.db import connections; "
        "c = connections['campaigns']; print(c.vendor, type(c).__module__, c.settings_dict['NAME'])"
    )
    child = run_child(["-c", code], tmp_path)

    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["mongodb", "cachecampaign.mongodb_backend.base", "tvi_offline"]


# --- Migrations ------------------------------------------------------------


def test_migrate_on_tvi_database_only_adds_index(probe):
    calls = calls_of(probe, "migrate")

    created = {call["args"][0] for call in calls if call["method"] == "create_collection"}
    assert created == {"django_migrations"}
    indexes = [call for call in calls if call["method"] == "create_indexes"]
    assert [call["collection"] for call in indexes] == ["points"]
    assert indexes[0]["args"][0] == [{"name": "points_campaign_cached", "key": {"campaign": 1, "cached": 1}}]
    touched = {call["collection"] for call in calls if call["method"] not in ("create_indexes",)}
    assert touched == {"django_migrations"}


def test_migrate_on_empty_database_creates_two_collections(probe):
    calls = calls_of(probe, "migrate_empty_database")

    created = {call["args"][0] for call in calls if call["method"] == "create_collection"}
    assert created == {"campaign", "points", "django_migrations"}
    assert not [call for call in calls if call["method"] in ("update_many", "delete_many", "drop")]


# --- The caching run -------------------------------------------------------


def test_claim_start_is_one_conditional_update(probe):
    calls = calls_of(probe, "claim_start")

    assert [(call["collection"], call["method"]) for call in calls] == [("campaign", "update_many")]
    criteria = calls[0]["args"][0]
    base = {"_id": CAMPAIGN_ID}
    assert matches(base, criteria), "a TVI campaign without caching_in_progress must be claimable"
    assert matches({**base, "caching_in_progress": False}, criteria)
    assert matches({**base, "caching_in_progress": None}, criteria)
    assert not matches({**base, "caching_in_progress": True}, criteria)
    assert not matches({"_id": "other", "caching_in_progress": False}, criteria)
    assert set_keys(calls[0]) == {
        "caching_in_progress", "caching_started_at", "caching_completed_at", "caching_error", "caching_error_at",
    }


def test_not_cached_selection_matches_missing_field(probe):
    calls = calls_of(probe, "dispatch", "aggregate")

    selections = [call for call in calls if call["collection"] == "points"]
    assert len(selections) == 1
    pipeline = selections[0]["args"][0]
    criteria = match_stage(pipeline)
    point = {"_id": POINT_ID, "campaign": CAMPAIGN_ID}
    assert matches(point, criteria), "a point without cached must be selected"
    assert matches({**point, "cached": None}, criteria)
    assert matches({**point, "cached": False}, criteria)
    assert not matches({**point, "cached": True}, criteria)
    assert not matches({**point, "campaign": "other"}, criteria)
    assert stages(pipeline) == ["$match", "$project", "$sort"]
    assert pipeline[1]["$project"] == {"_id": 1}


def test_mark_cached_sets_only_point_fields(probe):
    calls = calls_of(probe, "mark_cached")

    assert [(call["collection"], call["method"]) for call in calls] == [("points", "update_many")]
    criteria = calls[0]["args"][0]
    assert matches({"_id": POINT_ID}, criteria)
    assert matches({"_id": POINT_ID, "cached": False}, criteria)
    assert not matches({"_id": POINT_ID, "cached": True}, criteria)
    assert not matches({"_id": "2_other"}, criteria)
    assert set_keys(calls[0]) == {"cached", "cachedAt", "cachedBy", "enhance_in_cache"}


def test_progress_increment_is_one_pipeline_update(probe):
    calls = calls_of(probe, "add_cached_point")

    assert [(call["collection"], call["method"]) for call in calls] == [("campaign", "update_many")]
    assert calls[0]["args"][0] == {"_id": CAMPAIGN_ID}
    assert set_keys(calls[0]) == {"cached_points", "cache_percentage", "all_points_cached", "last_point_cached_at"}
    stage = calls[0]["args"][1][0]["$set"]
    assert stage["cached_points"] == {"$add": ["$cached_points", {"$literal": 1}]}
    assert contains_key(stage["cache_percentage"], "$round")


def test_point_transition_precedes_increment(probe):
    calls = calls_of(probe, "mark_point_cached")

    assert [(call["collection"], call["method"]) for call in calls] == [
        ("points", "update_many"),
        ("campaign", "update_many"),
    ]


def test_cached_point_task_sends_three_commands(probe):
    for scenario in ("cache_point_0", "cache_point_1"):
        calls = calls_of(probe, scenario)

        assert [(call["collection"], call["method"]) for call in calls] == [
            ("points", "aggregate"),
            ("points", "update_many"),
            ("campaign", "update_many"),
        ]
        read = calls[0]["args"][0]
        assert pipeline_projection(read) == {"lon", "lat", "cached", "campaign", "_id"}


def pipeline_projection(pipeline: list[dict[str, Any]]) -> set[str]:
    projections = [stage["$project"] for stage in pipeline if "$project" in stage]
    assert len(projections) == 1
    return set(projections[0])


def test_run_counts_filter_by_campaign(probe):
    counts = [call for call in calls_of(probe, "start_run", "aggregate") if call["collection"] == "points"]

    assert len(counts) == 2
    for call in counts:
        criteria = match_stage(call["args"][0])
        assert "$facet" in stages(call["args"][0])
        assert not matches({"_id": "x", "campaign": "other", "cached": True}, criteria)
    cached_count = match_stage(counts[1]["args"][0])
    assert matches({"campaign": CAMPAIGN_ID, "cached": True}, cached_count)
    assert not matches({"campaign": CAMPAIGN_ID}, cached_count)


def test_status_reads_campaign_without_points(probe):
    calls = calls_of(probe, "status")

    assert [(call["collection"], call["method"]) for call in calls] == [("campaign", "aggregate")]
    assert match_stage(calls[0]["args"][0]) == {"_id": CAMPAIGN_ID}


def test_no_scenario_sends_lookup(probe):
    for scenario, calls in probe.items():
        for call in calls:
            if call["method"] == "aggregate":
                assert not contains_key(call["args"][0], "$lookup"), f"{scenario} sent $lookup: {call}"


def test_no_write_sends_extra_column(probe):
    writes = 0
    for scenario, calls in probe.items():
        for call in calls:
            for document in written_documents(call):
                writes += 1
                assert "_extra" not in document, f"{scenario} wrote _extra to {call['collection']}"
    assert writes > 20


def test_update_of_extra_fields_rejected(probe):
    calls = calls_of(probe, "update_extra_fields")

    assert [call["method"] for call in calls] == ["raised"]
    assert calls[0]["args"][0] == "ValueError"
    assert "extra_fields exists only on relational databases" in calls[0]["args"][1]


# --- Saves and commands ----------------------------------------------------


def test_save_sets_declared_fields_only(probe):
    update = calls_of(probe, "save_loaded_campaign", "update_many")

    assert len(update) == 1
    assert set_keys(update[0]) == declared_columns(Campaign) - {"_id"}


def test_save_with_update_fields_sets_those_only(probe):
    update = calls_of(probe, "save_update_fields", "update_many")

    assert len(update) == 1
    assert update[0]["args"][0] == {"_id": CAMPAIGN_ID}
    assert set_keys(update[0]) == {"tile_preset"}


def test_import_points_inserts_declared_fields_only(probe):
    inserts = calls_of(probe, "import_points", "insert_many")

    by_collection = {call["collection"]: call["args"][0] for call in inserts}
    assert set(by_collection) == {"campaign", "points"}
    assert set(by_collection["campaign"][0]) == declared_columns(Campaign)
    assert [set(document) for document in by_collection["points"]] == [declared_columns(Point)]


def test_load_tvi_dump_replaces_whole_documents(probe):
    writes = calls_of(probe, "load_tvi_dump", "bulk_write")

    by_collection = {call["collection"]: call for call in writes}
    assert set(by_collection) == {"campaign", "points"}
    for collection, file_name in (("campaign", "campaign.json"), ("points", "points.json")):
        source = [
            json_util.loads(line, json_options=READ_OPTIONS)
            for line in (DUMP_DIR / file_name).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        requests = by_collection[collection]["args"][0]
        assert [request["replaceOne"]["filter"] for request in requests] == [{"_id": doc["_id"]} for doc in source]
        assert [request["replaceOne"]["replacement"] for request in requests] == source
        assert {request["replaceOne"]["upsert"] for request in requests} == {True}
        assert by_collection[collection]["kwargs"] == {"ordered": False}


def test_export_reads_documents_in_id_order(probe):
    finds = calls_of(probe, "export_tvi_dump", "find")

    assert [(call["collection"], call["args"][0]) for call in finds] == [("campaign", {}), ("points", {})]
    assert {str(call["kwargs"]["sort"]) for call in finds} == {"[['_id', 1]]"}


def test_export_of_one_campaign_filters_points(probe):
    finds = calls_of(probe, "export_one_campaign", "find")

    assert [(call["collection"], call["args"][0]) for call in finds] == [
        ("campaign", {"_id": {"$in": [CAMPAIGN_ID]}}),
        ("points", {"campaign": {"$in": [CAMPAIGN_ID]}}),
    ]


def test_admin_changelists_send_no_lookup(probe):
    scenarios = [name for name in probe if name.startswith("admin_")]
    if not scenarios:
        pytest.skip("the admin registers neither Campaign nor Point, so there is no change list to compile")
    for scenario in scenarios:
        aggregates = calls_of(probe, scenario, "aggregate")
        assert aggregates, f"{scenario} sent no query"
        for call in aggregates:
            assert not contains_key(call["args"][0], "$lookup"), f"{scenario} sent $lookup: {call}"


@pytest.mark.parametrize(
    ("scenario", "collection", "document"),
    [
        ("admin_point_changelist?cached=no", "points", {"_id": POINT_ID, "campaign": CAMPAIGN_ID}),
        ("admin_campaign_changelist?in_progress=no", "campaign", {"_id": CAMPAIGN_ID}),
    ],
)
def test_admin_false_filters_match_missing_field(probe, scenario, collection, document):
    if scenario not in probe:
        pytest.skip(f"the admin does not offer {scenario}")
    listed = [call for call in calls_of(probe, scenario, "aggregate") if call["collection"] == collection]

    assert listed
    for call in listed:
        criteria = match_stage(call["args"][0])
        if criteria:
            assert matches(document, criteria), f"{scenario} misses a document without the field"
