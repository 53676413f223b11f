"""Locks that let exactly one worker produce a tile that several workers need at once.

A worker locks the keys of the tiles it is about to produce, checks storage
again under the lock, and produces only what is still missing; a worker that
waited on the lock then finds the tile stored. With a Redis URL the locks
hold across machines; without one they are ``flock`` locks on files in the
local scratch folder, which hold across the processes of one machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from django.conf import settings

from tiles.errors import SourceError

logger = logging.getLogger(__name__)

# Local locks hash keys into this many lock files. Two tiles that share a file
# only wait for each other, so the number bounds open files, not safety.
LOCAL_LOCK_BUCKETS = 4096
LOCK_WAIT_SECONDS = 120.0
# A Redis lock expires this long after its holder last renewed it, so the
# locks of a killed worker free their tiles within seconds. A live holder
# renews its locks every REDIS_LOCK_RENEW_SECONDS for as long as it holds
# them, however long producing the tiles takes.
REDIS_LOCK_TTL_MS = 15_000
REDIS_LOCK_RENEW_SECONDS = 5.0

# Takes the locks of KEYS in order, each set to the token ARGV[1] for ARGV[2]
# ms, stops at the first lock held elsewhere and returns how many it took.
# tile_locks sorts the keys before calling it, so two holders never wait on
# each other in a cycle. One call per run of free locks saves a round trip per tile.
_ACQUIRE_SCRIPT = """
local taken = 0
for i, key in ipairs(KEYS) do
  if not redis.call('set', key, ARGV[1], 'NX', 'PX', ARGV[2]) then return taken end
  taken = taken + 1
end
return taken
"""
# Deletes every lock of KEYS that still holds the token ARGV[1].
_RELEASE_SCRIPT = """
local released = 0
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    released = released + 1
  end
end
return released
"""
# Extends every lock of KEYS that still holds the token ARGV[1] to ARGV[2] ms.
_RENEW_SCRIPT = """
local renewed = 0
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('pexpire', key, ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""


def _redis_url() -> str:
    url = getattr(settings, "TILE_LOCKS_REDIS_URL", "") or ""
    if not url and settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        url = settings.CELERY_BROKER_URL
    return url


@contextlib.contextmanager
def tile_locks(keys: Iterable[str]) -> Iterator[None]:
    """Hold the locks of ``keys`` for the duration of the block."""
    unique = sorted(set(keys))
    if not unique:
        yield
        return
    url = _redis_url()
    if url:
        with _redis_locks(url, unique):
            yield
    else:
        with _file_locks(unique):
            yield


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % LOCAL_LOCK_BUCKETS


@contextlib.contextmanager
def _file_locks(keys: list[str]) -> Iterator[None]:
    folder = Path(settings.VAR_DIR) / "locks" / "tiles"
    folder.mkdir(parents=True, exist_ok=True)
    # Buckets are locked once each and in ascending order, so two workers
    # never wait on each other in a cycle.
    buckets = sorted({_bucket(key) for key in keys})
    descriptors: list[int] = []
    try:
        for bucket in buckets:
            descriptor = os.open(folder / f"{bucket:04d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            descriptors.append(descriptor)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        for descriptor in reversed(descriptors):
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)


_redis_clients: dict[str, object] = {}


def _redis_client(url: str):
    import redis

    client = _redis_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        _redis_clients[url] = client
    return client


def _take_locks(client, names: list[str], token: str) -> int:
    """Take the locks of ``names`` in order up to the first one held elsewhere; return how many were taken.

    A failing Redis command raises a transient ``SourceError``, which fails
    the tiles being locked, as any tile error does, instead of escaping from
    ``seed_tiles`` and failing the whole task or request.
    """
    import redis

    try:
        return int(client.eval(_ACQUIRE_SCRIPT, len(names), *names, token, REDIS_LOCK_TTL_MS))
    except redis.RedisError as error:
        raise SourceError(f"Taking tile lock {names[0]} in Redis failed: {error}; try again once Redis is reachable.",
                          transient=True) from error


class _LockRenewer(threading.Thread):
    """Renews the Redis locks one holder has taken so far, until stopped."""

    def __init__(self, client, token: str, held: list[str]):
        super().__init__(name="tile-lock-renewer", daemon=True)
        self.client = client
        self.token = token
        self.held = held
        self.stopped = threading.Event()

    def run(self) -> None:
        import redis

        while not self.stopped.wait(REDIS_LOCK_RENEW_SECONDS):
            names = list(self.held)
            if not names:
                continue
            try:
                self.client.eval(_RENEW_SCRIPT, len(names), *names, self.token, REDIS_LOCK_TTL_MS)
            except redis.RedisError as error:
                logger.warning("Renewing %d tile locks failed: %s; they expire within %d ms unless a later "
                               "renewal succeeds", len(names), error, REDIS_LOCK_TTL_MS)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=REDIS_LOCK_RENEW_SECONDS)


@contextlib.contextmanager
def _redis_locks(url: str, keys: list[str]) -> Iterator[None]:
    client = _redis_client(url)
    token = uuid.uuid4().hex
    names = [f"cachecampaign:tile-lock:{key}" for key in keys]
    held: list[str] = []
    renewer = _LockRenewer(client, token, held)
    renewer.start()
    try:
        while len(held) < len(names):
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            delay = 0.01
            while True:
                waiting = names[len(held):]
                taken = _take_locks(client, waiting, token)
                held.extend(waiting[:taken])
                if taken:
                    break
                if time.monotonic() > deadline:
                    raise SourceError(
                        f"Waited {LOCK_WAIT_SECONDS:.0f} s for another worker to produce tile {waiting[0]}; "
                        "try again.",
                        transient=True,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        renewer.stop()
        if held:
            try:
                client.eval(_RELEASE_SCRIPT, len(held), *held, token)
            except Exception as error:  # noqa: BLE001 - the locks expire by themselves
                logger.warning("Releasing %d tile locks failed: %s; they expire in %d ms", len(held), error,
                               REDIS_LOCK_TTL_MS)
