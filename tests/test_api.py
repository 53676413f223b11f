"""The REST API's payloads, validation, status codes and access rules, without a worker."""

from __future__ import annotations

import base64
import time
import uuid

import pytest
from django.test import Client
from django.utils import timezone
from django_celery_results.models import TaskResult
from rest_framework.test import APIClient

from campaigns.models import CachingRun, Campaign
from tests.conftest import BOTH_DATABASES

pytestmark = pytest.mark.django_db(databases=BOTH_DATABASES)

START = "/api/cache/campaign/start"


@pytest.fixture(autouse=True)
def _no_dispatch(monkeypatch):
    """Keep dispatch tasks out of the broker: these tests check the request side only."""
    from campaigns import tasks

    sent: list = []
    monkeypatch.setattr(tasks.dispatch_run, "apply_async", lambda *args, **kwargs: sent.append((args, kwargs)))
    return sent


def error_of(response) -> dict:
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return body


class TestStart:
    def test_start_payload(self, staff_client, make_campaign, django_capture_on_commit_callbacks):
        make_campaign("teste_upload_pontos", points=15, cached=5)

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(START, {"campaign_id": "teste_upload_pontos", "batch_size": 5}, format="json")

        assert response.status_code == 200
        body = response.json()
        run = CachingRun.objects.get(campaign_id="teste_upload_pontos")
        assert body == {
            "status": "scheduled",
            "message": "Scheduled 10 cache tasks",
            "data": {
                "task_id": run.task_id,
                "campaign_id": "teste_upload_pontos",
                "total_points": 15,
                "already_cached": 5,
                "points_to_cache": 10,
                "group_id": run.group_id,
                "run_id": str(run.id),
                "batch_size": 5,
                "preset": "seed",
                "tiles_per_point": 3,
                "total_tiles": 30,
            },
        }
        campaign = Campaign.objects.get(pk="teste_upload_pontos")
        assert campaign.caching_in_progress is True
        assert campaign.total_points == 15
        assert campaign.cached_points == 5
        assert campaign.points_to_cache == 10
        assert campaign.cache_percentage == 33.33
        assert campaign.all_points_cached is False
        assert run.state == "dispatching"
        assert run.batch_size == 5

    def test_start_sends_dispatch_after_commit(self, staff_client, make_campaign, _no_dispatch,
                                               django_capture_on_commit_callbacks):
        make_campaign("teste", points=2)

        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            staff_client.post(START, {"campaign_id": "teste"}, format="json")

        run = CachingRun.objects.get(campaign_id="teste")
        assert len(callbacks) == 1
        assert _no_dispatch == [((), {"args": [str(run.id)], "task_id": run.task_id})]

    def test_default_batch_size_is_five(self, staff_client, make_campaign):
        make_campaign("teste", points=2)

        body = staff_client.post(START, {"campaign_id": "teste"}, format="json").json()

        assert body["data"]["batch_size"] == 5

    def test_tvi_preset(self, staff_client, make_campaign):
        make_campaign("teste", points=2, vis_params=["landsat-tvi-true", "landsat-tvi-false"], final_year=2021)

        body = staff_client.post(START, {"campaign_id": "teste", "preset": "tvi"}, format="json").json()

        # zoom 13, 3x3 block, DRY and WET, 2 years, 2 vis params
        assert body["data"]["preset"] == "tvi"
        assert body["data"]["tiles_per_point"] == 9 * 2 * 2 * 2
        assert body["data"]["total_tiles"] == 9 * 2 * 2 * 2 * 2

    def test_second_start_conflicts(self, staff_client, make_campaign):
        make_campaign("teste", points=2)
        staff_client.post(START, {"campaign_id": "teste"}, format="json")

        response = staff_client.post(START, {"campaign_id": "teste"}, format="json")

        assert response.status_code == 409
        body = error_of(response)
        run = CachingRun.objects.get(campaign_id="teste")
        assert body["code"] == "already_caching"
        assert body["message"] == "Campaign teste is already caching."
        assert body["data"] == {
            "campaign_id": "teste",
            "run_id": str(run.id),
            "task_id": run.task_id,
            "group_id": run.group_id,
        }

    def test_stale_flag_is_taken_over(self, staff_client, make_campaign):
        make_campaign("teste", points=2)
        Campaign.objects.filter(pk="teste").update(
            caching_in_progress=True, caching_started_at=timezone.now() - timezone.timedelta(hours=2)
        )

        response = staff_client.post(START, {"campaign_id": "teste"}, format="json")

        assert response.status_code == 200
        assert CachingRun.objects.filter(campaign_id="teste").count() == 1

    def test_unknown_campaign(self, staff_client):
        response = staff_client.post(START, {"campaign_id": "nope"}, format="json")

        assert response.status_code == 404
        assert error_of(response) == {"status": "error", "message": "Campaign nope not found.",
                                       "code": "campaign_not_found"}

    @pytest.mark.parametrize(
        "batch_size",
        [0, -1, 10**9, "10", None, 2.5, True, [5], {"n": 5}],
        ids=["zero", "negative", "huge", "string", "null", "fraction", "boolean", "list", "object"],
    )
    def test_invalid_batch_size(self, staff_client, make_campaign, batch_size):
        make_campaign("teste", points=2)

        response = staff_client.post(START, {"campaign_id": "teste", "batch_size": batch_size}, format="json")

        assert response.status_code == 400
        body = error_of(response)
        assert body["code"] == "invalid"
        assert "batch_size" in body["errors"]
        assert "batch_size" in body["message"]
        assert CachingRun.objects.count() == 0
        assert Campaign.objects.get(pk="teste").caching_in_progress is False

    @pytest.mark.parametrize("body", [{}, {"campaign_id": ""}, {"campaign_id": 5}, {"campaign_id": None},
                                      {"campaign_id": "x" * 300}])
    def test_invalid_campaign_id(self, staff_client, body):
        response = staff_client.post(START, body, format="json")

        assert response.status_code == 400
        assert "campaign_id" in error_of(response)["errors"]

    def test_malformed_json(self, staff_client):
        response = staff_client.post(START, data='{"campaign_id": ', content_type="application/json")

        assert response.status_code == 400
        assert error_of(response)["code"] == "parse_error"

    @pytest.mark.parametrize("raw", ['["teste"]', '"teste"', "42", "null"])
    def test_non_object_body(self, staff_client, raw):
        response = staff_client.post(START, data=raw, content_type="application/json")

        assert response.status_code == 400
        assert error_of(response)["code"] == "invalid"

    def test_form_body_is_rejected(self, staff_client):
        response = staff_client.post(START, data="campaign_id=teste", content_type="application/x-www-form-urlencoded")

        assert response.status_code == 415
        assert error_of(response)["code"] == "unsupported_media_type"

    def test_uncacheable_campaign(self, staff_client, make_campaign):
        make_campaign("planeta", points=2, image_type="planet")

        response = staff_client.post(START, {"campaign_id": "planeta"}, format="json")

        assert response.status_code == 400
        body = error_of(response)
        assert body["code"] == "invalid_campaign"
        assert "planet" in body["message"]
        assert Campaign.objects.get(pk="planeta").caching_in_progress is False

    def test_campaign_without_years(self, staff_client, make_campaign):
        make_campaign("sem_anos", points=2, initial_year=None)

        response = staff_client.post(START, {"campaign_id": "sem_anos"}, format="json")

        assert response.status_code == 400
        assert "initialYear" in error_of(response)["message"]

    def test_unknown_preset(self, staff_client, make_campaign):
        make_campaign("teste", points=2)

        response = staff_client.post(START, {"campaign_id": "teste", "preset": "huge"}, format="json")

        assert response.status_code == 400
        assert "huge" in error_of(response)["message"]


class TestStatus:
    def test_status_payload(self, staff_client, make_campaign):
        make_campaign("teste", points=4)
        started = timezone.now()
        Campaign.objects.filter(pk="teste").update(
            total_points=15, cached_points=8, cache_percentage=53.33, caching_in_progress=True,
            caching_started_at=started, points_to_cache=10,
        )

        response = staff_client.get("/api/cache/campaign/teste/status")

        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "success"
        assert body["message"] == "Cache status for campaign teste"
        data = body["data"]
        assert data["campaign_id"] == "teste"
        assert data["total_points"] == 15
        assert data["cached_points"] == 8
        assert data["cache_percentage"] == 53.33
        assert data["caching_in_progress"] is True
        assert data["caching_started_at"] == started.isoformat().replace("+00:00", "Z")
        assert data["last_point_cached_at"] is None
        assert data["points_to_cache"] == 10
        assert data["all_points_cached"] is False
        assert data["run"] is None

    def test_status_reads_no_points(self, staff_client, make_campaign, django_assert_max_num_queries):
        make_campaign("teste", points=50)
        staff_client.post(START, {"campaign_id": "teste"}, format="json")

        # The token with its user in one statement, the campaign, its latest
        # run. A field the payload reads but the view does not load adds one.
        with django_assert_max_num_queries(3):
            response = staff_client.get("/api/cache/campaign/teste/status")

        assert response.status_code == 200
        assert response.json()["data"]["run"] is not None

    def test_status_shows_latest_run(self, staff_client, make_campaign):
        make_campaign("teste", points=3)
        CachingRun.objects.create(
            campaign_id="teste", task_id="older-task", group_id="older-group", batch_size=2, preset="tvi",
            state="completed",
        )
        staff_client.post(START, {"campaign_id": "teste", "batch_size": 4}, format="json")
        run = CachingRun.objects.exclude(task_id="older-task").get(campaign_id="teste")
        CachingRun.objects.filter(pk=run.pk).update(
            finished_points=2, succeeded_points=1, failed_points=1, tiles_stored=3, tiles_skipped=1, tiles_failed=2,
        )

        response = staff_client.get("/api/cache/campaign/teste/status")

        assert response.status_code == 200
        assert response.json()["data"]["run"] == {
            "run_id": str(run.id),
            "task_id": run.task_id,
            "group_id": run.group_id,
            "state": "dispatching",
            "batch_size": 4,
            "preset": "seed",
            "tiles_per_point": 3,
            "total_tiles": 9,
            "finished_points": 2,
            "succeeded_points": 1,
            "failed_points": 1,
            "tiles_stored": 3,
            "tiles_skipped": 1,
            "tiles_failed": 2,
        }

    def test_unknown_campaign(self, staff_client):
        response = staff_client.get("/api/cache/campaign/nope/status")

        assert response.status_code == 404
        assert error_of(response)["code"] == "campaign_not_found"

    def test_trailing_slash_accepted(self, staff_client, make_campaign):
        make_campaign("teste", points=1)

        assert staff_client.get("/api/cache/campaign/teste/status/").status_code == 200


class TestTasks:
    def test_status_of_unknown_task(self, staff_client):
        response = staff_client.get(f"/api/tasks/status/{uuid.uuid4()}")

        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"

    def test_status_of_finished_task(self, staff_client):
        task_id = str(uuid.uuid4())
        TaskResult.objects.store_result(
            "application/json", "utf-8", task_id,
            '{"status": "completed", "point_id": "1_teste", "total_tiles": 45, '
            '"successful_tiles": 45, "failed_tiles": 0}',
            "SUCCESS",
        )

        response = staff_client.get(f"/api/tasks/status/{task_id}")

        assert response.status_code == 200
        assert response.json() == {
            "task_id": task_id,
            "state": "SUCCESS",
            "ready": True,
            "successful": True,
            "result": {"status": "completed", "point_id": "1_teste", "total_tiles": 45,
                       "successful_tiles": 45, "failed_tiles": 0},
        }

    def test_status_of_queued_task_of_a_run(self, staff_client, make_campaign):
        make_campaign("teste", points=1)
        staff_client.post(START, {"campaign_id": "teste"}, format="json")
        run = CachingRun.objects.get(campaign_id="teste")

        response = staff_client.get(f"/api/tasks/status/{run.task_id}")

        assert response.status_code == 200
        assert response.json() == {"task_id": run.task_id, "state": "PENDING", "ready": False,
                                   "successful": False, "result": None}

    def test_list_without_workers_is_503_quickly(self, staff_client, settings):
        settings.CELERY_INSPECT_TIMEOUT = 0.5
        began = time.monotonic()

        response = staff_client.get("/api/tasks/list")

        assert response.status_code == 503
        assert time.monotonic() - began < 3.0
        body = error_of(response)
        assert body["code"] == "service_unavailable"
        assert "worker" in body["message"] or "broker" in body["message"]


PROTECTED = [
    ("post", START, {"campaign_id": "teste"}),
    ("get", "/api/cache/campaign/teste/status", None),
    ("get", "/api/tasks/list", None),
    ("get", f"/api/tasks/status/{uuid.uuid4()}", None),
]


class TestAccess:
    @pytest.mark.parametrize("method,path,body", PROTECTED)
    def test_anonymous_gets_401(self, make_campaign, method, path, body):
        make_campaign("teste", points=1)

        response = getattr(APIClient(), method)(path, body, format="json")

        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Basic")
        assert error_of(response)["code"] == "not_authenticated"

    @pytest.mark.parametrize("method,path,body", PROTECTED)
    def test_non_staff_gets_403(self, plain_user, make_campaign, method, path, body):
        make_campaign("teste", points=1)
        client = APIClient()
        client.force_authenticate(plain_user)

        response = getattr(client, method)(path, body, format="json")

        assert response.status_code == 403
        assert error_of(response)["code"] == "permission_denied"
        assert not CachingRun.objects.exists()

    def test_basic_auth(self, staff_user, make_campaign):
        make_campaign("teste", points=1)
        credentials = base64.b64encode(b"operator:s3cret-pass").decode()

        response = Client().get("/api/cache/campaign/teste/status", HTTP_AUTHORIZATION=f"Basic {credentials}")

        assert response.status_code == 200

    def test_wrong_basic_password(self, staff_user):
        credentials = base64.b64encode(b"operator:wrong").decode()

        response = Client().get("/api/cache/campaign/teste/status", HTTP_AUTHORIZATION=f"Basic {credentials}")

        assert response.status_code == 401

    def test_session_auth_needs_csrf(self, staff_user, make_campaign):
        make_campaign("teste", points=1)
        client = Client(enforce_csrf_checks=True)
        client.force_login(staff_user)

        assert client.get("/api/cache/campaign/teste/status").status_code == 200
        response = client.post(START, {"campaign_id": "teste"}, content_type="application/json")
        assert response.status_code == 403
        assert "CSRF" in response.json()["message"]


def test_unknown_api_path_is_json_404(staff_client):
    response = staff_client.get("/api/nothing/here")

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_openapi_schema_lists_endpoints(staff_client):
    response = staff_client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json() if response["Content-Type"].startswith("application/json") else None
    if schema is None:
        import yaml

        schema = yaml.safe_load(response.content)
    paths = set(schema["paths"])
    assert "/api/cache/campaign/start" in {path.rstrip("/") for path in paths} or any(
        path.startswith("/api/cache/campaign/start") for path in paths
    )
    assert any(path.startswith("/api/tasks/status/") for path in paths)
