"""Tile locks free the tiles of a killed holder quickly and stay held for a live one.

A worker killed while it produces tiles cannot release its locks. File
locks are released by the kernel when the process dies; Redis locks expire
REDIS_LOCK_TTL_MS after their last renewal, and a live holder renews them.
The Redis tests shorten both times and use a redis-server of their own.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import redis

from tests.redisserver import redis_server_available, running_redis
from tests.workers import ROOT, worker_environment
from tiles import locks

KEY = "landsat/landsat-tvi-true/DRY/2020/13/2940/4705.png"
LOCK_NAME = f"cachecampaign:tile-lock:{KEY}"
needs_redis_server = pytest.mark.skipif(not redis_server_available(), reason="redis-server is not installed")


@pytest.fixture
def lock_redis(tmp_path, settings, monkeypatch):
    with running_redis(tmp_path / "redis") as server:
        settings.TILE_LOCKS_REDIS_URL = server.url(0)
        monkeypatch.setattr(locks, "REDIS_LOCK_TTL_MS", 1000)
        monkeypatch.setattr(locks, "REDIS_LOCK_RENEW_SECONDS", 0.2)
        yield redis.Redis.from_url(server.url(0))


def acquire_seconds() -> float:
    began = time.monotonic()
    with locks.tile_locks([KEY]):
        return time.monotonic() - began


@needs_redis_server
def test_dead_holder_lock_expires(lock_redis):
    # A holder that died right after taking the lock never renews it.
    lock_redis.set(LOCK_NAME, "token-of-a-killed-worker", px=1000)

    waited = acquire_seconds()

    assert 0.5 < waited < 3.0
    assert lock_redis.get(LOCK_NAME) is None


@needs_redis_server
def test_live_holder_keeps_lock(lock_redis):
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with locks.tile_locks([KEY]):
            holding.set()
            release.wait(timeout=10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(timeout=5)
    # Four times the lock's lifetime later, the renewals have kept it.
    time.sleep(4 * locks.REDIS_LOCK_TTL_MS / 1000)
    still_held = lock_redis.get(LOCK_NAME)
    threading.Timer(0.5, release.set).start()

    waited = acquire_seconds()
    holder.join(timeout=10)

    assert still_held is not None
    assert waited >= 0.4
    assert lock_redis.get(LOCK_NAME) is None


def test_file_lock_of_killed_process_frees_at_once(settings):
    settings.TILE_LOCKS_REDIS_URL = ""
    settings.CELERY_BROKER_URL = "filesystem://"
    holder_code = (
        "import django, sys, time; django.setup(); from tiles.locks import tile_locks\n"
        f"with tile_locks([{KEY!r}]):\n    print('held', flush=True); time.sleep(60)\n"
    )
    environment = worker_environment({"CELERY_BROKER_URL": "filesystem://", "DJANGO_SETTINGS_MODULE":
                                      "cachecampaign.settings"})
    holder = subprocess.Popen([sys.executable, "-c", holder_code], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()
        holder.wait(timeout=10)

        waited = acquire_seconds()
    finally:
        if holder.poll() is None:
            holder.kill()

    assert waited < 1.0
