"""A caching run against an upstream XYZ server that fails 10 % of requests with HTTP 500 and lets 5 % time out.

The test server decides each fault from a hash of its seed, the request path
and the request's number on that path, never from timing. So the test
computes in advance which tiles recover on their retry and which fail on
every attempt, and asserts exact counts.
"""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import urlsplit

import pytest
from django_celery_results.models import TaskResult

from campaigns.models import Campaign, Point, RunPoint, RunPointState
from campaigns.runs import campaign_plan, start_run
from tests.conftest import BOTH_DATABASES, VAR_DIR, wait_for_run_end
from tests.runchecks import wait_until
from tests.workers import running_worker
from tests.xyzserver import Rule, TileServer
from tiles.sources.xyz import XYZSource
from tiles.storage import read_tile, tile_key

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES)]

POINTS = 10
# One try and one retry per tile.
RETRIES = 1
READ_TIMEOUT = 0.5
# A timed-out response arrives this long after the request, well past the read timeout.
SLOW_RESPONSE_SECONDS = 1.5
TIMEOUT_SHARE = 0.05
SERVER_ERROR_SHARE = 0.10


def fault_rules() -> list[Rule]:
    # Every rule draws the same number for a request, so the first rule takes
    # draws below 0.05 (timeouts) and the second the draws from 0.05 to 0.15
    # (HTTP 500): 5 % and 10 % of requests.
    return [
        Rule(sleep=SLOW_RESPONSE_SECONDS, probability=TIMEOUT_SHARE),
        Rule(status=500, probability=TIMEOUT_SHARE + SERVER_ERROR_SHARE),
    ]


def faulted(path: str, number: int, seed: int) -> bool:
    return any(rule.applies(path, number, seed) for rule in fault_rules())


def lost_tiles(path_of: dict[str, str], seed: int) -> set[str]:
    """Return the keys of the tiles whose every attempt meets a fault under ``seed``."""
    attempts = range(1, RETRIES + 2)
    return {key for key, path in path_of.items() if all(faulted(path, number, seed) for number in attempts)}


def choose_seed(path_of: dict[str, str], tiles_of_point: dict[str, set[str]]) -> int:
    """Return the first seed under which tiles of at least two points fail every attempt."""
    for seed in range(1, 500):
        lost = lost_tiles(path_of, seed)
        if len([point for point, keys in tiles_of_point.items() if lost & keys]) >= 2:
            return seed
    raise AssertionError("No seed in 1..499 makes tiles of two points fail every attempt; widen the search.")


@pytest.fixture
def tile_server():
    with TileServer(latency=0.01) as server:
        yield server


def test_flaky_upstream_counts_failures(tile_server, make_campaign, capsys):
    layer_config = {
        "kind": "xyz", "url": tile_server.template, "timeout": READ_TIMEOUT, "connect_timeout": READ_TIMEOUT,
        "retries": RETRIES, "backoff": 0.01, "backoff_max": 0.05, "max_in_flight": 4,
        "limit_group": "flaky-upstream-test",
    }
    config_path = VAR_DIR / "xyz-flaky.json"
    config_path.write_text(json.dumps({"landsat": layer_config, "sentinel": layer_config}))
    # Points 0.5 degrees apart share no tile, so no tile gets tries from two points.
    make_campaign("instavel", points=POINTS, spacing=0.5, initial_year=2019, final_year=2020,
                  vis_params=["landsat-tvi-true", "landsat-tvi-false"])
    campaign = Campaign.objects.get(pk="instavel")
    plan = campaign_plan(campaign)
    source = XYZSource("landsat", layer_config)
    path_of: dict[str, str] = {}
    address_of = {}
    tiles_of_point: dict[str, set[str]] = {}
    for point in Point.objects.of_campaign("instavel"):
        tiles_of_point[point.id] = set()
        for address in plan.addresses_for(point.lon, point.lat):
            key = tile_key(address)
            path_of[key] = urlsplit(source.tile_url(address)).path
            address_of[key] = address
            tiles_of_point[point.id].add(key)
    total_tiles = len(path_of)
    assert total_tiles == POINTS * 3 * 2 * 2

    seed = choose_seed(path_of, tiles_of_point)
    attempts = RETRIES + 1
    lost = lost_tiles(path_of, seed)
    retried = {key for key, path in path_of.items() if faulted(path, 1, seed)}
    recovered = retried - lost
    failed_points = {point for point, keys in tiles_of_point.items() if lost & keys}
    tile_server.configure(seed=seed, rules=fault_rules())

    with running_worker(concurrency=2, extra_env={"TILE_SOURCES_FILE": str(config_path)}):
        start_run("instavel", batch_size=4)
        run = wait_for_run_end("instavel", timeout=120)
        # Responses the client gave up on are still sleeping on the server.
        wait_until(lambda: tile_server.in_flight == 0, SLOW_RESPONSE_SECONDS * 4, "the server finished every request")
        records = tile_server.records()

        statuses = Counter(record.status for record in records)
        slow = [record for record in records if record.end - record.start >= SLOW_RESPONSE_SECONDS * 0.9]
        requests = [(path, number) for key, path in path_of.items()
                    for number in range(1, (attempts if key in retried else 1) + 1)]
        expected_timeouts = [request for request in requests if fault_rules()[0].applies(*request, seed)]
        expected_errors = [request for request in requests if faulted(*request, seed)
                           and not fault_rules()[0].applies(*request, seed)]
        with capsys.disabled():
            print(f"\nflaky upstream, seed {seed}: {total_tiles} tiles, {len(records)} requests "
                  f"({statuses[500]} HTTP 500, {len(slow)} timed out), {len(retried)} tiles retried, "
                  f"{len(recovered)} recovered, {len(lost)} failed on every attempt, "
                  f"{len(failed_points)} points not cached")
        assert statuses[500] == len(expected_errors)
        assert len(slow) == len(expected_timeouts)
        # Each tile was requested once, and once more when its first request failed.
        per_path = Counter(record.path for record in records)
        assert set(per_path) == set(path_of.values())
        for key, path in path_of.items():
            assert per_path[path] == (attempts if key in retried else 1), key
        assert run.state == "failed"
        assert run.finished_points == POINTS
        assert run.failed_points == len(failed_points)
        assert run.succeeded_points == POINTS - len(failed_points)
        assert run.tiles_failed == len(lost)
        assert run.tiles_stored == total_tiles - len(lost)
        for key in recovered:
            assert read_tile(address_of[key]) is not None, key
        for key in lost:
            assert read_tile(address_of[key]) is None, key

        for point_id, keys in tiles_of_point.items():
            entry = RunPoint.objects.get(run=run, point_id=point_id)
            point = Point.objects.get(pk=point_id)
            lost_here = lost & keys
            result = json.loads(TaskResult.objects.get(task_id=entry.task_id).result)
            assert result["failed_tiles"] == len(lost_here), point_id
            assert result["total_tiles"] == len(keys)
            if lost_here:
                assert entry.state == RunPointState.FAILED
                assert point.cached is not True
                assert any(key in entry.error for key in lost_here)
                assert "HTTP 500" in entry.error or "timed out" in entry.error
            else:
                assert entry.state == RunPointState.SUCCEEDED
                assert point.cached is True
        campaign.refresh_from_db()
        assert campaign.cached_points == POINTS - len(failed_points)
        assert any(f"Point {point_id} failed" in campaign.caching_error for point_id in failed_points)
        assert "HTTP 500" in campaign.caching_error or "timed out" in campaign.caching_error
        assert campaign.caching_error_at is not None

        # The upstream recovers: a second run fetches only the tiles still missing.
        tile_server.configure(rules=[])
        tile_server.reset()
        second = start_run("instavel", batch_size=4).run
        second_points_to_cache = second.points_to_cache
        second = wait_for_run_end("instavel", timeout=60)
        second_records = tile_server.records()

    assert second_points_to_cache == len(failed_points)
    assert second.state == "completed"
    assert second.succeeded_points == len(failed_points)
    assert second.tiles_stored == len(lost)
    assert sorted(record.path for record in second_records) == sorted(path_of[key] for key in lost)
    campaign.refresh_from_db()
    assert campaign.cached_points == POINTS
    assert campaign.all_points_cached is True
    assert campaign.caching_error is None
