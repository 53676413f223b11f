"""The xyz tile source against a local test tile server, and the shared request limits.

The limit tests run two child processes that fetch through the same limit
group. They check at the server that the cap on requests in flight and the
rate limit hold across processes, with the Redis backend and with the
lock-file backend. Redis is expected at 127.0.0.1:6379; its tests use database 15 and a
key prefix of their own, and delete their keys afterwards.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from PIL import Image

from tests.xyzserver import RequestRecord, Rule, TileServer, read_stats, tile_image
from tiles.address import TileAddress
from tiles.errors import SourceError, SourceTimeout
from tiles.limits import FileLimitBackend, LimitConfig, LimitTimeout, RedisLimitBackend, build_limiter, redact_url
from tiles.periods import Period
from tiles.render import EMPTY_TILE
from tiles.sources.xyz import PNG_SIGNATURE, XYZSource, parse_retry_after

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/15"
ADDRESS = TileAddress("landsat", "landsat-tvi-true", Period.DRY, 2020, None, 13, 2940, 4705)
ADDRESS_PATH = "/landsat/landsat-tvi-true/DRY/2020//13/2940/4705.png"
# Upper bound of every child process, so a hung child cannot stall the suite.
CHILD_TIMEOUT_SECONDS = 120


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def server():
    with TileServer() as tile_server:
        yield tile_server


@pytest.fixture
def redis_limits(settings):
    """Point the limits at a Redis database and key prefix of this test only."""
    if not redis_available():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}; start redis-server on 127.0.0.1:6379.")
    prefix = f"cachecampaign-test:{uuid.uuid4().hex}"
    settings.TILE_LIMITS_REDIS_URL = REDIS_URL
    settings.TILE_LIMITS_KEY_PREFIX = prefix
    yield {"TILE_LIMITS_REDIS_URL": REDIS_URL, "TILE_LIMITS_KEY_PREFIX": prefix}
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture
def local_limits(settings, tmp_path):
    """Keep the limits in lock files under a folder of this test only."""
    settings.TILE_LIMITS_REDIS_URL = ""
    settings.VAR_DIR = tmp_path
    return {"TILE_LIMITS_REDIS_URL": "", "CACHECAMPAIGN_VAR_DIR": str(tmp_path)}


@pytest.fixture(params=["redis", "local"])
def limits_env(request):
    """Environment of child processes that share the limits with this test, for each backend."""
    return request.getfixturevalue(f"{request.param}_limits")


def make_source(server: TileServer, **options) -> XYZSource:
    config = {
        "kind": "xyz",
        "url": server.template,
        "timeout": 2,
        "retries": 3,
        "backoff": 0.01,
        "backoff_max": 0.05,
        "max_in_flight": 0,
        **options,
    }
    return XYZSource("landsat", config)


def record_starts(records: list[RequestRecord], path: str) -> list[float]:
    return [record.start for record in records if record.path == path]


# --- Fetching and retries ------------------------------------------------------


def test_fetch_returns_server_png(server, local_limits):
    data = make_source(server).fetch(ADDRESS)

    assert data == tile_image(13, 2940, 4705)
    assert server.requests_of(ADDRESS_PATH) == 1


def test_tile_url_fills_placeholders(server, local_limits):
    source = make_source(server)
    monthly = TileAddress("sentinel", "tvi-red", Period.MONTH, 2021, 3, 12, 1, 2)

    assert source.tile_url(ADDRESS) == server.url + ADDRESS_PATH
    assert source.tile_url(monthly) == server.url + "/sentinel/tvi-red/MONTH/2021/3/12/1/2.png"


def test_retries_then_success(server, local_limits):
    server.configure(rules=[Rule(status=503, first=2)])

    data = make_source(server).fetch(ADDRESS)

    assert data == tile_image(13, 2940, 4705)
    assert server.requests_of(ADDRESS_PATH) == 3


def test_retry_logged_with_tile_and_wait(server, local_limits, caplog):
    server.configure(rules=[Rule(status=502, first=1)])

    with caplog.at_level(logging.INFO, logger="tiles.sources.xyz"):
        make_source(server).fetch(ADDRESS)

    messages = [record.getMessage() for record in caplog.records if record.name == "tiles.sources.xyz"]
    assert len(messages) == 1
    assert "landsat/landsat-tvi-true/DRY/2020/13/2940/4705" in messages[0]
    assert "HTTP 502" in messages[0]
    assert "retrying in" in messages[0]
    assert caplog.records[0].levelno == logging.WARNING


def test_retry_after_seconds_honoured(server, local_limits):
    server.configure(rules=[Rule(status=429, retry_after="1", first=1)])

    data = make_source(server, backoff_max=5).fetch(ADDRESS)

    starts = record_starts(server.records(), ADDRESS_PATH)
    assert data.startswith(PNG_SIGNATURE)
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 1.0


def test_retry_after_capped_by_backoff_max(server, local_limits):
    server.configure(rules=[Rule(status=429, retry_after="30", first=1)])

    make_source(server, backoff_max=0.3).fetch(ADDRESS)

    starts = record_starts(server.records(), ADDRESS_PATH)
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 0.3
    assert starts[1] - starts[0] < 2.0


def test_retry_after_http_date_honoured(server, local_limits):
    # An HTTP-date has whole seconds, so a date 3 s ahead is at least 2 s ahead.
    when = datetime.now(timezone.utc) + timedelta(seconds=3)
    server.configure(rules=[Rule(status=429, retry_after=format_datetime(when, usegmt=True), first=1)])

    make_source(server, backoff_max=10).fetch(ADDRESS)

    starts = record_starts(server.records(), ADDRESS_PATH)
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 2.0


def test_5xx_exhaustion_raises_transient(server, local_limits):
    server.configure(rules=[Rule(status=503)])

    with pytest.raises(SourceError) as caught:
        make_source(server, retries=2).fetch(ADDRESS)

    error = caught.value
    assert error.transient is True
    assert error.status == 503
    assert "after 3 attempts" in str(error)
    assert "HTTP 503" in str(error)
    assert server.url + ADDRESS_PATH in str(error)
    assert server.requests_of(ADDRESS_PATH) == 3


@pytest.mark.parametrize("status", [404, 204])
def test_empty_statuses_return_empty_tile(server, local_limits, status):
    server.configure(rules=[Rule(status=status)])

    data = make_source(server).fetch(ADDRESS)

    assert data == EMPTY_TILE
    assert server.requests_of(ADDRESS_PATH) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 410])
def test_client_error_is_permanent(server, local_limits, status):
    server.configure(rules=[Rule(status=status)])

    with pytest.raises(SourceError) as caught:
        make_source(server).fetch(ADDRESS)

    assert caught.value.transient is False
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert server.requests_of(ADDRESS_PATH) == 1


def test_error_message_hides_credentials(server, local_limits):
    server.configure(rules=[Rule(status=403)])
    template = server.template.replace("http://", "http://user:hunter2@") + "?key=topsecret&layer={layer}"

    with pytest.raises(SourceError) as caught:
        make_source(server, url=template).fetch(ADDRESS)

    message = str(caught.value)
    assert "hunter2" not in message
    assert "topsecret" not in message
    assert "key=***" in message


def test_timeout_exhaustion_raises_source_timeout(server, local_limits):
    server.configure(rules=[Rule(sleep=1.5)])
    started = time.monotonic()

    with pytest.raises(SourceTimeout) as caught:
        make_source(server, timeout=0.2, retries=1).fetch(ADDRESS)

    elapsed = time.monotonic() - started
    assert caught.value.transient is True
    assert "timed out" in str(caught.value)
    assert "after 2 attempts" in str(caught.value)
    assert server.requests_of(ADDRESS_PATH) == 2
    # Two 0.2 s read timeouts and one pause of at most 0.05 s, with slack for a loaded machine.
    assert elapsed < 1.4


def test_timeout_then_success(server, local_limits):
    server.configure(rules=[Rule(sleep=1.5, first=1)])

    data = make_source(server, timeout=0.3).fetch(ADDRESS)

    assert data == tile_image(13, 2940, 4705)
    assert server.requests_of(ADDRESS_PATH) == 2


def test_connection_refused_is_transient(local_limits):
    with TileServer() as closed:
        template = closed.template
    source = XYZSource("landsat", {"url": template, "timeout": 1, "retries": 1, "backoff": 0.01, "max_in_flight": 0})

    with pytest.raises(SourceError) as caught:
        source.fetch(ADDRESS)

    assert caught.value.transient is True
    assert "failed to connect" in str(caught.value)
    assert "Connection refused" in str(caught.value)
    assert "Max retries exceeded" not in str(caught.value)
    assert "after 2 attempts" in str(caught.value)


class RedirectingServer:
    """A server on 127.0.0.1 whose /moved/... paths redirect to ``target`` and /loop/... paths to themselves."""

    def __init__(self, target: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                owner.requests += 1
                location = target if self.path.startswith("/moved/") else self.path
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_redirect_followed_to_tile(server, local_limits):
    with RedirectingServer(server.url + ADDRESS_PATH) as redirecting:
        source = XYZSource("landsat", {"url": redirecting.url + "/moved/{z}/{x}/{y}.png", "max_in_flight": 0})

        data = source.fetch(ADDRESS)

    assert data == tile_image(13, 2940, 4705)
    assert redirecting.requests == 1
    assert server.requests_of(ADDRESS_PATH) == 1


def test_redirect_loop_is_permanent(local_limits):
    with RedirectingServer("") as redirecting:
        source = XYZSource("landsat", {"url": redirecting.url + "/loop/{z}/{x}/{y}.png", "retries": 3,
                                       "backoff": 0.01, "max_in_flight": 0})

        with pytest.raises(SourceError) as caught:
            source.fetch(ADDRESS)

    assert caught.value.transient is False
    assert "too many redirects" in str(caught.value)
    # One request plus five redirects, and no retry of a permanent failure.
    assert redirecting.requests == 6


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("invalid", "not a PNG or JPEG image"),
        ("truncated", "invalid PNG image"),
        ("corrupt", "invalid PNG image"),
        ("none", "not a PNG or JPEG image"),
    ],
)
def test_invalid_body_fails_tile(server, local_limits, body, expected):
    server.configure(rules=[Rule(body=body)])

    with pytest.raises(SourceError) as caught:
        make_source(server, retries=1).fetch(ADDRESS)

    assert expected in str(caught.value)
    assert "after 2 attempts" in str(caught.value)
    assert server.requests_of(ADDRESS_PATH) == 2


def test_invalid_body_then_valid(server, local_limits):
    server.configure(rules=[Rule(body="invalid", first=1)])

    data = make_source(server).fetch(ADDRESS)

    assert data == tile_image(13, 2940, 4705)


def test_jpeg_converted_to_png(server, local_limits):
    server.configure(rules=[Rule(body="jpeg")])

    data = make_source(server).fetch(ADDRESS)

    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (256, 256)
        red, green, blue = image.convert("RGB").getpixel((128, 128))
    expected = ((2940 * 37 + 11) % 256, (4705 * 59 + 23) % 256, (13 * 83 + 47) % 256)
    # JPEG is lossy; a flat colour comes back within a few levels.
    assert abs(red - expected[0]) <= 4
    assert abs(green - expected[1]) <= 4
    assert abs(blue - expected[2]) <= 4


def test_fetch_many_returns_tiles_and_errors(server, local_limits):
    server.configure(rules=[Rule(status=403, path=r"/13/1/1\.png$")])
    addresses = [TileAddress("landsat", "landsat-tvi-true", Period.DRY, 2020, None, 13, x, 1) for x in range(6)]

    results = make_source(server, fetch_threads=3).fetch_many(addresses)

    assert set(results) == set(addresses)
    assert isinstance(results[addresses[1]], SourceError)
    assert all(results[address] == tile_image(13, address.x, 1) for address in addresses if address.x != 1)


def test_seeded_probability_rule_repeats(server, local_limits):
    rule = Rule(status=503, probability=0.5)
    draws = [rule.applies(f"/13/{x}/1.png", 1, seed=7) for x in range(200)]

    assert draws == [rule.applies(f"/13/{x}/1.png", 1, seed=7) for x in range(200)]
    assert 70 < sum(draws) < 130


def test_server_stats_endpoint(server, local_limits):
    make_source(server).fetch(ADDRESS)

    stats = read_stats(server.url)

    assert stats["total"] == 1
    assert stats["per_path"] == {ADDRESS_PATH: 1}
    assert stats["max_in_flight"] == 1
    assert stats["in_flight"] == 0


# --- Retry-After and configuration -----------------------------------------------


def test_parse_retry_after_values():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:07 GMT", now=now) == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:59:00 GMT", now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("-3") is None
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"url": None}, "'url'"),
        ({"url": "ftp://127.0.0.1/{z}/{x}/{y}"}, "http:// or https://"),
        ({"url": "http://127.0.0.1/{z}/{x}"}, "lacks the placeholders ['y']"),
        ({"url": "http://127.0.0.1/{z}/{x}/{y}/{token}"}, "unknown placeholders ['token']"),
        ({"url": "http://127.0.0.1/{z:02d}/{x}/{y}"}, "formats the placeholders ['z']"),
        ({"url": "http://127.0.0.1/{z}/{x}/{y"}, "not a valid template"),
        ({"retries": -1}, "'retries'"),
        ({"timeout": 0}, "'timeout'"),
        ({"max_in_flight": 2.5}, "'max_in_flight'"),
        ({"headers": {"X-Key": 1}}, "'headers'"),
        ({"limit_group": "two words"}, "invalid limits"),
    ],
)
def test_invalid_config_rejected(local_limits, options, fragment):
    config = {"url": "http://127.0.0.1:9/{z}/{x}/{y}.png", **options}

    with pytest.raises(ImproperlyConfigured) as caught:
        XYZSource("landsat", config)

    assert fragment in str(caught.value)


def test_redact_url_hides_secrets():
    assert redact_url("https://me:pw@host/a?key=s3cret&x=1") == "https://***@host/a?key=***&x=***"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# --- Limiter units -----------------------------------------------------------------


def limit_config(**options) -> LimitConfig:
    values = {"group": "unit", "max_in_flight": 1, "rate_per_second": None, "acquire_timeout": 0.3,
              "hold_seconds": 5.0, **options}
    return LimitConfig(**values)


def test_build_limiter_follows_settings(redis_limits, settings, tmp_path):
    assert isinstance(build_limiter(limit_config()).backend, RedisLimitBackend)

    settings.TILE_LIMITS_REDIS_URL = ""
    settings.VAR_DIR = tmp_path
    backend = build_limiter(limit_config()).backend
    assert isinstance(backend, FileLimitBackend)
    assert backend.directory == tmp_path / "limits" / "unit"


def test_no_limits_needs_no_backend(local_limits):
    limiter = build_limiter(limit_config(max_in_flight=0, rate_per_second=0))

    with limiter.request("a test request"):
        pass

    assert limiter.backend is None


def test_slot_wait_times_out(limits_env):
    limiter = build_limiter(limit_config(group=f"timeout-{uuid.uuid4().hex[:8]}"))
    started = time.monotonic()

    with limiter.request("the first request"):
        with pytest.raises(LimitTimeout) as caught:
            with limiter.request("tile 13/1/2"):
                pass

    elapsed = time.monotonic() - started
    assert caught.value.transient is True
    assert "tile 13/1/2" in str(caught.value)
    assert "max_in_flight" in str(caught.value)
    assert 0.3 <= elapsed < 1.5


def test_slot_freed_after_block(limits_env):
    limiter = build_limiter(limit_config(group=f"free-{uuid.uuid4().hex[:8]}"))

    with pytest.raises(RuntimeError):
        with limiter.request("a failing request"):
            raise RuntimeError("boom")
    with limiter.request("the next request"):
        pass


def test_rate_wait_beyond_timeout_raises(limits_env):
    limiter = build_limiter(limit_config(group=f"rate-{uuid.uuid4().hex[:8]}", max_in_flight=0,
                                         rate_per_second=1.0, acquire_timeout=0.5))

    with limiter.request("the first request"):
        pass
    with pytest.raises(LimitTimeout) as caught:
        with limiter.request("the second request"):
            pass

    assert "rate_per_second" in str(caught.value)


def test_redis_lease_of_crashed_holder_expires(redis_limits):
    config = limit_config(group=f"lease-{uuid.uuid4().hex[:8]}")
    backend = build_limiter(config).backend
    assert isinstance(backend, RedisLimitBackend)

    # A holder that never releases, like a worker killed mid-request.
    assert backend.try_acquire_slot(0.4) is not None
    assert backend.try_acquire_slot(0.4) is None
    time.sleep(0.5)
    token = backend.try_acquire_slot(5.0)

    assert token is not None
    assert backend.renew_slot(token, 5.0) is True
    backend.release_slot(token)
    assert backend.renew_slot(token, 5.0) is False


def test_redis_unreachable_is_transient(settings):
    # Port 9 (discard) has no listener on 127.0.0.1 in the test environment.
    settings.TILE_LIMITS_REDIS_URL = "redis://127.0.0.1:9/0"
    limiter = build_limiter(limit_config(group=f"down-{uuid.uuid4().hex[:8]}"))

    with pytest.raises(SourceError) as caught:
        with limiter.request("tile 13/1/2"):
            pass

    assert caught.value.transient is True
    assert "Redis at redis://127.0.0.1:9/0" in str(caught.value)
    assert "TILE_LIMITS_REDIS_URL" in str(caught.value)


def test_local_slot_of_killed_holder_freed(local_limits, tmp_path):
    config = limit_config(group="killed")
    directory = tmp_path / "limits" / "killed"
    holder_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tiles.limits import FileLimitBackend, LimitConfig\n"
        f"config = LimitConfig(**{config.__dict__!r})\n"
        f"backend = FileLimitBackend(Path({str(directory)!r}), config)\n"
        "assert backend.try_acquire_slot(1.0) is not None\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        backend = FileLimitBackend(directory, config)
        assert backend.try_acquire_slot(1.0) is None

        holder.kill()
        holder.wait(timeout=10)
        token = backend.try_acquire_slot(1.0)

        assert token is not None
        backend.release_slot(token)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


# --- Limits across two processes ---------------------------------------------------


def run_clients(server: TileServer, env: dict[str, str], config: dict, *, threads: int, requests: int) -> list[dict]:
    """Run two load clients at once against the server and return their results."""
    start_at = time.time() + 3.0
    child_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    children = []
    for client in ("A", "B"):
        command = [
            sys.executable, "-m", "tests.xyzload", "--config", json.dumps(config), "--client", client,
            "--threads", str(threads), "--requests", str(requests), "--start-at", str(start_at),
            "--time-limit", "60",
        ]
        children.append(
            subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        )
    results = []
    for child in children:
        try:
            stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT_SECONDS)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        assert child.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def max_overlap(records: list[RequestRecord]) -> int:
    """Return the most requests in flight at once, computed from the log's intervals."""
    events = sorted([(record.start, 1) for record in records] + [(record.end, -1) for record in records])
    current = peak = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak


def clients_overlap(records: list[RequestRecord]) -> bool:
    """Return whether a request of client A and one of client B were in flight at the same time."""
    first = [record for record in records if record.client == "A"]
    second = [record for record in records if record.client == "B"]
    return any(a.start < b.end and b.start < a.end for a in first for b in second)


def max_in_window(starts: list[float], window: float = 1.0) -> int:
    """Return the most request starts within any half-open window of the given length."""
    ordered = sorted(starts)
    return max(bisect.bisect_left(ordered, start + window) - index for index, start in enumerate(ordered))


@pytest.mark.slow
def test_in_flight_cap_across_processes(server, limits_env):
    cap = 4
    server.configure(latency=0.05)
    config = {"url": server.template, "timeout": 5, "retries": 0, "max_in_flight": cap,
              "limit_group": f"cap-{uuid.uuid4().hex[:8]}", "acquire_timeout": 30}

    # Each process alone runs 6 threads, more than the cap, so a per-process
    # cap would let the server see up to 12 requests at once.
    results = run_clients(server, limits_env, config, threads=6, requests=48)

    records = server.records()
    span = max(record.end for record in records) - min(record.start for record in records)
    busy = sum(record.end - record.start for record in records)
    print(f"cap {cap}: server max in flight {server.max_in_flight}, {len(records)} requests in {span:.2f} s, "
          f"slot utilisation {busy / span / cap:.2f}")
    assert [result["outcomes"] for result in results] == [{"ok": 48}, {"ok": 48}]
    assert server.total == 96
    assert server.max_in_flight <= cap
    assert server.max_in_flight == cap
    assert max_overlap(records) == cap
    assert clients_overlap(records)
    # 96 requests of 50 ms at 4 at a time take at least 1.2 s.
    assert span >= 1.2


@pytest.mark.slow
def test_rate_limit_across_processes(server, limits_env):
    rate = 20
    config = {"url": server.template, "timeout": 5, "retries": 0, "max_in_flight": 0, "rate_per_second": rate,
              "limit_group": f"rate-{uuid.uuid4().hex[:8]}", "acquire_timeout": 30}

    results = run_clients(server, limits_env, config, threads=4, requests=40)

    starts = [record.start for record in server.records()]
    span = max(starts) - min(starts)
    window_peak = max_in_window(starts)
    average = (len(starts) - 1) / span
    print(f"rate {rate}/s: {len(starts)} requests in {span:.2f} s, average {average:.2f}/s, "
          f"max {window_peak} in any 1 s window")
    assert [result["outcomes"] for result in results] == [{"ok": 40}, {"ok": 40}]
    assert len(starts) == 80
    # Starts spaced 1/rate apart put at most rate + 1 in a 1 s window. The
    # one extra allows for a request that reached the server late.
    assert window_peak <= rate + 2
    # The limit is reached, not undershot: 79 gaps of 50 ms take about 3.95 s.
    assert average >= rate * 0.8
    assert average <= rate * 1.05
    assert {record.client for record in server.records()} == {"A", "B"}


@pytest.mark.slow
def test_cap_and_rate_within_one_process(server, limits_env):
    server.configure(latency=0.1)
    source = make_source(server, max_in_flight=3, rate_per_second=50, fetch_threads=8,
                         limit_group=f"both-{uuid.uuid4().hex[:8]}")
    addresses = [TileAddress("landsat", "landsat-tvi-true", Period.DRY, 2020, None, 14, x, 7) for x in range(30)]

    results = source.fetch_many(addresses)

    assert all(isinstance(data, bytes) for data in results.values())
    assert server.max_in_flight == 3
    assert max_in_window([record.start for record in server.records()]) <= 52
