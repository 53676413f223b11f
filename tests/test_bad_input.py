"""Careless and hostile input never produces a 5xx, a run, or a file outside the tile store.

Part one feeds the OpenAPI schema at /api/schema/ to schemathesis, which
generates valid and invalid requests for every operation and sends them to
the WSGI application in this process with a staff token. Part two lists
cases the generator rarely reaches: malformed JSON, boundary batch sizes,
odd campaign ids, coordinates on the edge of WGS84 and hostile tile URLs.
The API cases extend tests/test_api.py and tests/test_tile_endpoint.py
without repeating them.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from campaigns.models import CachingRun, Campaign, Point
from campaigns.runs import campaign_plan
from tests.conftest import BOTH_DATABASES, VAR_DIR, produced_tiles
from tests.tileaudit import audit_tiles

pytestmark = pytest.mark.django_db(databases=BOTH_DATABASES)

START = "/api/cache/campaign/start"
# Generated cases per operation and generation mode; tasks/list takes no input, so it gets few.
EXAMPLES_PER_MODE = 55
EXAMPLES_WITHOUT_INPUT = 5
EXAMPLES_WITH_KNOWN_IDS = 15
CASE_DEADLINE = timedelta(seconds=5)
MINIMUM_CASES = 1000
KNOWN_IDS = {"campaign_id": "teste", "point_id": "1_teste"}


@pytest.fixture
def no_dispatch(monkeypatch):
    from campaigns import tasks

    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)


def error_body(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    assert body["status"] == "error"
    assert body["message"]
    assert body["code"]
    return body


# --- Generated cases ---------------------------------------------------------


@pytest.fixture
def wsgi_application():
    """The WSGI application, with requests kept on the test's database connection.

    Django's test client stops request signals from closing the connection.
    A raw WSGI call would close the connection that runs the test's
    transaction, so the fixture does the same for the duration of the test.
    """
    from django.core import signals
    from django.db import close_old_connections

    from cachecampaign.wsgi import application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield application
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.slow
@pytest.mark.worker
def test_generated_requests_get_no_5xx(celery_worker, wsgi_application, staff_user, make_campaign, no_dispatch,
                                       capsys):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hypothesis_settings
    from rest_framework.authtoken.models import Token
    from schemathesis import GenerationMode

    make_campaign("teste", points=3, cached=1)
    headers = {"Authorization": f"Token {Token.objects.create(user=staff_user).key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_application, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    cases: Counter = Counter()
    statuses: Counter = Counter()
    failures: list[str] = []

    def exercise(operation, strategy, examples: int, label: str) -> None:
        @hypothesis_settings(max_examples=examples, deadline=CASE_DEADLINE, database=None, derandomize=True,
                             phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def send(case) -> None:
            response = case.call(headers=headers)
            cases[label] += 1
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {case.as_curl_command(headers=headers)}")
            # schemathesis keeps response headers with lowercase names and a list of values each.
            elif response.status_code >= 400 and not response.headers.get("content-type", [""])[0].startswith(
                    "application/json"):
                failures.append(f"{response.status_code} without a JSON body: {case.as_curl_command()}")

        send()

    began = time.monotonic()
    for operation in operations:
        has_input = bool(operation.path_parameters or operation.query or operation.body)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            examples = EXAMPLES_PER_MODE if has_input else EXAMPLES_WITHOUT_INPUT
            exercise(operation, operation.as_strategy(generation_mode=mode), examples,
                     f"{operation.method.upper()} {operation.path} {mode.value}")
        known = {name: KNOWN_IDS[name] for name in KNOWN_IDS if name in operation.path}
        if known:
            exercise(operation, operation.as_strategy(path_parameters=known), EXAMPLES_WITH_KNOWN_IDS,
                     f"{operation.method.upper()} {operation.path} known ids")
    elapsed = time.monotonic() - began

    total = sum(cases.values())
    with capsys.disabled():
        print(f"\nschemathesis: {total} generated requests on {len(operations)} operations in {elapsed:.0f} s; "
              f"status codes {dict(sorted(statuses.items()))}")
    assert len(operations) >= 10
    assert total >= MINIMUM_CASES
    assert failures == []
    assert not any(status >= 500 for status in statuses)
    assert statuses[200] > 0


# --- JSON bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,code",
    [
        ("[" * 100_000 + "]" * 100_000, "parse_error"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, "parse_error"),
        ('{"campaign_id": "teste", "batch_size": NaN}', "parse_error"),
        ('{"campaign_id": "teste", "batch_size": Infinity}', "parse_error"),
        ('{"campaign_id": "teste", "batch_size": -Infinity}', "parse_error"),
        ('{"campaign_id": "teste", "batch_size": 1e309}', "invalid"),
        ('{"campaign_id": "teste", "batch_size": ' + "9" * 5000 + "}", "parse_error"),
        ('{"campaign_id": "teste"} trailing', "parse_error"),
        (b'{"campaign_id": "\xff\xfe"}', "parse_error"),
        ('{"campaign_id": "te\\u0000ste"}', "invalid"),
        ('{"campaign_id": "\\ud800"}', "invalid"),
        ("true", "invalid"),
        ("1.5", "invalid"),
        ('[{"campaign_id": "teste"}]', "invalid"),
        ("", "invalid"),
        ("   ", "parse_error"),
    ],
    ids=["deep-array", "deep-object", "nan", "infinity", "minus-infinity", "overflowing-float", "5000-digits",
         "trailing-text", "invalid-utf8", "nul-in-id", "lone-surrogate", "true", "float", "list-of-objects",
         "empty", "blank"],
)
def test_malformed_json_is_400(staff_client, make_campaign, no_dispatch, raw, code):
    make_campaign("teste", points=2)

    response = staff_client.generic("POST", START, raw, content_type="application/json")

    assert response.status_code == 400
    assert error_body(response)["code"] == code
    assert not CachingRun.objects.exists()
    assert Campaign.objects.get(pk="teste").caching_in_progress is False


def test_oversized_body_is_json_400(staff_client, make_campaign, no_dispatch):
    make_campaign("teste", points=2)
    raw = json.dumps({"campaign_id": "a" * 3_000_000})

    response = staff_client.generic("POST", START, raw, content_type="application/json")

    assert response.status_code == 400
    assert error_body(response)["code"] == "bad_request"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"campaign_id": True}, "campaign_id"),
        ({"campaign_id": []}, "campaign_id"),
        ({"campaign_id": {"id": "teste"}}, "campaign_id"),
        ({"campaign_id": 1.5}, "campaign_id"),
        ({"campaign_id": "teste", "preset": 5}, "preset"),
        ({"campaign_id": "teste", "preset": ["tvi"]}, "preset"),
        ({"campaign_id": "teste", "preset": None}, "preset"),
        ({"campaign_id": "teste", "batch_size": 1001}, "batch_size"),
        ({"campaign_id": "teste", "batch_size": 10**30}, "batch_size"),
        ({"campaign_id": "teste", "batch_size": -0}, "batch_size"),
        ({"campaign_id": "teste", "batch_size": "5 "}, "batch_size"),
        ({"campaign_id": "teste", "batch_size": 5.5}, "batch_size"),
    ],
)
def test_wrong_types_are_400(staff_client, make_campaign, no_dispatch, body, field):
    make_campaign("teste", points=2)

    response = staff_client.post(START, body, format="json")

    assert response.status_code == 400
    error = error_body(response)
    assert error["code"] == "invalid"
    assert field in error["errors"]
    assert not CachingRun.objects.exists()


@pytest.mark.parametrize("raw,expected", [("1", 1), ("1000", 1000), ("5.0", 5), ("1e3", 1000)])
def test_boundary_batch_sizes_accepted(staff_client, make_campaign, no_dispatch, raw, expected):
    make_campaign("teste", points=2)

    response = staff_client.generic("POST", START, f'{{"campaign_id": "teste", "batch_size": {raw}}}',
                                    content_type="application/json")

    assert response.status_code == 200, response.json()
    assert response.json()["data"]["batch_size"] == expected
    assert CachingRun.objects.get(campaign_id="teste").batch_size == expected


@pytest.mark.parametrize("campaign_id", [" ", "teste ", "TESTE", "ção", "a/b", "../teste", "x" * 255, "%00"])
def test_unknown_campaign_ids_are_404(staff_client, make_campaign, no_dispatch, campaign_id):
    make_campaign("teste", points=2)

    response = staff_client.post(START, {"campaign_id": campaign_id}, format="json")

    assert response.status_code == 404
    assert error_body(response)["code"] == "campaign_not_found"
    assert not CachingRun.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/cache/campaign/%00/status",
        "/api/cache/campaign/te%00ste/status",
        "/api/cache/campaign/%00/estimate",
        "/api/cache/campaign/%00/cancel",
        "/api/cache/point/%00/status",
        "/api/tasks/status/%00",
        "/api/cache/campaign/%C3%A7%C3%A3o/status",
        "/api/cache/campaign/%ED%A0%80/status",
        "/api/cache/campaign/" + "x" * 5000 + "/status",
        "/api/tasks/status/" + "f" * 5000,
    ],
)
def test_odd_path_ids_are_404(staff_client, make_campaign, path):
    make_campaign("teste", points=2)

    response = staff_client.post(path) if path.endswith("/cancel") else staff_client.get(path)

    assert response.status_code == 404
    assert error_body(response)["code"] in ("not_found", "campaign_not_found", "point_not_found")


# --- Coordinates at import ---------------------------------------------------


def import_points(campaign_id: str, path: Path) -> str:
    output = StringIO()
    call_command("import_points", campaign_id, str(path), initial_year=2020, final_year=2020,
                 vis_params="landsat-tvi-true", stdout=output)
    return output.getvalue()


BOUNDARY_POSITIONS = [(180, 90), (-180, -90), (180, -90), (-180, 90), (0, 90), (0, -90), (180, 0), (-180, 0)]


@pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
@pytest.mark.parametrize("suffix", [".csv", ".geojson"])
def test_boundary_coordinates_accepted(tmp_path, suffix):
    path = tmp_path / f"edge{suffix}"
    if suffix == ".csv":
        path.write_text("lon,lat\n" + "".join(f"{lon},{lat}\n" for lon, lat in BOUNDARY_POSITIONS))
    else:
        features = [{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [lon, lat]}}
                    for lon, lat in BOUNDARY_POSITIONS]
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))

    import_points("borda", path)

    stored = sorted(Point.objects.of_campaign("borda").values_list("lon", "lat"))
    assert stored == sorted((float(lon), float(lat)) for lon, lat in BOUNDARY_POSITIONS)
    plan = campaign_plan(Campaign.objects.get(pk="borda"))
    for lon, lat in stored:
        for address in plan.addresses_for(lon, lat):
            limit = 2 ** address.z
            assert 0 <= address.x < limit, (lon, lat, address)
            assert 0 <= address.y < limit, (lon, lat, address)


@pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
@pytest.mark.parametrize(
    "lon,lat,fragment",
    [
        ("0", "90.0001", "90.0001"),
        ("0", "-90.0001", "-90.0001"),
        ("180.0001", "0", "longitude '180.0001' is outside -180 to 180."),
        ("-180.0001", "0", "longitude '-180.0001' is outside -180 to 180."),
        ("-180.0001", "90.0001", "-180.0001"),
        ("nan", "0", "not a finite number"),
        ("0", "-inf", "not a finite number"),
    ],
)
def test_out_of_range_coordinates_rejected(tmp_path, lon, lat, fragment):
    path = tmp_path / "outside.csv"
    path.write_text(f"lon,lat\n-48.5,-15.25\n{lon},{lat}\n")

    with pytest.raises(CommandError) as raised:
        import_points("fora", path)

    assert "Line 3:" in str(raised.value)
    assert fragment in str(raised.value)
    assert Point.objects.filter(campaign_id="fora").count() == 0


# --- Tile URLs ---------------------------------------------------------------


TILE = "/api/layers/landsat/2940/4705/13"
QUERY = "period=DRY&year=2020&visparam=landsat-tvi-true"
CANONICAL_KEY = re.compile(r"^[a-z0-9-]+/[a-z0-9-]+/(DRY|WET|MONTH)/\d{4}(-\d{2})?/\d{1,2}/\d{1,7}/\d{1,7}\.png$")


@pytest.mark.parametrize(
    "url,status",
    [
        ("/api/layers/landsat/0/0/999?year=2020", 400),
        ("/api/layers/landsat/0/0/22?year=2020", 200),
        ("/api/layers/landsat/4194304/0/22?year=2020", 400),
        ("/api/layers/landsat/999999999999/999999999999/22?year=2020", 400),
        ("/api/layers/landsat/-0/-0/0?year=2020", 200),
        ("/api/layers/landsat/0/0/-0?year=2020", 200),
        ("/api/layers/sentinel-3/0/0/13?year=2020", 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=%00", 400),
        ("/api/layers/landsat/0/0/13?year=20%0020", 400),
        ("/api/layers/landsat/0/0/13?year=2020&period=MONTH&month=%00", 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=" + "a" * 10_000, 400),
        ("/api/layers/landsat/0/0/13?year=" + "9" * 5000, 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=%252e%252e%252f", 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=landsat-tvi-true%2F..%2F..", 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=..%5C..%5Cwindows", 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=%C3%A7%C3%A3o", 400),
        ("/api/layers/landsat/0/0/13?year=2020&visparam=%F0%9F%97%BA", 400),
        ("/api/layers/landsat/0/0/13?year=2020&period=%2e%2e", 400),
        ("/api/layers/landsat/0/0/13?year=-2020", 400),
        ("/api/layers/landsat%00/0/0/13?year=2020", 404),
        ("/api/layers/%2e%2e/0/0/13?year=2020", 404),
        ("/api/layers/..%2f..%2fetc/0/0/13?year=2020", 404),
        ("/api/layers/landsat/0%2f..%2f/0/13?year=2020", 404),
        ("/api/layers/landsat/0/0/13%00?year=2020", 404),
        ("/api/layers/landsat/0/0/13.png.tmp?year=2020", 404),
        ("/api/layers/landsat/0/0/0x0d?year=2020", 404),
        ("/api/layers/" + "l" * 41 + "/0/0/13?year=2020", 404),
        ("/api/layers/landsat/0/0/13?year=2020&callback=x", 400),
    ],
)
def test_hostile_tile_urls(url, status):
    response = Client(raise_request_exception=False).get(url)

    assert response.status_code == status, response.content[:300]
    if status == 400:
        assert response["Cache-Control"] == "no-store"
        assert response["X-Error-Reason"] == "invalid_request"
        assert error_body(response)["code"] == "invalid_request"
    audit = audit_tiles(VAR_DIR / "tiles")
    stored = [path.relative_to(VAR_DIR / "tiles").as_posix() for path in audit.tiles]
    assert [key for key in stored if not CANONICAL_KEY.match(key)] == []
    assert audit.other_files == []
    assert len(produced_tiles()) == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    "url,canonical",
    [
        ("/api/layers/landsat/%D9%A3/%D9%A3/%D9%A3?year=2020", "/api/layers/landsat/3/3/3?year=2020"),
        ("/api/layers/landsat/0/0/0?year=%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%90", "/api/layers/landsat/0/0/0?year=2020"),
        ("/api/layers/landsat/0/0/013?year=2020", "/api/layers/landsat/0/0/13?year=2020"),
    ],
    ids=["arabic-indic-digits", "fullwidth-year", "leading-zero"],
)
def test_non_ascii_digits_name_the_canonical_tile(url, canonical):
    """Unicode digits are digits to Python's int(); they must never reach a tile key as such."""
    client = Client(raise_request_exception=False)

    response = client.get(url)

    assert response.status_code in (200, 400, 404)
    if response.status_code == 200:
        assert response.content == client.get(canonical).content
        assert client.get(canonical)["X-Cache"] == "HIT"
    stored = [path.relative_to(VAR_DIR / "tiles").as_posix() for path in audit_tiles(VAR_DIR / "tiles").tiles]
    assert all(key.isascii() and CANONICAL_KEY.match(key) for key in stored)
    assert len(stored) <= 1


def test_valid_tile_still_served():
    response = Client().get(f"{TILE}?{QUERY}")

    assert response.status_code == 200
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("path", ["/admin/campaigns/campaign/te%00ste/change/",
                                  "/admin/campaigns/campaign/te%00ste/progress/",
                                  "/admin/campaigns/point/1%00/change/"])
def test_admin_nul_in_object_id(admin_client, make_campaign, path):
    make_campaign("teste", points=1)
    admin_client.raise_request_exception = False

    response = admin_client.get(path)

    assert response.status_code in (302, 404)
