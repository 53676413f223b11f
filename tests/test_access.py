"""Who may start, cancel and clear caching: every management endpoint needs a staff user.

The URLconf is walked, so an endpoint added later is covered without
editing this file. Public by decision: the tile endpoint
``/api/layers/...`` (TVI's map requests it without credentials), and the
OpenAPI schema ``/api/schema/`` and its Swagger page ``/api/docs/``, which
describe the API and contain no data. They accept only GET and HEAD.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from campaigns.models import CachingRun, Campaign, Point
from tests.conftest import BOTH_DATABASES
from tests.workers import ROOT
from tiles.address import TileAddress
from tiles.periods import Period
from tiles.storage import read_tile, write_tile

pytestmark = pytest.mark.django_db(databases=BOTH_DATABASES)

PUBLIC_API_ROUTES = {"tile", "openapi-schema", "openapi-docs"}
METHODS = ("get", "head", "options", "post", "put", "patch", "delete")
# Values for the URL parameters of every route, so that each route resolves to a real object.
SAMPLE_VALUES = {
    "campaign_id": "teste",
    "point_id": "1_teste",
    "task_id": str(uuid.UUID(int=7)),
    "object_id": "teste",
    "content_type_id": "1",
    "id": "1",
    "app_label": "campaigns",
    "layer": "landsat",
    "x": "2940",
    "y": "4705",
    "z": "13",
    "url": "nothing-here/",
}
ADMIN_PUBLIC_ROUTES = {"login", "logout"}
TILE = TileAddress("landsat", "landsat-tvi-true", Period.DRY, 2020, None, 13, 2940, 4705)


def walk(patterns, prefix: str = "") -> list[tuple[str, URLPattern]]:
    routes = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            routes.extend(walk(pattern.url_patterns, prefix + str(pattern.pattern)))
        else:
            routes.append((prefix + str(pattern.pattern), pattern))
    return routes


def concrete_path(route: str) -> str:
    """Turn a route such as ``api/^cache/campaign/(?P<campaign_id>[^/]+)/cancel/?$`` into a request path."""
    path = re.sub(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)", lambda match: SAMPLE_VALUES[match.group(1)], route)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda match: SAMPLE_VALUES[match.group(1)], path)
    path = path.replace("(?:\\.png)?", "").replace("/?$", "/").replace("$", "").replace("^", "")
    return "/" + path


def api_routes() -> list[tuple[str, URLPattern]]:
    return [(route, pattern) for route, pattern in walk(get_resolver().url_patterns) if route.startswith("api/")]


def protected_api_paths() -> list[str]:
    return [concrete_path(route) for route, pattern in api_routes() if pattern.name not in PUBLIC_API_ROUTES]


@pytest.fixture
def cached_campaign(make_campaign) -> Campaign:
    """A campaign with one cached point and one stored tile, to show that refused requests change nothing."""
    campaign = make_campaign("teste", points=2, cached=1)
    write_tile(TILE, b"\x89PNG\r\n\x1a\nnot really")
    return campaign


def assert_nothing_changed() -> None:
    assert not CachingRun.objects.exists()
    assert Campaign.objects.get(pk="teste").caching_in_progress is False
    assert Point.objects.get(pk="1_teste").cached is True
    assert read_tile(TILE) == b"\x89PNG\r\n\x1a\nnot really"


def test_urlconf_walk_finds_every_endpoint():
    paths = protected_api_paths()

    # The walk must see the endpoints named in the API description, or it proves nothing.
    for expected in ("/api/cache/campaign/start/", "/api/cache/campaign/teste/status/", "/api/tasks/list/",
                     f"/api/tasks/status/{SAMPLE_VALUES['task_id']}/", "/api/cache/campaign/teste/cancel/",
                     "/api/cache/campaign/teste/", "/api/cache/point/1_teste/"):
        assert expected in paths
    for route, pattern in api_routes():
        assert resolve(concrete_path(route)).func == pattern.callback, route


@pytest.mark.parametrize("method", METHODS)
def test_anonymous_gets_401_everywhere(cached_campaign, method):
    client = APIClient()

    for path in protected_api_paths():
        response = getattr(client, method)(path, {"campaign_id": "teste", "point_id": "1_teste"}, format="json")
        assert response.status_code == 401, (method, path, response.status_code)
        assert response["WWW-Authenticate"].startswith("Basic"), path
        if method != "head":
            assert response.json()["code"] == "not_authenticated", path
    assert_nothing_changed()


@pytest.mark.parametrize("method", METHODS)
def test_non_staff_gets_403_everywhere(cached_campaign, plain_user, method):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=plain_user).key}")

    for path in protected_api_paths():
        response = getattr(client, method)(path, {"campaign_id": "teste", "point_id": "1_teste"}, format="json")
        assert response.status_code == 403, (method, path, response.status_code)
        if method != "head":
            assert response.json()["code"] == "permission_denied", path
    assert_nothing_changed()


def test_wrong_credentials_get_401(cached_campaign, staff_user):
    for credentials in ("Token " + "0" * 40, "Basic b3BlcmF0b3I6d3Jvbmc=", "Bearer abc", "Token"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=credentials)
        for path in protected_api_paths():
            response = client.post(path, {"campaign_id": "teste"}, format="json")
            assert response.status_code == 401, (credentials, path)
    assert_nothing_changed()


def test_public_routes_only_read(cached_campaign):
    client = Client()
    public = {pattern.name: concrete_path(route) for route, pattern in api_routes()
              if pattern.name in PUBLIC_API_ROUTES}

    assert set(public) == PUBLIC_API_ROUTES
    tile_query = "?period=DRY&year=2020&visparam=landsat-tvi-true"
    assert client.get(public["tile"] + tile_query).status_code == 200
    assert client.get(public["openapi-schema"]).status_code == 200
    assert client.get(public["openapi-docs"]).status_code == 200
    for name, path in public.items():
        for method in ("post", "put", "patch", "delete"):
            suffix = tile_query if name == "tile" else ""
            response = getattr(client, method)(path + suffix)
            assert response.status_code in (403, 405), (method, path, response.status_code)
    assert_nothing_changed()


# --- Admin -------------------------------------------------------------------


def admin_paths() -> list[str]:
    return [concrete_path(route) for route, pattern in walk(get_resolver().url_patterns)
            if route.startswith("admin/") and pattern.name not in ADMIN_PUBLIC_ROUTES]


def test_admin_pages_need_staff(cached_campaign, plain_user):
    anonymous = Client()
    inspector = Client()
    inspector.force_login(plain_user)
    paths = admin_paths()

    assert "/admin/campaigns/campaign/teste/progress/" in paths
    assert "/admin/campaigns/point/tile/landsat/2940/4705/13/" in paths
    for path in paths:
        for client in (anonymous, inspector):
            response = client.get(path)
            assert response.status_code == 302, (path, response.status_code)
            assert response["Location"].startswith("/admin/login/"), path
    assert_nothing_changed()


def campaign_admin_actions() -> list[str]:
    request = RequestFactory().get("/admin/campaigns/campaign/")
    request.user = type("Superuser", (), {"has_perm": lambda *args: True, "is_active": True, "is_staff": True,
                                           "is_superuser": True})()
    actions = admin.site._registry[Campaign].get_actions(request)
    return sorted(name for name in actions if name != "delete_selected")


def test_admin_actions_need_staff_and_csrf(cached_campaign, staff_user, plain_user):
    staff_user.is_superuser = True
    staff_user.save()
    changelist = "/admin/campaigns/campaign/"
    actions = campaign_admin_actions()
    assert {"start_caching", "cancel_caching", "clear_cache"} <= set(actions)

    for action in actions + ["delete_selected"]:
        form = {"action": action, "_selected_action": ["teste"], "apply": "yes", "post": "yes",
                "batch_size": "5", "preset": ""}

        staff = Client(enforce_csrf_checks=True)
        staff.force_login(staff_user)
        assert staff.post(changelist, form).status_code == 403, action

        inspector = Client(enforce_csrf_checks=True)
        inspector.force_login(plain_user)
        inspector.get("/admin/login/")
        token = inspector.cookies["csrftoken"].value
        refused = inspector.post(changelist, {**form, "csrfmiddlewaretoken": token})
        assert refused.status_code == 302, action
        assert refused["Location"].startswith("/admin/login/"), action

        assert Client(enforce_csrf_checks=True).post(changelist, form).status_code == 403, action
    assert_nothing_changed()


# --- Deployment settings and secrets -----------------------------------------


def random_secret_key() -> str:
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    return "".join(secrets.choice(alphabet) for _ in range(50))


def production_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("DJANGO_", "PYTEST_"))}
    environment.update({
        "DJANGO_DEBUG": "0",
        "DJANGO_SECURE": "1",
        "DJANGO_SECRET_KEY": random_secret_key(),
        "DJANGO_ALLOWED_HOSTS": "example.org",
        "DJANGO_SETTINGS_MODULE": "cachecampaign.settings",
        "CACHECAMPAIGN_VAR_DIR": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    })
    environment.update(overrides)
    return environment


def deploy_check(environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_deploy_check_has_no_security_warning(tmp_path):
    checked = deploy_check(production_environment(tmp_path))

    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "security." not in output


def test_deploy_check_is_clean(tmp_path):
    checked = deploy_check(production_environment(tmp_path))

    assert "System check identified no issues" in checked.stdout + checked.stderr, checked.stdout + checked.stderr


def test_deploy_check_flags_missing_secret_key(tmp_path):
    environment = production_environment(tmp_path)
    del environment["DJANGO_SECRET_KEY"]

    checked = deploy_check(environment)

    assert "security.W009" in checked.stdout + checked.stderr


def test_secret_key_comes_from_environment(tmp_path):
    key = random_secret_key()
    environment = production_environment(tmp_path, DJANGO_SECRET_KEY=key)
    probe = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"

    printed = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=environment, capture_output=True,
                             text=True, timeout=60)

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip().splitlines()[-1] == key
    settings_source = (ROOT / "cachecampaign" / "settings.py").read_text()
    assert 'env_str("DJANGO_SECRET_KEY"' in settings_source


# Secret-looking values: key material, cloud keys, credentials in URLs and assignments of literal secrets.
KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|\bgh[pousr]_[A-Za-z0-9]{30,}")
URL_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"'`]+:([^/\s@\"'`]+)@")
LITERAL_SECRET = re.compile(
    r"(?i)\b\w*(?:password|passwd|secret|token|api_?key)\w*\s*[:=]\s*[\"']([^\"'\s]{6,})[\"']")
# Placeholders that docs and example files use in place of a password.
PLACEHOLDER_PASSWORDS = {"password", "PASSWORD", "senha", "SENHA", "change-me", "***", "**"}


def project_files() -> list[Path]:
    """Tracked files and new files not ignored by git: what the next commit can contain."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    files = []
    for name in listed:
        path = ROOT / name
        # A virtualenv someone created inside the tree is no project source, ignored by git or not.
        if any(part.startswith(".venv") or part == "site-packages" for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and path.suffix not in {".png", ".tif", ".sqlite3", ".mo", ".gz"}:
            files.append(path)
    return files


def is_test_or_example(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return relative.startswith("tests/") or path.suffix == ".md" or ".example" in path.name


def test_no_hard_coded_secrets():
    findings = []
    files = project_files()
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        relative = path.relative_to(ROOT).as_posix()
        for number, line in enumerate(text.splitlines(), 1):
            if KEY_MATERIAL.search(line):
                findings.append(f"{relative}:{number}: key material")
            for match in URL_CREDENTIALS.finditer(line):
                if not is_test_or_example(path) or match.group(1) not in PLACEHOLDER_PASSWORDS | {"hunter2", "pw"}:
                    findings.append(f"{relative}:{number}: credentials in a URL")
            match = LITERAL_SECRET.search(line)
            # Django names keys it generated for development "django-insecure-"; check --deploy rejects them.
            if match and not is_test_or_example(path) and not match.group(1).startswith("django-insecure-"):
                findings.append(f"{relative}:{number}: literal secret")

    assert len(files) > 50
    assert findings == []
