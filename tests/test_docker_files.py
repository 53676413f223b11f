"""docker/compose.yaml and docker/Dockerfile: valid Compose, the services production needs, settings that exist.

No container engine runs in tests. The compose file is validated against
the Compose Specification JSON schema when one is installed: Debian's
``docker-compose`` package ships it, and COMPOSE_SPEC_SCHEMA can name another
copy. It is also checked with ``docker compose config`` or
``docker-compose config`` when either command exists. Those two tests skip
otherwise, and the other checks always run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SETTINGS_FILE = ROOT / "cachecampaign" / "settings.py"
DEBIAN_COMPOSE_SCHEMA = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
APP_SERVICES = ("web", "worker", "beat", "migrate")
# Read by boto3 through django-storages, not by the settings module.
BOTO3_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_compose_matches_compose_spec(compose):
    schema_path = Path(os.environ.get("COMPOSE_SPEC_SCHEMA", DEBIAN_COMPOSE_SCHEMA))
    if not schema_path.is_file():
        pytest.skip(f"no Compose Specification schema at {schema_path}; apt-get install docker-compose provides one")
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)

    errors = [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(compose)]

    assert errors == []


def test_compose_config_accepts_file():
    command = compose_command()
    if command is None:
        pytest.skip("neither docker compose nor docker-compose is installed")

    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "--profile", "s3", "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr


def test_compose_runs_production_services(compose):
    services = compose["services"]

    assert set(services) >= {"web", "worker", "beat", "migrate", "postgres", "redis", "mongodb", "minio"}
    assert services["mongodb"]["image"] == "mongo:7"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["web"]["ports"] == ["${WEB_PORT:-8083}:8083"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "cachecampaign", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "cachecampaign", "beat"]
    assert "migrate --noinput --database campaigns" in services["migrate"]["command"][-1]
    assert services["minio"]["profiles"] == ["s3"]


def test_compose_shares_tiles_volume(compose):
    services = compose["services"]

    for name in ("web", "worker"):
        assert "tiles:/var/lib/cachecampaign/tiles" in services[name]["volumes"], name
    assert "tiles" in compose["volumes"]


def test_compose_variables_exist_in_settings(compose):
    settings_source = SETTINGS_FILE.read_text(encoding="utf-8")
    read_by_settings = set(re.findall(r'env_[a-z_]+\("([A-Z0-9_]+)"', settings_source))

    for name in APP_SERVICES:
        variables = set(compose["services"][name]["environment"])
        unknown = variables - read_by_settings - BOTO3_VARIABLES
        assert unknown == set(), f"{name} sets variables the settings never read: {sorted(unknown)}"


def test_compose_app_waits_for_migrations(compose):
    services = compose["services"]

    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["mongodb"] == {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_env_example_sets_required_variables(compose):
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text(encoding="utf-8")))
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }

    assert required
    assert required <= example


def test_dockerfile_builds_from_slim_python():
    text = DOCKERFILE.read_text(encoding="utf-8")

    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "pip install -r requirements/base.txt" in text
    assert "collectstatic --noinput" in text
    assert "compilemessages" in text
    assert "0.0.0.0:8083" in text
    assert (ROOT / ".dockerignore").is_file()
