"""The cache API beyond start and status: cancel, clear, single points and estimates."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.models import CachingRun, Campaign, Point, RunState
from campaigns.runs import campaign_plan
from tests.conftest import BOTH_DATABASES, produced_tiles
from tests.fakesources import solid_png
from tiles.grid import point_tiles
from tiles.storage import tile_key, tile_storage, write_tile

pytestmark = pytest.mark.django_db(databases=BOTH_DATABASES)


@pytest.fixture(autouse=True)
def _no_dispatch(monkeypatch):
    from cachecampaign.celery import app
    from campaigns import tasks

    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: None)
    monkeypatch.setattr(app.control, "revoke", lambda *args, **kwargs: None)


def error_of(response) -> dict:
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return body


def store_tiles(point: Point) -> list[str]:
    plan = campaign_plan(Campaign.objects.get(pk=point.campaign_id))
    keys = []
    for address in plan.addresses_for(point.lon, point.lat):
        write_tile(address, solid_png(3, 3, 3))
        keys.append(tile_key(address))
    return keys


def mark_cached(campaign_id: str, *point_ids: str) -> None:
    Point.objects.filter(pk__in=point_ids).update(cached=True, cached_at=timezone.now(), cached_by="x",
                                                  enhance_in_cache=1)
    total = Point.objects.of_campaign(campaign_id).count()
    cached = Point.objects.of_campaign(campaign_id).is_cached().count()
    Campaign.objects.filter(pk=campaign_id).update(
        total_points=total, cached_points=cached, cache_percentage=round(cached * 100 / total, 2),
        all_points_cached=cached == total,
    )


class TestCancel:
    def test_cancel_running_campaign(self, staff_client, make_campaign):
        make_campaign("teste", points=3)
        staff_client.post("/api/cache/campaign/start", {"campaign_id": "teste"}, format="json")
        run = CachingRun.objects.get(campaign_id="teste")

        response = staff_client.post("/api/cache/campaign/teste/cancel")

        assert response.status_code == 200
        run.refresh_from_db()
        assert response.json() == {
            "status": "cancelled",
            "message": "Caching of campaign teste cancelled after 0 of 3 points.",
            "data": {
                "run_id": str(run.id),
                "task_id": run.task_id,
                "group_id": run.group_id,
                "state": "cancelled",
                "batch_size": 5,
                "preset": "seed",
                "tiles_per_point": 3,
                "total_tiles": 9,
                "finished_points": 0,
                "succeeded_points": 0,
                "failed_points": 0,
                "tiles_stored": 0,
                "tiles_skipped": 0,
                "tiles_failed": 0,
            },
        }
        assert Campaign.objects.get(pk="teste").caching_in_progress is False

    def test_cancel_idle_campaign_conflicts(self, staff_client, make_campaign):
        make_campaign("teste", points=1)

        response = staff_client.post("/api/cache/campaign/teste/cancel/")

        assert response.status_code == 409
        assert error_of(response) == {"status": "error", "message": "Campaign teste is not caching.",
                                      "code": "not_caching"}

    def test_cancel_unknown_campaign(self, staff_client):
        response = staff_client.post("/api/cache/campaign/nope/cancel")

        assert response.status_code == 404
        assert error_of(response)["code"] == "campaign_not_found"


class TestClearCampaign:
    def test_clear_keeps_tiles_of_other_campaigns(self, staff_client, make_campaign):
        make_campaign("teste", points=2, spacing=1.0)
        mark_cached("teste", "1_teste", "2_teste")
        own = store_tiles(Point.objects.get(pk="1_teste"))
        shared = store_tiles(Point.objects.get(pk="2_teste"))
        make_campaign("vizinha", points=1, lon=Point.objects.get(pk="2_teste").lon, lat=-25.3)

        response = staff_client.delete("/api/cache/campaign/teste")

        assert response.status_code == 200
        assert response.json() == {
            "status": "success",
            "message": "Cache of campaign teste cleared: 3 tiles deleted, 3 kept for other campaigns, 2 points reset.",
            "data": {
                "campaign_id": "teste",
                "point_id": None,
                "points_reset": 2,
                "points_were_cached": 2,
                "tiles_planned": 6,
                "tiles_deleted": 3,
                "tiles_not_stored": 0,
                "tiles_kept_shared": 3,
                "interrupted": False,
            },
        }
        storage = tile_storage()
        assert not any(storage.exists(key) for key in own)
        assert all(storage.exists(key) for key in shared)
        campaign = Campaign.objects.get(pk="teste")
        assert (campaign.cached_points, campaign.cache_percentage, campaign.all_points_cached) == (0, 0.0, False)
        assert campaign.total_points == 2
        assert campaign.caching_in_progress is False

    def test_clear_covers_tiles_of_an_earlier_runs_preset(self, staff_client, make_campaign):
        make_campaign("teste", points=1)
        point = Point.objects.get(pk="1_teste")
        staff_client.post("/api/cache/campaign/start", {"campaign_id": "teste", "preset": "tvi"}, format="json")
        CachingRun.objects.filter(campaign_id="teste").update(state=RunState.COMPLETED, ended_at=timezone.now())
        Campaign.objects.filter(pk="teste").update(caching_in_progress=False)
        tvi_plan = campaign_plan(Campaign.objects.get(pk="teste"), "tvi")
        for address in tvi_plan.addresses_for(point.lon, point.lat):
            write_tile(address, solid_png(1, 1, 1))

        body = staff_client.delete("/api/cache/campaign/teste").json()

        # The seed preset plans 3 tiles and the earlier run's tvi preset 9 tiles x 2
        # periods. The tvi zoom 13 DRY block contains the seed preset's zoom 13 tile.
        assert body["data"]["tiles_planned"] == 3 + 18 - 1
        assert body["data"]["tiles_deleted"] == 18
        assert body["data"]["tiles_not_stored"] == 2

    def test_clear_while_caching_conflicts(self, staff_client, make_campaign):
        make_campaign("teste", points=1)
        staff_client.post("/api/cache/campaign/start", {"campaign_id": "teste"}, format="json")
        run = CachingRun.objects.get(campaign_id="teste")

        response = staff_client.delete("/api/cache/campaign/teste")

        assert response.status_code == 409
        body = error_of(response)
        assert body["code"] == "already_caching"
        assert body["message"] == "Campaign teste is caching; wait for the run to end or cancel it first."
        assert body["data"]["run_id"] == str(run.id)

    def test_clear_unknown_campaign(self, staff_client):
        response = staff_client.delete("/api/cache/campaign/nope/")

        assert response.status_code == 404
        assert error_of(response)["code"] == "campaign_not_found"

    def test_clear_puts_back_the_last_start_time(self, staff_client, make_campaign):
        make_campaign("teste", points=1)
        started = timezone.now() - timezone.timedelta(days=3)
        Campaign.objects.filter(pk="teste").update(caching_started_at=started)

        staff_client.delete("/api/cache/campaign/teste")

        assert Campaign.objects.get(pk="teste").caching_started_at == started


class TestStartPoint:
    def test_caches_one_point_and_counts_it_once(self, staff_client, make_campaign):
        make_campaign("teste", points=3)
        mark_cached("teste", "1_teste")

        response = staff_client.post("/api/cache/point/start", {"point_id": "2_teste"}, format="json")

        assert response.status_code == 200
        assert response.json() == {
            "status": "completed",
            "message": "Point 2_teste cached: 3 tiles stored, 0 already stored.",
            "data": {
                "status": "completed",
                "point_id": "2_teste",
                "campaign_id": "teste",
                "counted": True,
                "total_tiles": 3,
                "successful_tiles": 3,
                "failed_tiles": 0,
                "stored_tiles": 3,
                "skipped_tiles": 0,
                "error": None,
            },
        }
        point = Point.objects.get(pk="2_teste")
        assert (point.cached, point.cached_by, point.enhance_in_cache) == (True, "api", 1)
        campaign = Campaign.objects.get(pk="teste")
        assert campaign.cached_points == 2
        assert campaign.cache_percentage == 66.67
        assert campaign.caching_in_progress is False
        assert len(produced_tiles()) == 3

        again = staff_client.post("/api/cache/point/start/", {"point_id": "2_teste"}, format="json")

        assert again.json()["status"] == "already_cached"
        assert again.json()["message"] == "Point 2_teste is already cached."
        assert again.json()["data"]["counted"] is False
        assert Campaign.objects.get(pk="teste").cached_points == 2
        assert len(produced_tiles()) == 3

    def test_failed_tile_gives_502(self, staff_client, make_campaign, control_file):
        make_campaign("teste", points=1)
        point = Point.objects.get(pk="1_teste")
        bad_key = tile_key(campaign_plan(Campaign.objects.get(pk="teste")).addresses_for(point.lon, point.lat)[1])
        control_file("fail-keys.txt", bad_key)

        response = staff_client.post("/api/cache/point/start", {"point_id": "1_teste"}, format="json")

        assert response.status_code == 502
        body = error_of(response)
        assert body["code"] == "tiles_failed"
        assert body["message"].startswith("Point 1_teste failed: 1 of 3 tiles failed; first: " + bad_key)
        assert body["data"]["failed_tiles"] == 1
        assert body["data"]["stored_tiles"] == 2
        assert body["data"]["counted"] is False
        assert Point.objects.get(pk="1_teste").cached is not True
        campaign = Campaign.objects.get(pk="teste")
        assert campaign.cached_points == 0
        assert bad_key in campaign.caching_error
        assert campaign.caching_in_progress is False

    def test_rejected_while_campaign_caches(self, staff_client, make_campaign):
        make_campaign("teste", points=2)
        staff_client.post("/api/cache/campaign/start", {"campaign_id": "teste"}, format="json")

        response = staff_client.post("/api/cache/point/start", {"point_id": "1_teste"}, format="json")

        assert response.status_code == 409
        assert error_of(response)["code"] == "already_caching"
        assert produced_tiles() == []

    def test_flag_cleared_midway_gives_409(self, staff_client, make_campaign, monkeypatch, settings):
        from campaigns import holds, single_point
        from campaigns.runs import NoActiveRun, cancel_run

        make_campaign("teste", points=1)
        monkeypatch.setattr(holds, "RENEW_EVERY_SECONDS", 0.0)
        monkeypatch.setattr(single_point, "SEED_CHUNK", 1)
        original = single_point.seed_tiles

        def seed_then_cancel(addresses):
            outcome = original(addresses)
            # An operator cancels while the point is being cached: this clears the held flag.
            with pytest.raises(NoActiveRun):
                cancel_run("teste")
            return outcome

        monkeypatch.setattr(single_point, "seed_tiles", seed_then_cancel)

        response = staff_client.post("/api/cache/point/start", {"point_id": "1_teste"}, format="json")

        assert response.status_code == 409
        assert error_of(response) == {
            "status": "error",
            "message": "Another process cleared the caching flag of campaign teste during this work; try again.",
            "code": "hold_lost",
        }
        assert Point.objects.get(pk="1_teste").cached is not True
        assert Campaign.objects.get(pk="teste").cached_points == 0

    def test_too_many_tiles(self, staff_client, make_campaign, settings):
        settings.CACHE_POINT_MAX_TILES = 2
        make_campaign("teste", points=1)

        response = staff_client.post("/api/cache/point/start", {"point_id": "1_teste"}, format="json")

        assert response.status_code == 400
        assert error_of(response) == {
            "status": "error",
            "message": "Point 1_teste needs 3 tiles, more than the 2 cached within one request; start a run of "
                       "campaign teste instead.",
            "code": "too_many_tiles",
        }

    @pytest.mark.parametrize("body", [{}, {"point_id": ""}, {"point_id": 7}, {"point_id": None}])
    def test_invalid_body(self, staff_client, body):
        response = staff_client.post("/api/cache/point/start", body, format="json")

        assert response.status_code == 400
        assert "point_id" in error_of(response)["errors"]

    def test_unknown_point(self, staff_client):
        response = staff_client.post("/api/cache/point/start", {"point_id": "nope"}, format="json")

        assert response.status_code == 404
        assert error_of(response) == {"status": "error", "message": "Point nope not found.", "code": "point_not_found"}

    def test_uncacheable_campaign(self, staff_client, make_campaign):
        make_campaign("planeta", points=1, image_type="planet")

        response = staff_client.post("/api/cache/point/start", {"point_id": "1_planeta"}, format="json")

        assert response.status_code == 400
        assert error_of(response)["code"] == "invalid_campaign"


class TestPointStatus:
    def test_counts_stored_and_missing_tiles(self, staff_client, make_campaign):
        make_campaign("teste", points=1, final_year=2021)
        point = Point.objects.get(pk="1_teste")
        mark_cached("teste", "1_teste")
        plan = campaign_plan(Campaign.objects.get(pk="teste"))
        for address in plan.addresses_for(point.lon, point.lat)[:4]:
            write_tile(address, solid_png(1, 1, 1))
        point.refresh_from_db()

        response = staff_client.get("/api/cache/point/1_teste/status")

        assert response.status_code == 200
        assert response.json() == {
            "status": "success",
            "message": "Cache status for point 1_teste",
            "data": {
                "point_id": "1_teste",
                "campaign_id": "teste",
                "lon": point.lon,
                "lat": point.lat,
                "cached": True,
                "cached_at": point.cached_at.isoformat().replace("+00:00", "Z"),
                "cached_by": "x",
                "enhance_in_cache": 1,
                "preset": "seed",
                "total_tiles": 6,
                "stored_tiles": 4,
                "missing_tiles": 2,
                "plan_error": None,
            },
        }

    def test_uncacheable_campaign_has_no_counts(self, staff_client, make_campaign):
        make_campaign("planeta", points=1, image_type="planet")

        data = staff_client.get("/api/cache/point/1_planeta/status/").json()["data"]

        assert data["cached"] is False
        assert data["total_tiles"] is None
        assert "planet" in data["plan_error"]

    def test_unknown_point(self, staff_client):
        response = staff_client.get("/api/cache/point/nope/status")

        assert response.status_code == 404
        assert error_of(response)["code"] == "point_not_found"


def lon_sharing_only_zoom_12(lon: float, lat: float) -> float:
    """Return a longitude in the zoom 12 tile of (lon, lat) but outside its zoom 13 tile."""
    import mercantile

    outer = mercantile.bounds(mercantile.tile(lon, lat, 12))
    inner = mercantile.bounds(mercantile.tile(lon, lat, 13))
    margin = (outer.east - outer.west) / 100
    return outer.east - margin if inner.east < outer.east else outer.west + margin


class TestClearPoint:
    def test_clear_cached_point(self, staff_client, make_campaign):
        make_campaign("teste", points=3, spacing=1.0)
        mark_cached("teste", "1_teste", "2_teste")
        keys = store_tiles(Point.objects.get(pk="1_teste"))
        # Point 3 sits in point 1's tile at zoom 12, and in other tiles at zooms 13 and 14.
        p1 = Point.objects.get(pk="1_teste")
        Point.objects.filter(pk="3_teste").update(lon=lon_sharing_only_zoom_12(p1.lon, p1.lat), lat=p1.lat)

        response = staff_client.delete("/api/cache/point/1_teste")

        body = response.json()
        assert response.status_code == 200
        assert body["message"] == "Cache of point 1_teste cleared: 2 tiles deleted, 1 kept for other points."
        assert body["data"]["points_were_cached"] == 1
        assert body["data"]["tiles_kept_shared"] == 1
        storage = tile_storage()
        kept = [key for key in keys if storage.exists(key)]
        assert len(kept) == 1
        assert "/12/" in kept[0]
        point = Point.objects.get(pk="1_teste")
        assert (point.cached, point.cached_at, point.cached_by, point.enhance_in_cache) == (False, None, None, None)
        campaign = Campaign.objects.get(pk="teste")
        assert campaign.cached_points == 1
        assert campaign.cache_percentage == 33.33
        assert campaign.all_points_cached is False

    def test_clear_twice_counts_once(self, staff_client, make_campaign):
        make_campaign("teste", points=2, spacing=1.0)
        mark_cached("teste", "1_teste", "2_teste")

        first = staff_client.delete("/api/cache/point/1_teste").json()
        second = staff_client.delete("/api/cache/point/1_teste/").json()

        assert first["data"]["points_were_cached"] == 1
        assert second["data"]["points_were_cached"] == 0
        assert Campaign.objects.get(pk="teste").cached_points == 1

    def test_clear_point_while_caching_conflicts(self, staff_client, make_campaign):
        make_campaign("teste", points=2)
        staff_client.post("/api/cache/campaign/start", {"campaign_id": "teste"}, format="json")

        response = staff_client.delete("/api/cache/point/1_teste")

        assert response.status_code == 409

    def test_clear_unknown_point(self, staff_client):
        response = staff_client.delete("/api/cache/point/nope")

        assert response.status_code == 404
        assert error_of(response)["code"] == "point_not_found"


class TestEstimate:
    def test_estimate_with_defaults(self, staff_client, make_campaign, settings):
        settings.CACHE_ESTIMATE_TILE_BYTES = 40_000
        settings.CACHE_ESTIMATE_TILES_PER_SECOND = 2.0
        # Four points 0.001 degrees apart share their zoom 12 and 13 tiles.
        make_campaign("teste", points=5, spacing=0.001, cached=1, final_year=2021,
                      vis_params=["landsat-tvi-true", "landsat-tvi-false"])
        not_cached = Point.objects.of_campaign("teste").not_cached()
        cells = {cell for p in not_cached for cell in point_tiles(p.lon, p.lat, (12, 13, 14), 0)}

        response = staff_client.get("/api/cache/campaign/teste/estimate")

        assert response.status_code == 200
        body = response.json()
        unique = len(cells) * 2 * 2
        assert body["message"] == f"Estimate for campaign teste: {unique} tiles to produce for 4 points."
        assert body["data"] == {
            "campaign_id": "teste",
            "layer": "landsat",
            "preset": "seed",
            "years": [2020, 2021],
            "vis_params": ["landsat-tvi-true", "landsat-tvi-false"],
            "points_to_cache": 4,
            "tiles_per_point": 12,
            "total_tiles": 48,
            "unique_tiles": unique,
            "bytes_per_tile": {
                "landsat-tvi-true": {"bytes": 40_000, "source": "default", "sampled_tiles": 0},
                "landsat-tvi-false": {"bytes": 40_000, "source": "default", "sampled_tiles": 0},
            },
            "expected_bytes": unique * 40_000,
            "tiles_per_second": 2.0,
            "throughput_source": "default",
            "throughput_runs": 0,
            "expected_seconds": unique / 2.0,
        }
        assert unique < 48

    def test_estimate_from_storage_and_recent_runs(self, staff_client, make_campaign):
        make_campaign("teste", points=2, spacing=1.0)
        stored = store_tiles(Point.objects.get(pk="1_teste"))
        sizes = [tile_storage().size(key) for key in stored]
        now = timezone.now()
        for stored_tiles, seconds in ((100, 10), (300, 30)):
            CachingRun.objects.create(
                campaign_id="outra", task_id=str(uuid.uuid4()), group_id="g", state=RunState.COMPLETED,
                batch_size=5, preset="seed", tiles_stored=stored_tiles,
                ended_at=now + timezone.timedelta(seconds=seconds),
            )

        data = staff_client.get("/api/cache/campaign/teste/estimate?preset=tvi").json()["data"]

        assert data["preset"] == "tvi"
        assert data["tiles_per_point"] == 18
        assert data["bytes_per_tile"]["landsat-tvi-true"] == {
            "bytes": round(sum(sizes) / len(sizes)), "source": "sampled", "sampled_tiles": 3,
        }
        assert data["throughput_source"] == "recent_runs"
        assert data["throughput_runs"] == 2
        assert data["tiles_per_second"] == pytest.approx(10.0, rel=0.01)

    def test_unknown_preset(self, staff_client, make_campaign):
        make_campaign("teste", points=1)

        response = staff_client.get("/api/cache/campaign/teste/estimate?preset=huge")

        assert response.status_code == 400
        assert "huge" in error_of(response)["message"]

    def test_unknown_campaign(self, staff_client):
        response = staff_client.get("/api/cache/campaign/nope/estimate")

        assert response.status_code == 404

    def test_streams_points(self, staff_client, make_campaign, monkeypatch):
        from campaigns import tile_sets

        make_campaign("teste", points=5)
        seen: list[int] = []
        original = tile_sets.stream_points

        def spy(points):
            for row in original(points):
                seen.append(1)
                yield row

        monkeypatch.setattr("campaigns.estimates.stream_points", spy)

        assert staff_client.get("/api/cache/campaign/teste/estimate").status_code == 200
        assert len(seen) == 5


NEW_ENDPOINTS = [
    ("post", "/api/cache/campaign/teste/cancel", None),
    ("delete", "/api/cache/campaign/teste", None),
    ("get", "/api/cache/campaign/teste/estimate", None),
    ("post", "/api/cache/point/start", {"point_id": "1_teste"}),
    ("get", "/api/cache/point/1_teste/status", None),
    ("delete", "/api/cache/point/1_teste", None),
]


class TestAccess:
    @pytest.mark.parametrize("method,path,body", NEW_ENDPOINTS)
    def test_anonymous_gets_401(self, make_campaign, method, path, body):
        make_campaign("teste", points=1)

        response = getattr(APIClient(), method)(path, body, format="json")

        assert response.status_code == 401
        assert error_of(response)["code"] == "not_authenticated"

    @pytest.mark.parametrize("method,path,body", NEW_ENDPOINTS)
    def test_non_staff_gets_403(self, plain_user, make_campaign, method, path, body):
        make_campaign("teste", points=1)
        mark_cached("teste", "1_teste")
        client = APIClient()
        client.force_authenticate(plain_user)

        response = getattr(client, method)(path, body, format="json")

        assert response.status_code == 403
        assert error_of(response)["code"] == "permission_denied"
        assert Point.objects.get(pk="1_teste").cached is True


def test_schema_lists_new_endpoints(staff_client):
    import yaml

    response = staff_client.get("/api/schema/")
    paths = {path.rstrip("/"): operations for path, operations in yaml.safe_load(response.content)["paths"].items()}

    assert "post" in paths["/api/cache/campaign/{campaign_id}/cancel"]
    assert "delete" in paths["/api/cache/campaign/{campaign_id}"]
    assert "get" in paths["/api/cache/campaign/{campaign_id}/estimate"]
    assert "post" in paths["/api/cache/point/start"]
    assert "get" in paths["/api/cache/point/{point_id}/status"]
    assert "delete" in paths["/api/cache/point/{point_id}"]
