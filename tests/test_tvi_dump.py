"""load_tvi_dump and export_tvi_dump on the configured database: round trips, errors and caching a loaded campaign."""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from bson import Decimal128, Int64, json_util
from django.core.management import CommandError, call_command
from django.db import connections

from campaigns.models import Campaign, Point, RunState
from campaigns.tvi_dump import READ_OPTIONS, SHAPE_KEY
from tests.conftest import BOTH_DATABASES, wait_for_run_end

pytestmark = pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)

DUMP_DIR = Path(__file__).resolve().parent / "data" / "tvi_dump"
SAMPLE_DATA_ENV = "CACHECAMPAIGN_SAMPLE_DATA"
# Fields a caching run writes; every other field of a document must survive it.
CAMPAIGN_PROGRESS_FIELDS = {
    "caching_in_progress", "caching_started_at", "total_points", "points_to_cache", "cached_points",
    "cache_percentage", "last_point_cached_at", "caching_completed_at", "all_points_cached", "caching_error",
    "caching_error_at",
}
POINT_CACHE_FIELDS = {"cached", "cachedAt", "cachedBy", "enhance_in_cache"}


def on_mongodb() -> bool:
    return connections["campaigns"].vendor == "mongodb"


def sample_dump_dir() -> Path:
    root = os.environ.get(SAMPLE_DATA_ENV)
    if not root or not (Path(root) / "tvi" / "campaign.json").is_file():
        pytest.skip(f"{SAMPLE_DATA_ENV} does not name a folder with tvi/campaign.json; the real TVI dump is optional")
    return Path(root) / "tvi"


def read_documents(path: Path) -> dict[str, dict[str, Any]]:
    documents = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            document = json_util.loads(line, json_options=READ_OPTIONS)
            documents[document["_id"]] = document
    return documents


def value_kinds(value: Any) -> Any:
    """Describe a value's structure by type, counting int and Int64 as one kind (relaxed JSON keeps no width)."""
    if isinstance(value, dict):
        return {key: value_kinds(item) for key, item in value.items()}
    if isinstance(value, list):
        return [value_kinds(item) for item in value]
    if isinstance(value, Int64):
        return "int"
    return type(value).__name__


def load(dump_dir: Path, *extra: str) -> str:
    out = StringIO()
    call_command("load_tvi_dump", str(dump_dir / "campaign.json"), str(dump_dir / "points.json"), *extra, stdout=out)
    return out.getvalue()


def export(outdir: Path, *extra: str) -> str:
    out = StringIO()
    call_command("export_tvi_dump", str(outdir), *extra, stdout=out)
    return out.getvalue()


def assert_same_documents(source: Path, exported: Path) -> None:
    expected = read_documents(source)
    actual = read_documents(exported)
    assert sorted(actual) == sorted(expected)
    for identifier, document in expected.items():
        assert actual[identifier] == document, identifier
        assert value_kinds(actual[identifier]) == value_kinds(document), identifier


def write_dump(folder: Path, campaigns: list[str], points: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "campaign.json").write_text("\n".join(campaigns) + "\n", encoding="utf-8")
    (folder / "points.json").write_text("\n".join(points) + "\n", encoding="utf-8")
    return folder


SYNTHETIC_CAMPAIGNS = ["sintetica_landsat", "antiga_sem_campos"]
SAMPLE_CAMPAIGNS = ["teste", "embrapa_paradas", "mapbiomas_teste", "Mapbiomas_agropecuaria_xpto"]


def campaign_options(campaign_ids: list[str]) -> list[str]:
    """Return --campaign options, so that rows other tests left behind stay out of an export."""
    return [option for campaign_id in campaign_ids for option in ("--campaign", campaign_id)]


VALID_CAMPAIGN = '{"_id": "c1", "initialYear": 2020.0, "finalYear": 2020.0}'
VALID_POINT = '{"_id": "1_c1", "campaign": "c1", "lon": -54.5, "lat": -25.3}'


# --- Round trips -----------------------------------------------------------


def test_synthetic_dump_round_trip(tmp_path):
    output = load(DUMP_DIR)
    export(tmp_path, *campaign_options(SYNTHETIC_CAMPAIGNS))

    assert "Loaded 2 campaigns" in output
    assert "Loaded 5 points (5 new, 0 replaced)." in output
    assert_same_documents(DUMP_DIR / "campaign.json", tmp_path / "campaign.json")
    assert_same_documents(DUMP_DIR / "points.json", tmp_path / "points.json")


def test_sample_dump_round_trip(tmp_path):
    sample = sample_dump_dir()

    output = load(sample)
    export(tmp_path, *campaign_options(SAMPLE_CAMPAIGNS))

    assert "Loaded 4 campaigns" in output
    assert "Loaded 1843 points (1843 new, 0 replaced)." in output
    assert_same_documents(sample / "campaign.json", tmp_path / "campaign.json")
    assert_same_documents(sample / "points.json", tmp_path / "points.json")


def test_reload_replaces_without_duplicates(tmp_path):
    load(DUMP_DIR)
    Point.objects.filter(pk="1_sintetica_landsat").update(cached=True)

    output = load(DUMP_DIR)

    assert "(0 new, 2 replaced)" in output
    assert "Loaded 5 points (0 new, 5 replaced)." in output
    assert Campaign.objects.filter(pk__in=SYNTHETIC_CAMPAIGNS).count() == 2
    assert Point.objects.filter(campaign_id__in=SYNTHETIC_CAMPAIGNS).count() == 5
    assert Point.objects.get(pk="1_sintetica_landsat").cached is None
    export(tmp_path, *campaign_options(SYNTHETIC_CAMPAIGNS))
    assert_same_documents(DUMP_DIR / "points.json", tmp_path / "points.json")


def test_loaded_legacy_fields_read_as_model_values():
    load(DUMP_DIR)

    legacy = Campaign.objects.get(pk="antiga_sem_campos")
    assert legacy.initial_year == 2019
    assert isinstance(legacy.initial_year, int)
    assert legacy.image_type == "landsat"
    assert legacy.vis_params_enable == ["landsat-tvi-false"]
    assert legacy.caching_in_progress is False
    assert legacy.total_points == 0
    assert list(Point.objects.of_campaign("sintetica_landsat").not_cached().values_list("pk", flat=True)) == [
        "1_sintetica_landsat",
        "2_sintetica_landsat",
    ]


def test_relational_extra_column_keeps_unknown_fields():
    if on_mongodb():
        pytest.skip("on MongoDB the documents themselves keep the unknown fields")
    load(DUMP_DIR)

    extra = Campaign.objects.get(pk="sintetica_landsat").extra_fields
    assert extra["owner"] == {"$oid": "5f1d7f0e8b3e4a1b2c3d4e5f"}
    assert extra["createdAt"] == {"$date": "2021-03-04T05:06:07.089Z"}
    assert extra["numInspec"] == 3.0
    assert extra[SHAPE_KEY]["numbers"] == {"initialYear": "double", "finalYear": "double"}
    assert "imageType" not in extra[SHAPE_KEY]["missing"]
    point_extra = Point.objects.get(pk="3_sintetica_landsat").extra_fields
    assert point_extra["weight"] == {"$numberDecimal": "1.25"}


def test_export_one_campaign(tmp_path):
    load(DUMP_DIR)

    output = export(tmp_path, "--campaign", "antiga_sem_campos")

    assert "Wrote 1 campaign to" in output
    assert "Wrote 2 points to" in output
    assert list(read_documents(tmp_path / "campaign.json")) == ["antiga_sem_campos"]
    assert sorted(read_documents(tmp_path / "points.json")) == ["1_antiga_sem_campos", "2_antiga_sem_campos"]


def test_export_canonical_keeps_integer_width(tmp_path):
    load(DUMP_DIR)

    export(tmp_path, "--json-mode", "canonical", *campaign_options(SYNTHETIC_CAMPAIGNS))

    text = (tmp_path / "points.json").read_text(encoding="utf-8")
    assert '"index": {"$numberInt": "1"}' in text
    assert '"lon": {"$numberDouble": "-54.5"}' in text
    points = read_documents(tmp_path / "points.json")
    assert points["3_sintetica_landsat"]["weight"] == Decimal128("1.25")


def test_export_rejects_existing_files(tmp_path):
    load(DUMP_DIR)
    export(tmp_path, *campaign_options(SYNTHETIC_CAMPAIGNS))

    with pytest.raises(CommandError, match="pass --force to overwrite"):
        export(tmp_path, *campaign_options(SYNTHETIC_CAMPAIGNS))
    export(tmp_path, "--force", *campaign_options(SYNTHETIC_CAMPAIGNS))


def test_export_unknown_campaign_rejected(tmp_path):
    with pytest.raises(CommandError, match="Campaign nao_existe not found"):
        export(tmp_path, "--campaign", "nao_existe")


# --- Errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("campaigns", "points", "message"),
    [
        ([VALID_CAMPAIGN], ['{"_id": "1_c1", "campaign": '], "line 1 is not valid MongoDB Extended JSON"),
        (['[{"_id": "c1"}]'], [VALID_POINT], "export with mongoexport without --jsonArray"),
        (['{"_id": {"$oid": "5f1d7f0e8b3e4a1b2c3d4e5f"}}'], [VALID_POINT], "non-empty string _id"),
        ([VALID_CAMPAIGN], ['{"_id": "1_c1", "campaign": "c1", "lon": 200.0, "lat": -25.3}'], "outside -180 to 180"),
        ([VALID_CAMPAIGN], ['{"_id": "1_c1", "campaign": "c1", "lat": -25.3}'], "1_c1 has no lon value"),
        (['{"_id": "c1", "initialYear": 2000.5}'], [VALID_POINT], "initialYear is 2000.5 (float)"),
        (['{"_id": "c1", "imageType": 3}'], [VALID_POINT], "imageType is 3 (int)"),
        ([VALID_CAMPAIGN], ['{"_id": "1_c1", "campaign": "c1", "lon": 1.0, "lat": 2.0, "cached": "yes"}'],
         "cached is yes (str)"),
        ([""], [VALID_POINT], "contains no documents"),
    ],
)
def test_invalid_dump_loads_nothing(tmp_path, campaigns, points, message):
    folder = write_dump(tmp_path / "dump", campaigns, points)

    with pytest.raises(CommandError, match="Nothing was loaded") as raised:
        load(folder)

    assert message in str(raised.value)
    assert not Campaign.objects.filter(pk="c1").exists()
    assert not Point.objects.filter(pk="1_c1").exists()


def test_missing_dump_file_reported(tmp_path):
    folder = write_dump(tmp_path / "dump", [VALID_CAMPAIGN], [VALID_POINT])
    (folder / "points.json").unlink()

    with pytest.raises(CommandError, match="points.json does not exist"):
        load(folder)


def test_invalid_chunk_size_rejected():
    with pytest.raises(CommandError, match="Invalid --chunk-size '0'"):
        load(DUMP_DIR, "--chunk-size", "0")


def test_small_chunks_load_everything():
    output = load(DUMP_DIR, "--chunk-size", "2")

    assert "Loaded 5 points (5 new, 0 replaced)." in output
    assert Point.objects.filter(campaign_id__in=SYNTHETIC_CAMPAIGNS).count() == 5


# --- Caching a loaded campaign ---------------------------------------------


@pytest.mark.worker
def test_caching_loaded_campaign_keeps_tvi_fields(celery_worker, staff_client, tmp_path):
    load(DUMP_DIR)

    response = staff_client.post("/api/cache/campaign/start", {"campaign_id": "sintetica_landsat"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["data"]["points_to_cache"] == 2
    assert response.json()["data"]["already_cached"] == 1
    run = wait_for_run_end("sintetica_landsat")
    assert run.state == RunState.COMPLETED
    status = staff_client.get("/api/cache/campaign/sintetica_landsat/status").json()["data"]
    assert status["cached_points"] == 3
    assert status["all_points_cached"] is True

    export(tmp_path, *campaign_options(SYNTHETIC_CAMPAIGNS))
    source_campaigns = read_documents(DUMP_DIR / "campaign.json")
    source_points = read_documents(DUMP_DIR / "points.json")
    campaigns = read_documents(tmp_path / "campaign.json")
    points = read_documents(tmp_path / "points.json")
    for identifier, document in source_campaigns.items():
        unchanged = {key: value for key, value in campaigns[identifier].items() if key not in CAMPAIGN_PROGRESS_FIELDS}
        assert unchanged == document, identifier
        assert value_kinds(unchanged) == value_kinds(document), identifier
    for identifier, document in source_points.items():
        unchanged = {key: value for key, value in points[identifier].items() if key not in POINT_CACHE_FIELDS}
        original = {key: value for key, value in document.items() if key not in POINT_CACHE_FIELDS}
        assert unchanged == original, identifier
    cached = campaigns["sintetica_landsat"]
    assert cached["cached_points"] == 3
    assert cached["total_points"] == 3
    assert cached["caching_in_progress"] is False
    assert points["1_sintetica_landsat"]["cached"] is True
    assert points["1_sintetica_landsat"]["cachedBy"] == "celery-task"
    assert points["3_sintetica_landsat"]["cachedBy"] == "tvi"
    assert "cached" not in points["1_antiga_sem_campos"]


@pytest.mark.worker
def test_caching_sample_campaign(celery_worker, staff_client, tmp_path):
    sample = sample_dump_dir()
    load(sample)
    # Every point of the sample is cached; the smallest campaign is cached again from scratch.
    Point.objects.of_campaign("teste").mark_not_cached()

    response = staff_client.post(
        "/api/cache/campaign/start", {"campaign_id": "teste", "batch_size": 5}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["data"]["points_to_cache"] == 15
    run = wait_for_run_end("teste", timeout=180)
    assert run.state == RunState.COMPLETED
    assert run.succeeded_points == 15
    campaign = Campaign.objects.get(pk="teste")
    assert campaign.cached_points == 15
    assert campaign.cache_percentage == 100.0
    export(tmp_path, "--campaign", "teste")
    source = read_documents(sample / "points.json")
    for identifier, document in read_documents(tmp_path / "points.json").items():
        original = {key: value for key, value in source[identifier].items() if key not in POINT_CACHE_FIELDS}
        assert {key: value for key, value in document.items() if key not in POINT_CACHE_FIELDS} == original
        assert document["cached"] is True
        assert document["enhance_in_cache"] == 1
