"""The campaign, point and run admin: columns, filters, actions, live progress and the tile grid."""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from campaigns.models import CachingRun, Campaign, Point, RunPoint, RunState
from campaigns.runs import campaign_plan
from tests.conftest import BOTH_DATABASES, produced_tiles
from tests.fakesources import solid_png
from tiles.storage import tile_key, tile_storage, write_tile

pytestmark = pytest.mark.django_db(databases=BOTH_DATABASES)

CHANGELIST = "/admin/campaigns/campaign/"
POINTS = "/admin/campaigns/point/"


@pytest.fixture(autouse=True)
def _no_dispatch(monkeypatch):
    """Keep dispatch tasks out of the broker: no worker runs in these tests."""
    from campaigns import tasks

    sent: list = []
    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: sent.append((args, kwargs)))
    return sent


@pytest.fixture
def admin_client(staff_user) -> Client:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


def make_run(campaign_id: str, state: str, **fields) -> CachingRun:
    defaults = {
        "task_id": str(uuid.uuid4()),
        "group_id": str(uuid.uuid4()),
        "batch_size": 5,
        "preset": "seed",
        "plan": campaign_plan(Campaign.objects.get(pk=campaign_id)).as_dict(),
        "tiles_per_point": 3,
        "ended_at": None if state in ("dispatching", "running") else timezone.now(),
    }
    defaults.update(fields)
    return CachingRun.objects.create(campaign_id=campaign_id, state=state, **defaults)


def store_point_tiles(point: Point) -> list[str]:
    """Store every tile of a point's plan and mark it cached; return the keys."""
    plan = campaign_plan(Campaign.objects.get(pk=point.campaign_id))
    keys = []
    for address in plan.addresses_for(point.lon, point.lat):
        write_tile(address, solid_png(10, 20, 30))
        keys.append(tile_key(address))
    Point.objects.filter(pk=point.pk).update(cached=True, cached_at=timezone.now(), cached_by="test", enhance_in_cache=1)
    return keys


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def row_of(html: str, campaign_id: str) -> str:
    match = re.search(rf'<tr[^>]*>(?:(?!</tr>).)*?/campaign/{re.escape(campaign_id)}/change/(?:(?!</tr>).)*</tr>', html, re.S)
    assert match, f"no changelist row for {campaign_id}"
    return match.group(0)


def action(client: Client, name: str, ids: list[str], **extra):
    return client.post(CHANGELIST, {"action": name, "_selected_action": ids, **extra}, follow=True)


class TestCampaignChangelist:
    def test_progress_and_state_columns(self, admin_client, make_campaign):
        make_campaign("ociosa", points=2)
        make_campaign("andamento", points=15)
        Campaign.objects.filter(pk="andamento").update(
            caching_in_progress=True, total_points=15, cached_points=8, cache_percentage=53.33
        )
        make_run("andamento", RunState.RUNNING)
        make_campaign("falhou", points=4)
        Campaign.objects.filter(pk="falhou").update(
            total_points=4, cached_points=3, cache_percentage=75.0, caching_error="Point 2_falhou failed: boom"
        )
        make_run("falhou", RunState.COMPLETED, created_at=timezone.now())
        make_run("falhou", RunState.FAILED)
        make_campaign("cancelada", points=1)
        make_run("cancelada", RunState.CANCELLED)
        make_campaign("pronta", points=2)
        Campaign.objects.filter(pk="pronta").update(total_points=2, cached_points=2, cache_percentage=100.0)
        make_run("pronta", RunState.COMPLETED)

        html = admin_client.get(CHANGELIST).content.decode()

        assert "cc-state-idle" in row_of(html, "ociosa")
        assert "0 / 0 · 0.00 %" in row_of(html, "ociosa")
        andamento = row_of(html, "andamento")
        assert "cc-state-caching" in andamento
        assert "8 / 15 · 53.33 %" in andamento
        assert 'style="width: 53.33%"' in andamento
        falhou = row_of(html, "falhou")
        assert "cc-state-failed" in falhou
        assert "Point 2_falhou failed: boom" in falhou
        assert "cc-state-cancelled" in row_of(html, "cancelada")
        assert "cc-state-completed" in row_of(html, "pronta")
        assert "2 / 2 · 100.00 %" in row_of(html, "pronta")

    def test_changelist_reads_runs_in_one_query(self, admin_client, make_campaign, django_assert_max_num_queries):
        for index in range(10):
            make_campaign(f"c{index}", points=1)
            make_run(f"c{index}", RunState.COMPLETED)

        # session, user, count, page, the runs of the page, filter choices of image types
        with django_assert_max_num_queries(9):
            response = admin_client.get(CHANGELIST)

        assert response.status_code == 200

    @pytest.mark.parametrize(
        "query,expected",
        [
            ("state=idle", {"ociosa"}),
            ("state=caching", {"andamento"}),
            ("state=completed", {"pronta"}),
            ("state=failed", {"falhou"}),
            ("state=cancelled", {"cancelada"}),
            ("in_progress=yes", {"andamento"}),
            ("in_progress=no", {"ociosa", "pronta", "falhou", "cancelada"}),
            ("image_type__exact=sentinel-2", {"pronta"}),
            ("q=falh", {"falhou"}),
        ],
    )
    def test_filters_and_search(self, admin_client, make_campaign, query, expected):
        make_campaign("ociosa", points=1)
        make_campaign("andamento", points=1)
        Campaign.objects.filter(pk="andamento").update(caching_in_progress=True)
        make_run("andamento", RunState.RUNNING)
        make_campaign("pronta", points=1, image_type="sentinel-2", vis_params=["tvi-red"])
        make_run("pronta", RunState.FAILED, created_at=timezone.now() - timezone.timedelta(days=1))
        make_run("pronta", RunState.COMPLETED)
        make_campaign("falhou", points=1)
        make_run("falhou", RunState.FAILED)
        make_campaign("cancelada", points=1)
        make_run("cancelada", RunState.CANCELLED)

        response = admin_client.get(f"{CHANGELIST}?{query}")

        shown = set(response.context["cl"].result_list.values_list("pk", flat=True))
        assert shown == expected


class TestStartAction:
    def test_form_lists_presets(self, admin_client, make_campaign):
        make_campaign("teste", points=2)

        response = admin_client.post(CHANGELIST, {"action": "start_caching", "_selected_action": ["teste"]})

        assert response.status_code == 200
        html = response.content.decode()
        assert 'name="batch_size"' in html
        assert 'value="5"' in html
        assert '<option value="seed">seed</option>' in html
        assert '<option value="tvi">tvi</option>' in html
        assert not CachingRun.objects.exists()

    def test_apply_starts_runs_and_reports_refusals(self, admin_client, make_campaign, staff_user):
        make_campaign("teste", points=3, cached=1)
        make_campaign("planeta", points=2, image_type="planet")
        make_campaign("ocupada", points=2)
        Campaign.objects.filter(pk="ocupada").update(caching_in_progress=True, caching_started_at=timezone.now())

        response = action(
            admin_client, "start_caching", ["teste", "planeta", "ocupada"], apply="yes", batch_size="2", preset="tvi"
        )

        assert response.status_code == 200
        run = CachingRun.objects.get(campaign_id="teste")
        assert run.batch_size == 2
        assert run.preset == "tvi"
        assert run.points_to_cache == 2
        assert run.started_by == f"admin:{staff_user.username}"
        assert not CachingRun.objects.filter(campaign_id__in=["planeta", "ocupada"]).exists()
        shown = messages_of(response)
        assert "Campaign teste: caching started, 2 points to cache." in shown
        assert any(m.startswith("Campaign planeta was not started:") and "planet" in m for m in shown)
        assert "Campaign ocupada was not started: Campaign ocupada is already caching." in shown

    def test_invalid_batch_size_shows_the_form_again(self, admin_client, make_campaign):
        make_campaign("teste", points=2)

        response = admin_client.post(
            CHANGELIST,
            {"action": "start_caching", "_selected_action": ["teste"], "apply": "yes", "batch_size": "0", "preset": ""},
        )

        assert response.status_code == 200
        assert "errorlist" in response.content.decode()
        assert not CachingRun.objects.exists()

    def test_nothing_to_cache_message(self, admin_client, make_campaign):
        make_campaign("cheia", points=2, cached=2)

        response = action(admin_client, "start_caching", ["cheia"], apply="yes", batch_size="5", preset="")

        assert messages_of(response) == ["Campaign cheia: nothing to cache, every point is already cached."]


class TestCancelAndRecache:
    def test_cancel_action(self, admin_client, make_campaign, monkeypatch):
        from cachecampaign.celery import app

        monkeypatch.setattr(app.control, "revoke", lambda *args, **kwargs: None)
        make_campaign("teste", points=3)
        make_campaign("parada", points=1)
        action(admin_client, "start_caching", ["teste"], apply="yes", batch_size="5", preset="")

        response = action(admin_client, "cancel_caching", ["teste", "parada"])

        assert CachingRun.objects.get(campaign_id="teste").state == RunState.CANCELLED
        assert Campaign.objects.get(pk="teste").caching_in_progress is False
        # The admin acts on campaigns in id order.
        assert messages_of(response) == [
            "Campaign parada is not caching; nothing to cancel.",
            "Campaign teste: caching cancelled after 0 of 3 points.",
        ]

    def test_recache_failed_points(self, admin_client, make_campaign):
        make_campaign("falha", points=5, cached=3)
        make_run("falha", RunState.FAILED, failed_points=2, succeeded_points=3, points_to_cache=5)
        make_campaign("cheia", points=2, cached=2)

        response = action(admin_client, "recache_failed", ["falha", "cheia"])

        run = CachingRun.objects.of_campaign("falha").first()
        assert run.state == RunState.DISPATCHING
        assert run.points_to_cache == 2
        assert messages_of(response) == [
            "Campaign cheia: no failed point to re-cache, every point is cached.",
            "Campaign falha: re-caching 2 points that are not cached (2 failed in the last run).",
        ]


class TestClearAction:
    def test_confirmation_page_changes_nothing(self, admin_client, make_campaign):
        make_campaign("teste", points=2)
        keys = store_point_tiles(Point.objects.get(pk="1_teste"))

        response = admin_client.post(CHANGELIST, {"action": "clear_cache", "_selected_action": ["teste"]})

        html = response.content.decode()
        assert response.status_code == 200
        assert 'name="confirm" value="yes"' in html
        assert "Tiles that points of other campaigns also need are kept." in html
        assert all(tile_storage().exists(key) for key in keys)
        assert Point.objects.get(pk="1_teste").cached is True

    def test_clear_deletes_tiles_not_shared(self, admin_client, make_campaign):
        make_campaign("teste", points=2, spacing=1.0)
        Campaign.objects.filter(pk="teste").update(total_points=2, cached_points=2, cache_percentage=100.0,
                                                   all_points_cached=True)
        own = store_point_tiles(Point.objects.get(pk="1_teste"))
        shared = store_point_tiles(Point.objects.get(pk="2_teste"))
        # Another campaign has a point in the same tiles as 2_teste.
        make_campaign("vizinha", points=1, lon=Point.objects.get(pk="2_teste").lon + 0.0001, lat=-25.3)

        response = action(admin_client, "clear_cache", ["teste"], confirm="yes")

        storage = tile_storage()
        assert [key for key in own if storage.exists(key)] == []
        assert all(storage.exists(key) for key in shared)
        assert messages_of(response) == [
            "Campaign teste cleared: 3 tiles deleted, 3 kept because other campaigns need them; "
            "2 points reset to not cached."
        ]
        points = Point.objects.of_campaign("teste")
        assert {(p.cached, p.cached_at, p.cached_by, p.enhance_in_cache) for p in points} == {(False, None, None, None)}
        campaign = Campaign.objects.get(pk="teste")
        assert campaign.cached_points == 0
        assert campaign.cache_percentage == 0.0
        assert campaign.all_points_cached is False
        assert campaign.caching_in_progress is False

    def test_caching_campaign_is_not_cleared(self, admin_client, make_campaign):
        make_campaign("teste", points=1)
        keys = store_point_tiles(Point.objects.get(pk="1_teste"))
        Campaign.objects.filter(pk="teste").update(caching_in_progress=True, caching_started_at=timezone.now())
        make_run("teste", RunState.RUNNING)

        response = action(admin_client, "clear_cache", ["teste"], confirm="yes")

        assert messages_of(response) == ["Campaign teste is caching and was not cleared; cancel the run first."]
        assert all(tile_storage().exists(key) for key in keys)
        assert Point.objects.get(pk="1_teste").cached is True


class TestAccess:
    def test_anonymous_is_sent_to_login(self, make_campaign):
        make_campaign("teste", points=1)

        for url in (CHANGELIST, f"{CHANGELIST}teste/change/", f"{CHANGELIST}teste/progress/", POINTS):
            response = Client().get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url

    def test_non_staff_is_sent_to_login(self, plain_user, make_campaign):
        make_campaign("teste", points=1)
        client = Client()
        client.force_login(plain_user)

        response = client.post(CHANGELIST, {"action": "start_caching", "_selected_action": ["teste"], "apply": "yes",
                                            "batch_size": "5", "preset": ""})

        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
        assert not CachingRun.objects.exists()

    def test_staff_without_permission_gets_403(self, staff_user, make_campaign):
        make_campaign("teste", points=1)
        client = Client()
        client.force_login(staff_user)

        assert client.get(CHANGELIST).status_code == 403
        assert client.get(f"{CHANGELIST}teste/progress/").status_code == 404

    def test_action_post_needs_csrf(self, staff_user, make_campaign):
        staff_user.is_superuser = True
        staff_user.save()
        make_campaign("teste", points=1)
        client = Client(enforce_csrf_checks=True)
        client.force_login(staff_user)
        form = {"action": "start_caching", "_selected_action": ["teste"], "apply": "yes", "batch_size": "5",
                "preset": ""}

        rejected = client.post(CHANGELIST, form)
        assert rejected.status_code == 403
        assert not CachingRun.objects.exists()

        client.get(CHANGELIST)
        token = client.cookies["csrftoken"].value
        accepted = client.post(CHANGELIST, {**form, "csrfmiddlewaretoken": token})
        assert accepted.status_code == 302
        assert CachingRun.objects.filter(campaign_id="teste").count() == 1


class TestCampaignChangePage:
    def test_run_history_and_progress_panel(self, admin_client, make_campaign):
        make_campaign("teste", points=4)
        Campaign.objects.filter(pk="teste").update(
            caching_in_progress=True, total_points=4, cached_points=1, cache_percentage=25.0
        )
        make_run(
            "teste", RunState.FAILED, failed_points=1, succeeded_points=2, tiles_stored=6, last_error="Point 3 failed",
            created_at=timezone.now() - timezone.timedelta(hours=1),
        )
        make_run("teste", RunState.RUNNING, finished_points=1, succeeded_points=1, points_to_cache=3)

        response = admin_client.get(f"{CHANGELIST}teste/change/")

        html = response.content.decode()
        assert response.status_code == 200
        assert html.count('class="cc-run cc-run-') == 2
        assert "cc-run-failed" in html
        assert "Point 3 failed" in html
        assert 'id="campaign-progress"' in html
        assert 'data-in-progress="true"' in html
        assert 'data-url="/admin/campaigns/campaign/teste/progress/"' in html
        assert "campaigns/admin/campaign_progress.js" in html
        assert "1 of 4 points cached" in html

    def test_progress_endpoint(self, admin_client, make_campaign):
        make_campaign("teste", points=15)
        Campaign.objects.filter(pk="teste").update(
            caching_in_progress=True, total_points=15, cached_points=8, cache_percentage=53.33
        )
        run = make_run("teste", RunState.RUNNING, finished_points=8, succeeded_points=8, points_to_cache=15,
                       tiles_stored=24)

        data = admin_client.get(f"{CHANGELIST}teste/progress/").json()

        assert data["campaign_id"] == "teste"
        assert data["caching_in_progress"] is True
        assert data["state"] == "caching"
        assert data["cached_points"] == 8
        assert data["total_points"] == 15
        assert data["bar_width"] == "53.33"
        assert data["percentage_display"] == "53.33 %"
        assert data["points_display"] == "8 of 15 points cached"
        assert data["run"]["run_id"] == str(run.id)
        assert data["run"]["points_display"] == "8 of 15 points finished, 0 failed"
        assert data["run"]["tiles_display"] == "24 tiles stored, 0 already stored, 0 failed"

    def test_progress_endpoint_of_unknown_campaign(self, admin_client):
        assert admin_client.get(f"{CHANGELIST}nope/progress/").status_code == 404


class TestRunAdmin:
    def test_runs_are_read_only(self, admin_client, make_campaign):
        make_campaign("teste", points=2)
        run = make_run("teste", RunState.FAILED, failed_points=1, last_error="Point 1_teste failed: x")
        RunPoint.objects.create(run=run, point_id="1_teste", state="failed", error="injected failure")

        listing = admin_client.get("/admin/campaigns/cachingrun/")
        page = admin_client.get(f"/admin/campaigns/cachingrun/{run.pk}/change/")

        assert listing.status_code == 200
        assert "teste" in listing.content.decode()
        html = page.content.decode()
        assert page.status_code == 200
        assert 'name="_save"' not in html
        assert "injected failure" in html
        assert "layer landsat, years 2020" in html
        assert admin_client.get("/admin/campaigns/cachingrun/add/").status_code == 403
        assert admin_client.post(f"/admin/campaigns/cachingrun/{run.pk}/delete/").status_code == 403


class TestPointAdmin:
    @pytest.mark.parametrize("query,expected", [
        ("cached=yes", {"1_teste", "2_teste"}),
        ("cached=no", {"3_teste", "1_outra"}),
        ("campaign__id__exact=outra", {"1_outra"}),
        ("q=3_te", {"3_teste"}),
    ])
    def test_filters_and_search(self, admin_client, make_campaign, query, expected):
        make_campaign("teste", points=3, cached=2)
        make_campaign("outra", points=1)
        Point.objects.filter(pk="1_outra").update(cached=False)

        response = admin_client.get(f"{POINTS}?{query}")

        assert set(response.context["cl"].result_list.values_list("pk", flat=True)) == expected

    def test_tile_grid_shows_stored_and_missing(self, admin_client, make_campaign):
        make_campaign("teste", points=1, final_year=2021, vis_params=["landsat-tvi-true", "landsat-tvi-false"])
        point = Point.objects.get(pk="1_teste")
        plan = campaign_plan(Campaign.objects.get(pk="teste"))
        stored = [a for a in plan.addresses_for(point.lon, point.lat) if a.z == 13 and a.year == 2020]
        for address in stored:
            write_tile(address, solid_png(1, 2, 3))

        response = admin_client.get(f"{POINTS}1_teste/change/?zoom=13")

        html = response.content.decode()
        grid = html[html.index('id="tile-grid"'):]
        # 2 years x 2 vis params at zoom 13 with the seed preset: 2020 stored, 2021 missing.
        assert grid.count("<img ") == 2
        assert grid.count("cc-tile-missing") == 2
        assert '<option value="13" selected>' in grid
        for address in stored:
            assert tile_key(address) in grid
        assert produced_tiles() == []

    def test_zoom_select_changes_the_grid(self, admin_client, make_campaign):
        make_campaign("teste", points=1)
        point = Point.objects.get(pk="1_teste")

        html = admin_client.get(f"{POINTS}1_teste/change/?zoom=14").content.decode()

        from tiles.grid import center_tile

        x, y = center_tile(point.lon, point.lat, 14)
        assert f"/14/{x}/{y}.png" in html
        assert "cc-tile-missing" in html

    def test_tile_view_reads_storage_and_never_renders(self, admin_client, make_campaign):
        make_campaign("teste", points=1)
        point = Point.objects.get(pk="1_teste")
        address = campaign_plan(Campaign.objects.get(pk="teste")).addresses_for(point.lon, point.lat)[0]
        write_tile(address, solid_png(9, 9, 9))
        url = f"{POINTS}tile/landsat/{address.x}/{address.y}/{address.z}/?period=DRY&year=2020&visparam=landsat-tvi-true"
        missing = f"{POINTS}tile/landsat/{address.x}/{address.y}/{address.z}/?period=WET&year=2020&visparam=landsat-tvi-true"

        hit = admin_client.get(url)
        miss = admin_client.get(missing)

        assert hit.status_code == 200
        assert hit["Content-Type"] == "image/png"
        assert hit.content == solid_png(9, 9, 9)
        assert miss.status_code == 404
        assert produced_tiles() == []
        assert Client().get(url).status_code == 302
