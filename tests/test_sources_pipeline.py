"""Caching runs against real tile sources and several worker processes.

These tests start worker processes of their own, configured with their own
tile sources, so no other worker may run while they do (the shared worker
fixture is module-scoped and is not used here).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from campaigns.models import Campaign, Point
from campaigns.runs import campaign_plan, start_run
from tests.conftest import BOTH_DATABASES, VAR_DIR, produced_tiles, wait_for_run_end
from tests.workers import running_worker
from tests.xyzserver import Rule, TileServer
from tiles.storage import read_tile, tile_key

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)]


def sources_file(name: str, layer_config: dict) -> str:
    path = VAR_DIR / name
    path.write_text(json.dumps({"landsat": layer_config, "sentinel": layer_config}))
    return str(path)


@pytest.fixture
def tile_server():
    with TileServer(latency=0.03) as server:
        yield server


def test_tvi_campaign_from_xyz_upstream_is_served_as_hits(tile_server, make_campaign):
    cap = 3
    # Every tenth tile path returns 503 once and every seventh 429 once, so
    # retries happen in the middle of the run.
    tile_server.configure(rules=[
        Rule(status=503, path=r"/(\d*0)\.png$", first=1),
        Rule(status=429, retry_after="0", path=r"/(\d*7)\.png$", first=1),
    ])
    config = sources_file("xyz-sources.json", {
        "kind": "xyz", "url": tile_server.template, "timeout": 5, "retries": 4, "backoff": 0.05,
        "backoff_max": 0.5, "max_in_flight": cap, "limit_group": "xyz-pipeline-test",
    })
    make_campaign("tvi_xyz", points=6, spacing=0.37, tile_preset="tvi", final_year=2021)

    with running_worker(extra_env={"TILE_SOURCES_FILE": config}), \
            running_worker(extra_env={"TILE_SOURCES_FILE": config}):
        start_run("tvi_xyz", batch_size=6)
        run = wait_for_run_end("tvi_xyz", timeout=120)

    assert run.state == "completed", run.last_error
    campaign = Campaign.objects.get(pk="tvi_xyz")
    assert campaign.cached_points == 6
    assert campaign.cache_percentage == 100.0
    plan = campaign_plan(campaign)
    addresses = {a for p in Point.objects.of_campaign("tvi_xyz") for a in plan.addresses_for(p.lon, p.lat)}
    assert len(addresses) == 6 * 9 * 2 * 2
    # The cap held across both worker processes, and the load reached it.
    assert tile_server.max_in_flight == cap
    # Each tile was fetched once, plus one retry for each injected fault.
    per_path = Counter(record.path for record in tile_server.records())
    assert len(per_path) == len(addresses)
    assert run.tiles_stored == len(addresses)
    faulted = [path for path in per_path if path.endswith(("0.png", "7.png"))]
    assert all(per_path[path] == 2 for path in faulted)
    assert all(count == 1 for path, count in per_path.items() if path not in faulted)

    client = Client()
    requests_before = tile_server.total
    for address in sorted(addresses):
        url = (f"/api/layers/{address.layer}/{address.x}/{address.y}/{address.z}"
               f"?period={address.period.value}&year={address.year}&visparam={address.vis_param}")
        response = client.get(url)
        assert response.status_code == 200
        assert response["X-Cache"] == "HIT"
        assert response.content == read_tile(address)
    assert tile_server.total == requests_before


def test_failed_upstream_tiles_are_counted(tile_server, make_campaign):
    tile_server.configure(rules=[Rule(status=403, path=r"/13/")])
    config = sources_file("xyz-forbidden.json", {
        "kind": "xyz", "url": tile_server.template, "timeout": 5, "retries": 2, "backoff": 0.01,
        "max_in_flight": 4, "limit_group": "xyz-forbidden-test",
    })
    make_campaign("proibida", points=2, spacing=0.5)

    with running_worker(extra_env={"TILE_SOURCES_FILE": config}):
        start_run("proibida", batch_size=2)
        run = wait_for_run_end("proibida", timeout=60)

    assert run.state == "failed"
    assert run.failed_points == 2
    # zooms 12 and 14 are stored, 13 is refused without retries
    assert run.tiles_stored == 4
    assert run.tiles_failed == 2
    campaign = Campaign.objects.get(pk="proibida")
    assert campaign.cached_points == 0
    assert "403" in campaign.caching_error
    assert Point.objects.of_campaign("proibida").is_cached().count() == 0


def campaign_points_file(tmp_path: Path) -> tuple[Path, bool]:
    """Return the real 5,000-point campaign file when the sample data is available, else a synthetic one."""
    sample = os.environ.get("CACHECAMPAIGN_SAMPLE_DATA")
    if sample and (Path(sample) / "points" / "pontos_aa_5000.geojson").exists():
        return Path(sample) / "points" / "pontos_aa_5000.geojson", True
    generator = random.Random(5000)
    features = [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Point", "coordinates": [generator.uniform(-73.5, -34.8), generator.uniform(-33.7, 5.1)]}}
        for _ in range(5000)
    ]
    path = tmp_path / "synthetic-5000.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path, False


@pytest.mark.slow
def test_each_unique_tile_is_produced_once(tmp_path, make_campaign, capsys):
    points_file, real = campaign_points_file(tmp_path)
    call_command("import_points", "aa_5000", str(points_file), initial_year=2020, final_year=2020,
                 vis_params="landsat-tvi-true", stdout=open(os.devnull, "w"))
    campaign = Campaign.objects.get(pk="aa_5000")
    plan = campaign_plan(campaign)
    planned = [tile_key(a) for p in Point.objects.of_campaign("aa_5000") for a in plan.addresses_for(p.lon, p.lat)]

    with running_worker(), running_worker():
        start_run("aa_5000", batch_size=40)
        run = wait_for_run_end("aa_5000", timeout=1200)

    produced = produced_tiles()
    producers = {line.split()[1] for line in (VAR_DIR / "tiles-produced.log").read_text().splitlines()}
    with capsys.disabled():
        print(f"\ndedupe on {'the real' if real else 'a synthetic'} 5,000-point campaign: "
              f"{len(planned)} tiles planned, {len(set(planned))} unique, {len(produced)} produced "
              f"by {len(producers)} processes")
    assert run.state == "completed"
    assert Point.objects.of_campaign("aa_5000").count() == 5000
    assert Campaign.objects.get(pk="aa_5000").cached_points == 5000
    assert len(planned) == 15000
    assert sorted(produced) == sorted(set(planned))
    assert run.tiles_stored == len(set(planned))
    assert run.tiles_stored + run.tiles_skipped == len(planned)
    assert len(producers) >= 2
