"""Tests of campaigns.importers and the import_points command against the test database."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django.test.utils import CaptureQueriesContext

from campaigns.importers import (
    CoordinateError,
    ImportFileError,
    find_coordinate_columns,
    point_index,
    read_points,
    validate_position,
)
from campaigns.models import Campaign, Point
from tests.conftest import BOTH_DATABASES

# Real transactions, so that the importer's rollback runs as in production
# instead of as a savepoint inside the test's own transaction.
pytestmark = pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)

SAMPLE_DATA_ENV = "CACHECAMPAIGN_SAMPLE_DATA"


def run_import(*args: object) -> str:
    out = StringIO()
    call_command("import_points", *[str(arg) for arg in args], stdout=out)
    return out.getvalue()


def write_geojson(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def feature(geometry: object, **properties: object) -> dict:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def point(lon: object, lat: object) -> dict:
    return {"type": "Point", "coordinates": [lon, lat]}


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def points_of(campaign_id: str) -> list[tuple[str, float, float]]:
    return list(Point.objects.filter(campaign_id=campaign_id).order_by("lon").values_list("id", "lon", "lat"))


def ids_of(campaign_id: str) -> set[str]:
    return set(Point.objects.filter(campaign_id=campaign_id).values_list("id", flat=True))


def import_error(*args: object) -> str:
    with pytest.raises(CommandError) as raised:
        run_import(*args)
    return str(raised.value)


# --- GeoJSON ---------------------------------------------------------------


def test_geojson_points_imported(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "points.geojson",
        collection(feature(point(-48.5, -15.25)), feature(point(-47.0, -14.0)), feature(point(-46.125, -13.5))),
    )

    out = run_import("camp", path)

    assert points_of("camp") == [("1_camp", -48.5, -15.25), ("2_camp", -47.0, -14.0), ("3_camp", -46.125, -13.5)]
    assert "Imported 3 points into campaign camp (ids 1_camp to 3_camp)." in out
    assert "Created campaign camp (imageType landsat)." in out
    stored = Point.objects.get(pk="1_camp")
    assert stored.campaign_id == "camp"
    assert stored.cached is None
    assert stored.cached_at is None


def test_geojson_multipoint_members_become_points(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "multi.geojson",
        collection(
            feature(point(-50.0, -10.0)),
            feature({"type": "MultiPoint", "coordinates": [[-49.0, -9.0], [-48.0, -8.0, 850.0]]}),
        ),
    )

    run_import("multi", path)

    assert points_of("multi") == [("1_multi", -50.0, -10.0), ("2_multi", -49.0, -9.0), ("3_multi", -48.0, -8.0)]


def test_geojson_single_feature_and_bare_geometry(tmp_path: Path) -> None:
    single = write_geojson(tmp_path / "single.geojson", feature(point(-40.0, -20.0)))
    bare = write_geojson(tmp_path / "bare.json", {"type": "MultiPoint", "coordinates": [[-41.0, -21.0], [-42, -22]]})

    run_import("shapes", single)
    run_import("shapes", bare)

    assert points_of("shapes") == [("3_shapes", -42.0, -22.0), ("2_shapes", -41.0, -21.0), ("1_shapes", -40.0, -20.0)]


def test_geojson_features_before_type_member(tmp_path: Path) -> None:
    path = tmp_path / "order.geojson"
    path.write_text('{"features": [{"type": "Feature", "geometry": {"coordinates": [1, 2], "type": "Point"}}],'
                    ' "crs": {"type": "name"}, "type": "FeatureCollection"}')

    run_import("order", path)

    assert points_of("order") == [("1_order", 1.0, 2.0)]


def test_geojson_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(collection(feature(point(3.5, 4.5)))).encode())

    run_import("bom", path)

    assert points_of("bom") == [("1_bom", 3.5, 4.5)]


# --- CSV -------------------------------------------------------------------


def test_csv_points_imported(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("name,lon,lat\nfirst,-48.5,-15.25\n\nsecond, -47.0 ,-14\n", encoding="utf-8")

    out = run_import("csvcamp", path)

    assert points_of("csvcamp") == [("1_csvcamp", -48.5, -15.25), ("2_csvcamp", -47.0, -14.0)]
    assert "Imported 2 points into campaign csvcamp (ids 1_csvcamp to 2_csvcamp)." in out


@pytest.mark.parametrize(
    "header",
    ["longitude,latitude", "LNG,Lat", "x,y", " Lon , LAT "],
)
def test_csv_column_aliases(tmp_path: Path, header: str) -> None:
    path = tmp_path / "aliases.csv"
    path.write_text(f"{header}\n-48.5,-15.25\n", encoding="utf-8")

    run_import("aliases", path)

    assert points_of("aliases") == [("1_aliases", -48.5, -15.25)]


def test_csv_semicolon_and_decimal_comma(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("id;lat;lon\n1;-15,25;-48,5\n2;-14.5;-47.75\n", encoding="utf-8")

    run_import("excel", path)

    assert points_of("excel") == [("1_excel", -48.5, -15.25), ("2_excel", -47.75, -14.5)]


def test_csv_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "blanks.csv"
    path.write_text("\nlon;lat;name\n1;2;a\n\n;;\n3;abc;b\n", encoding="utf-8")

    message = import_error("blanks", path)

    assert "has 1 invalid point." in message
    assert "Line 6: latitude 'abc' is not a number." in message


def test_csv_lon_wins_over_alias() -> None:
    assert find_coordinate_columns(["x", "y", "lon", "lat"]) == (2, 3)


def test_csv_ambiguous_alias_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ambiguous.csv"
    path.write_text("longitude,x,latitude\n-48.5,500000,-15.25\n", encoding="utf-8")

    message = import_error("ambiguous", path)

    assert "several possible longitude columns ('longitude', 'x')" in message
    assert "Its columns are: 'longitude', 'x', 'latitude'." in message
    assert not Campaign.objects.filter(pk="ambiguous").exists()


def test_csv_missing_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "nolat.csv"
    path.write_text("lon,height\n-48.5,12\n", encoding="utf-8")

    message = import_error("nolat", path)

    assert "no latitude column" in message
    assert "Its columns are: 'lon', 'height'." in message


def test_csv_short_row_rejected(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("name,lon,lat\na,-48.5,-15.25\nb,-47\n", encoding="utf-8")

    message = import_error("short", path)

    assert "Line 3: the row has 2 columns" in message
    assert Point.objects.filter(campaign_id="short").count() == 0


# --- Ids and campaign fields -----------------------------------------------


def test_ids_continue_after_existing(tmp_path: Path) -> None:
    Campaign.objects.create(id="cont")
    Campaign.objects.create(id="other")
    Point.objects.create(id="7_cont", campaign_id="cont", lon=1, lat=1)
    Point.objects.create(id="3_cont", campaign_id="cont", lon=2, lat=2)
    Point.objects.create(id="legacy-900", campaign_id="cont", lon=3, lat=3)
    Point.objects.create(id="50_a_cont", campaign_id="cont", lon=4, lat=4)
    Point.objects.create(id="40_other", campaign_id="other", lon=5, lat=5)
    path = write_geojson(tmp_path / "more.geojson", collection(feature(point(10, 10)), feature(point(11, 11))))

    out = run_import("cont", path)

    assert Point.objects.get(pk="8_cont").lon == 10.0
    assert Point.objects.get(pk="9_cont").lon == 11.0
    assert Point.objects.filter(campaign_id="cont").count() == 6
    assert "(ids 8_cont to 9_cont)" in out


def test_reimport_adds_points_again(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "again.geojson", collection(feature(point(1, 2)), feature(point(3, 4))))

    run_import("again", path)
    out = run_import("again", path)

    assert ids_of("again") == {"1_again", "2_again", "3_again", "4_again"}
    assert Point.objects.get(pk="3_again").lon == 1.0
    assert "Created campaign" not in out


def test_skip_duplicates(tmp_path: Path) -> None:
    first = write_geojson(tmp_path / "first.geojson", collection(feature(point(-48.123456789, -15.5))))
    second = write_geojson(
        tmp_path / "second.geojson",
        collection(
            feature(point(-48.12345679, -15.50000001)),
            feature(point(-47.0, -14.0)),
            feature(point(-47.0, -14.0)),
            feature(point(-46.0, -13.0)),
        ),
    )
    run_import("dup", first)

    out = run_import("dup", second, "--skip-duplicates")

    assert points_of("dup") == [("1_dup", -48.123456789, -15.5), ("2_dup", -47.0, -14.0), ("3_dup", -46.0, -13.0)]
    assert "Skipped 2 points whose coordinates already exist in the campaign or earlier in the file." in out
    again = run_import("dup", second, "--skip-duplicates")
    assert "Imported no points: all 4 points of the file already exist in campaign dup." in again
    assert Point.objects.filter(campaign_id="dup").count() == 3


def test_campaign_created_with_options(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "opts.geojson", collection(feature(point(1, 2))))

    run_import(
        "opts",
        path,
        "--initial-year", "2000",
        "--final-year", "2020",
        "--vis-params", "landsat-tvi-false, landsat-tvi-agri",
        "--image-type", "landsat",
        "--preset", "tvi",
    )  # fmt: skip

    campaign = Campaign.objects.get(pk="opts")
    assert campaign.initial_year == 2000
    assert campaign.final_year == 2020
    assert campaign.vis_params == ["landsat-tvi-false", "landsat-tvi-agri"]
    assert campaign.image_type == "landsat"
    assert campaign.tile_preset == "tvi"
    assert campaign.caching_in_progress is False


def test_campaign_created_sentinel(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "s2.geojson", collection(feature(point(1, 2))))

    run_import("s2", path, "--image-type", "Sentinel-2", "--vis-params", "tvi-rgb", "--initial-year", "2019")

    campaign = Campaign.objects.get(pk="s2")
    assert campaign.image_type == "sentinel-2"
    assert campaign.vis_params == ["tvi-rgb"]
    assert campaign.initial_year == 2019
    assert campaign.final_year is None


def test_new_campaign_without_years_warns(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "noyears.geojson", collection(feature(point(1, 2))))

    out = run_import("noyears", path)

    assert "has no year range yet" in out
    assert Campaign.objects.get(pk="noyears").initial_year is None


def test_existing_campaign_untouched_without_options(tmp_path: Path) -> None:
    Campaign.objects.create(
        id="keep",
        initial_year=2016,
        final_year=2018,
        image_type="sentinel-2",
        vis_params_enable=["tvi-red"],
        extra_fields={"password": "", "numInspec": 3.0},
    )
    path = write_geojson(tmp_path / "keep.geojson", collection(feature(point(1, 2))))

    with CaptureQueriesContext(connections[Point.objects.db]) as queries:
        out = run_import("keep", path)

    campaign = Campaign.objects.get(pk="keep")
    assert (campaign.initial_year, campaign.final_year) == (2016, 2018)
    assert campaign.image_type == "sentinel-2"
    assert campaign.vis_params is None
    assert campaign.vis_params_enable == ["tvi-red"]
    assert campaign.extra_fields == {"password": "", "numInspec": 3.0}
    assert not [query for query in queries if query["sql"].startswith('UPDATE "campaign"')]
    assert "Updated campaign" not in out


def test_existing_campaign_updates_given_fields_only(tmp_path: Path) -> None:
    Campaign.objects.create(id="upd", initial_year=2000, final_year=2010, vis_param="landsat-tvi-true")
    path = write_geojson(tmp_path / "upd.geojson", collection(feature(point(1, 2))))

    with CaptureQueriesContext(connections[Point.objects.db]) as queries:
        out = run_import("upd", path, "--final-year", "2012")

    updates = [query["sql"] for query in queries if query["sql"].startswith('UPDATE "campaign"')]
    assert len(updates) == 1
    assert '"finalYear"' in updates[0]
    assert '"initialYear"' not in updates[0]
    assert '"visParam"' not in updates[0]
    campaign = Campaign.objects.get(pk="upd")
    assert (campaign.initial_year, campaign.final_year) == (2000, 2012)
    assert campaign.vis_param == "landsat-tvi-true"
    assert "Updated campaign upd: finalYear." in out


def test_image_type_change_checks_stored_years(tmp_path: Path) -> None:
    Campaign.objects.create(id="oldyears", initial_year=2000, final_year=2018)
    path = write_geojson(tmp_path / "oldyears.geojson", collection(feature(point(1, 2))))

    message = import_error("oldyears", path, "--image-type", "sentinel-2")

    assert "the stored initialYear 2000 is outside the years of the sentinel layer. Use 2015 to 2100." in message
    assert Campaign.objects.get(pk="oldyears").image_type == "landsat"


def test_image_type_change_checks_stored_vis_params(tmp_path: Path) -> None:
    Campaign.objects.create(id="switch", initial_year=2016, final_year=2018, vis_params=["landsat-tvi-false"])
    path = write_geojson(tmp_path / "switch.geojson", collection(feature(point(1, 2))))

    message = import_error("switch", path, "--image-type", "sentinel-2")

    assert "do not belong to the sentinel layer" in message
    assert Campaign.objects.get(pk="switch").image_type == "landsat"
    assert Point.objects.filter(campaign_id="switch").count() == 0


# --- Rejected options -------------------------------------------------------


def test_unknown_vis_param_rejected(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "vis.geojson", collection(feature(point(1, 2))))

    message = import_error("vis", path, "--vis-params", "landsat-tvi-false,tvi-red")

    assert "Unknown vis param 'tvi-red' for the landsat layer" in message
    assert "landsat-tvi-agri, landsat-tvi-false, landsat-tvi-true" in message
    assert not Campaign.objects.filter(pk="vis").exists()
    assert Point.objects.filter(campaign_id="vis").count() == 0


def test_planet_image_type_rejected(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "planet.geojson", collection(feature(point(1, 2))))

    message = import_error("planet", path, "--image-type", "planet")

    assert "--image-type 'planet' cannot be cached" in message
    assert not Campaign.objects.filter(pk="planet").exists()


def test_unknown_preset_rejected(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "preset.geojson", collection(feature(point(1, 2))))

    message = import_error("preset", path, "--preset", "huge")

    assert "Unknown --preset 'huge'. Use one of seed, tvi." in message
    assert not Campaign.objects.filter(pk="preset").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--initial-year", "1970"], "--initial-year 1970 is outside the years of the landsat layer. Use 1985 to 2100"),
        (["--initial-year", "2020", "--final-year", "2010"], "The initial year 2020 is after the final year 2010"),
        (
            ["--image-type", "sentinel-2", "--final-year", "2010"],
            "--final-year 2010 is outside the years of the sentinel layer. Use 2015 to 2100",
        ),
        (["--image-type", "modis"], "--image-type 'modis' cannot be cached"),
        (["--vis-params", " , "], "--vis-params is empty"),
    ],
)
def test_invalid_campaign_options(tmp_path: Path, args: list[str], expected: str) -> None:
    path = write_geojson(tmp_path / "years.geojson", collection(feature(point(1, 2))))

    message = import_error("years", path, *args)

    assert expected in message
    assert not Campaign.objects.filter(pk="years").exists()


# --- Rejected coordinates ---------------------------------------------------


def test_csv_nan_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nan.csv"
    path.write_text("lon,lat\n-48.5,-15.25\n-47.0,NaN\n-46,inf\n", encoding="utf-8")

    message = import_error("nan", path, "--initial-year", "2000")

    assert "has 2 invalid points" in message
    assert "Line 3: latitude 'NaN' is not a finite number." in message
    assert "Line 4: latitude 'inf' is not a finite number." in message
    assert Point.objects.filter(campaign_id="nan").count() == 0
    assert not Campaign.objects.filter(pk="nan").exists()


def test_geojson_nan_rejected(tmp_path: Path) -> None:
    path = tmp_path / "nan.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": ['
        '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}},'
        '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [NaN, 2]}}]}',
        encoding="utf-8",
    )

    message = import_error("nan", path)

    assert "Feature 2 is not valid JSON" in message
    assert "NaN and Infinity are not valid JSON numbers" in message
    assert Point.objects.filter(campaign_id="nan").count() == 0


def test_out_of_range_rejected(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "range.geojson",
        collection(
            feature(point(-48.5, -15.25)),
            feature(point(200.5, 10)),
            feature({"type": "MultiPoint", "coordinates": [[1, 2], [-181, -95]]}),
        ),
    )
    Campaign.objects.create(id="range")
    Point.objects.create(id="1_range", campaign_id="range", lon=0, lat=0)

    message = import_error("range", path)

    assert "Feature 2: longitude 200.5 is outside -180 to 180." in message
    assert "Feature 3, point 2: longitude -181 is outside -180 to 180." in message
    assert "Feature 1" not in message
    assert ids_of("range") == {"1_range"}


def test_swapped_coordinates_rejected(tmp_path: Path) -> None:
    path = tmp_path / "swapped.csv"
    path.write_text("lon,lat\n-48.5,-15.25\n-15.25,-148.5\n10,95\n", encoding="utf-8")

    message = import_error("swapped", path)

    assert "Line 3: longitude '-15.25' and latitude '-148.5' look swapped" in message
    assert "Line 4: longitude '10' and latitude '95' look swapped" in message
    assert Point.objects.filter(campaign_id="swapped").count() == 0


def test_latitude_out_of_range_not_swapped(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "lat.geojson", collection(feature(point(120, 100))))

    message = import_error("lat", path)

    assert "Feature 1: latitude 100 is outside -90 to 90." in message


def test_non_numeric_rejected(tmp_path: Path) -> None:
    path = tmp_path / "text.csv"
    path.write_text("lon,lat\n-48.5,-15.25\n-47,abc\n,-14\n1_0,2\n", encoding="utf-8")

    message = import_error("text", path)

    assert "Line 3: latitude 'abc' is not a number." in message
    assert "Line 4: longitude is missing." in message
    assert "Line 5: longitude '1_0' is not a number." in message
    assert Point.objects.filter(campaign_id="text").count() == 0


def test_geojson_non_numeric_and_bad_geometry(tmp_path: Path) -> None:
    path = write_geojson(
        tmp_path / "bad.geojson",
        collection(
            feature(point("abc", 2)),
            feature(point(True, 2)),
            feature(None),
            feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}),
            feature({"type": "Point", "coordinates": [5]}),
            feature({"type": "MultiPoint", "coordinates": []}),
            {"type": "Feature"},
        ),
    )

    message = import_error("bad", path)

    assert "has 7 invalid points" in message
    assert "Feature 1: longitude 'abc' is not a number." in message
    assert "Feature 2: longitude true is not a number." in message
    assert "Feature 3: the geometry is null." in message
    assert "Feature 4: geometry type 'Polygon' cannot be imported" in message
    assert "Feature 5: coordinates must be [longitude, latitude], found [5]." in message
    assert "Feature 6: the MultiPoint has no positions" in message
    assert "Feature 7: the feature has no geometry member." in message


def test_error_list_truncated_with_total(tmp_path: Path) -> None:
    rows = "".join(f"{index},999\n" for index in range(25))
    path = tmp_path / "many.csv"
    path.write_text("lon,lat\n" + rows, encoding="utf-8")

    message = import_error("many", path)

    assert "has 25 invalid points" in message
    assert "Line 21: latitude '999' is outside -90 to 90." in message
    assert "Line 22:" not in message
    assert "... and 5 more errors." in message


@pytest.mark.parametrize(
    ("raw_lon", "raw_lat", "expected"),
    [
        (-48.5, -15.25, (-48.5, -15.25)),
        ("-48.5", " -15.25 ", (-48.5, -15.25)),
        (180, 90, (180.0, 90.0)),
        (-180, -90, (-180.0, -90.0)),
        (0, 0, (0.0, 0.0)),
    ],
)
def test_validate_position_accepts(raw_lon: object, raw_lat: object, expected: tuple[float, float]) -> None:
    assert validate_position(raw_lon, raw_lat) == expected


@pytest.mark.parametrize(
    ("raw_lon", "raw_lat", "expected"),
    [
        (float("nan"), 0, "longitude nan is not a finite number."),
        (0, float("-inf"), "latitude -inf is not a finite number."),
        ("1e400", 0, "longitude '1e400' is not a finite number."),
        (None, 0, "longitude null is not a number."),
        ([1], 0, "longitude [1] is not a number."),
        (180.0000001, 0, "longitude 180.0000001 is outside -180 to 180."),
        (-10, 90.5, "look swapped"),
        (100, 100, "latitude 100 is outside -90 to 90."),
    ],
)
def test_validate_position_rejects(raw_lon: object, raw_lat: object, expected: str) -> None:
    with pytest.raises(CoordinateError) as raised:
        validate_position(raw_lon, raw_lat)
    assert expected in str(raised.value)


def test_point_index_shapes() -> None:
    assert point_index("12_camp_a", "camp_a") == 12
    assert point_index("x12_camp_a", "camp_a") is None
    assert point_index("12_camp_b", "camp_a") is None
    assert point_index("_camp_a", "camp_a") is None
    assert point_index("1_2_camp_a", "camp_a") is None


# --- Files that cannot be read ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.geojson", "", "is empty."),
        ("blank.csv", "\n  \n", "is empty."),
        ("header.csv", "lon,lat\n", "contains no points."),
        ("nofeatures.geojson", '{"type": "FeatureCollection", "features": []}', "contains no points."),
        ("truncated.geojson", '{"type": "FeatureCollection", "features": [', "it looks truncated"),
        ("broken.geojson", '{"type": "FeatureCollection", "features": [{"a": }]}', "Feature 1 is not valid JSON"),
        ("trailing.geojson", '{"type": "Point", "coordinates": [1, 2]} {}', "more content after its JSON object"),
        ("notype.geojson", '{"features": []}', "has no type"),
        ("list.geojson", "[1, 2]", "must contain one JSON object"),
        ("polygon.geojson", '{"type": "Polygon", "coordinates": []}', "GeoJSON type 'Polygon' cannot be imported"),
        ("points.shp", "lon,lat\n1,2\n", "Cannot tell the format"),
    ],
)
def test_unreadable_file_rejected(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    message = import_error("unreadable", path)

    assert expected in message
    assert not Campaign.objects.filter(pk="unreadable").exists()


def test_missing_file_rejected(tmp_path: Path) -> None:
    message = import_error("missing", tmp_path / "nowhere.geojson")

    assert "does not exist" in message
    assert not Campaign.objects.filter(pk="missing").exists()


def test_format_option_overrides_extension(tmp_path: Path) -> None:
    path = tmp_path / "points.data"
    path.write_text("lat,lon\n-15.25,-48.5\n", encoding="utf-8")

    run_import("fmt", path, "--format", "csv")

    assert points_of("fmt") == [("1_fmt", -48.5, -15.25)]


# --- Real and large files ---------------------------------------------------


def test_real_5000_point_file() -> None:
    folder = os.environ.get(SAMPLE_DATA_ENV)
    if not folder:
        pytest.skip(f"{SAMPLE_DATA_ENV} is not set; point it at the folder that holds points/pontos_aa_5000.geojson")
    path = Path(folder) / "points" / "pontos_aa_5000.geojson"
    features = json.loads(path.read_text(encoding="utf-8"))["features"]

    started = time.perf_counter()
    out = run_import("pontos_aa", path, "--initial-year", "2000", "--final-year", "2020")
    elapsed = time.perf_counter() - started

    assert len(features) == 5000
    assert Point.objects.filter(campaign_id="pontos_aa").count() == 5000
    assert "Imported 5000 points into campaign pontos_aa (ids 1_pontos_aa to 5000_pontos_aa)." in out
    rows = Point.objects.filter(campaign_id="pontos_aa").values_list("id", "lon", "lat")
    stored = {point_id: (lon, lat) for point_id, lon, lat in rows}
    expected = {
        f"{number}_pontos_aa": tuple(feature["geometry"]["coordinates"][:2])
        for number, feature in enumerate(features, start=1)
    }
    assert stored == expected
    assert Point.objects.filter(campaign_id="pontos_aa", cached__isnull=True).count() == 5000
    print(f"imported 5000 points in {elapsed:.2f} s")


@pytest.mark.slow
def test_100000_points_streamed(tmp_path: Path) -> None:
    path = tmp_path / "large.geojson"
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "features": [\n')
        for index in range(100_000):
            separator = "," if index else ""
            lon, lat = -70 + index * 0.0003, -30 + index * 0.0002
            handle.write(
                f'{separator}{{"type": "Feature", "properties": {{"id": "{index}"}}, '
                f'"geometry": {{"type": "Point", "coordinates": [{lon:.7f}, {lat:.7f}]}}}}\n'
            )
        handle.write("]}\n")

    tracemalloc.start()
    try:
        parsed = read_points(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = run_import("large", path)

    assert len(parsed) == 100_000
    # The file is about 12.6 MB. json.load of it peaked near 99 MB under
    # tracemalloc (Python 3.11); read_points near 2.3 MB, of which the
    # coordinate arrays are 1.6 MB.
    assert peak < 8 * 1024 * 1024
    assert Point.objects.filter(campaign_id="large").count() == 100_000
    assert "(ids 1_large to 100000_large)" in out
    last = Point.objects.get(pk="100000_large")
    assert (last.lon, last.lat) == (round(-70 + 99_999 * 0.0003, 7), round(-30 + 99_999 * 0.0002, 7))


def test_read_points_error_type(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")

    with pytest.raises(ImportFileError):
        read_points(path)
