"""The tile endpoint: hits, misses, validation and error headers."""

from __future__ import annotations

import pytest
from django.test import Client

from campaigns.models import Campaign, Point
from campaigns.runs import campaign_plan
from tests.conftest import BOTH_DATABASES, produced_tiles, wait_for_run_end
from tiles.render import EMPTY_TILE
from tiles.storage import read_tile, tile_storage


def tile_url(address) -> str:
    query = f"period={address.period.value}&year={address.year}&visparam={address.vis_param}"
    if address.month is not None:
        query += f"&month={address.month}"
    return f"/api/layers/{address.layer}/{address.x}/{address.y}/{address.z}?{query}"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)
def test_cached_campaign_is_served_as_hits(celery_worker, staff_client, make_campaign):
    make_campaign("tvi", points=3, spacing=0.2, tile_preset="tvi", final_year=2021)
    staff_client.post("/api/cache/campaign/start", {"campaign_id": "tvi"}, format="json")
    run = wait_for_run_end("tvi")
    assert run.state == "completed"
    plan = campaign_plan(Campaign.objects.get(pk="tvi"))
    addresses = {a for p in Point.objects.of_campaign("tvi") for a in plan.addresses_for(p.lon, p.lat)}
    produced_before = len(produced_tiles())
    client = Client()

    for address in sorted(addresses):
        response = client.get(tile_url(address))
        assert response.status_code == 200, response.content
        assert response["X-Cache"] == "HIT"
        assert response.content == read_tile(address)

    # 3 points x (3x3 block) x (DRY, WET) x 2 years, every one a hit.
    assert len(addresses) == 3 * 9 * 2 * 2
    assert len(produced_tiles()) == produced_before


@pytest.mark.django_db(databases=BOTH_DATABASES)
class TestServing:
    URL = "/api/layers/landsat/2940/4705/13?period=DRY&year=2020&visparam=landsat-tvi-true"

    def test_miss_then_hit(self):
        client = Client()

        first = client.get(self.URL)
        second = client.get(self.URL)

        assert first.status_code == 200
        assert first["X-Cache"] == "MISS"
        assert first["Content-Type"] == "image/png"
        assert first.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert second.status_code == 200
        assert second["X-Cache"] == "HIT"
        assert second.content == first.content
        assert second["ETag"] == first["ETag"]
        assert "max-age=86400" in second["Cache-Control"]
        assert "public" in second["Cache-Control"]
        assert produced_tiles() == ["landsat/landsat-tvi-true/DRY/2020/13/2940/4705.png"]

    def test_etag_revalidation(self):
        client = Client()
        etag = client.get(self.URL)["ETag"]

        response = client.get(self.URL, HTTP_IF_NONE_MATCH=etag)

        assert response.status_code == 304
        assert response.content == b""

    def test_month_ignored_for_dry(self):
        client = Client()
        client.get(self.URL)

        response = client.get(self.URL + "&month=7")

        assert response["X-Cache"] == "HIT"
        assert len(produced_tiles()) == 1

    def test_month_tiles_are_separate(self):
        client = Client()
        base = "/api/layers/landsat/2940/4705/13?period=MONTH&year=2020&visparam=landsat-tvi-true"

        july = client.get(base + "&month=7")
        august = client.get(base + "&month=8")

        assert july["X-Cache"] == "MISS"
        assert august["X-Cache"] == "MISS"
        assert sorted(produced_tiles()) == [
            "landsat/landsat-tvi-true/MONTH/2020-07/13/2940/4705.png",
            "landsat/landsat-tvi-true/MONTH/2020-08/13/2940/4705.png",
        ]

    def test_source_failure_is_a_real_error(self, control_file):
        control_file("fail-keys.txt", "landsat/landsat-tvi-true/DRY/2020/13/2940/4705.png")

        response = Client().get(self.URL)

        assert response.status_code == 502
        assert response["Cache-Control"] == "no-store"
        assert response["X-Error-Reason"] == "source_failed"
        assert "injected failure" in response.json()["message"]
        assert not tile_storage().exists("landsat/landsat-tvi-true/DRY/2020/13/2940/4705.png")

    def test_empty_imagery_is_transparent_200(self, settings, tmp_path):
        from tiles.sources import reset_sources

        settings.TILE_SOURCES = {"landsat": {"kind": "raster", "catalog": str(tmp_path / "none.json")}}
        reset_sources()

        response = Client().get(self.URL)

        assert response.status_code == 200
        assert response.content == EMPTY_TILE

    @pytest.mark.parametrize(
        "path,fragment",
        [
            ("/api/layers/landsat/1/1/23?year=2020", "zoom"),
            ("/api/layers/landsat/1/1/-1?year=2020", "zoom"),
            ("/api/layers/landsat/8192/0/13?year=2020", "x 8192"),
            ("/api/layers/landsat/0/99999999999/13?year=2020", "y"),
            ("/api/layers/planet/0/0/13?year=2020", "layer"),
            ("/api/layers/landsat/0/0/13?year=2020&visparam=tvi-rgb", "vis param"),
            ("/api/layers/landsat/0/0/13?year=2020&visparam=../../etc", "vis param"),
            ("/api/layers/landsat/0/0/13?year=1970", "year"),
            ("/api/layers/landsat/0/0/13?year=abc", "year"),
            ("/api/layers/landsat/0/0/13?year=2020&period=RAINY", "period"),
            ("/api/layers/landsat/0/0/13?year=2020&period=MONTH", "month"),
            ("/api/layers/landsat/0/0/13?year=2020&period=MONTH&month=13", "month"),
            ("/api/layers/landsat/0/0/13", "year"),
            ("/api/layers/landsat/0/0/13?year=2020&layer=x", "query parameter"),
        ],
    )
    def test_invalid_values_are_400(self, path, fragment):
        response = Client().get(path)

        assert response.status_code == 400
        assert response["Cache-Control"] == "no-store"
        assert response["X-Error-Reason"] == "invalid_request"
        assert fragment in response.json()["message"]
        assert produced_tiles() == []

    @pytest.mark.parametrize("path", ["/api/layers/../../etc/passwd", "/api/layers/landsat/0/0/1e3?year=2020",
                                      "/api/layers/LANDSAT%2F..%2F/0/0/13?year=2020"])
    def test_path_like_values_never_match(self, path):
        response = Client().get(path)

        assert response.status_code == 404
        assert produced_tiles() == []

    def test_post_is_not_allowed(self):
        response = Client().post(self.URL)

        assert response.status_code == 405
