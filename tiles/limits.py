"""Request limits shared by every process that fetches tiles from one upstream server.

A ``RequestLimiter`` enforces two limits per limit group (by default one
group per layer):

- a cap on requests in flight: a request holds a slot from before it is
  sent until its response body is read;
- a rate limit on request starts: starts are spaced at least
  ``1 / rate_per_second`` seconds apart (a generic cell rate algorithm with
  a burst of one), so any one-second window holds at most ``rate + 1`` starts.

Two backends store the shared state:

- Redis, when ``settings.TILE_LIMITS_REDIS_URL`` is set: the limits hold
  across every worker on every machine. A slot is a lease token in a sorted
  set scored by its expiry time, so a slot whose holder crashed frees itself
  when the lease expires. Lua scripts read the clock with Redis ``TIME``, so
  the clocks of the worker machines do not matter.
- Lock files under ``settings.VAR_DIR / "limits"`` otherwise: a slot is an
  exclusive ``flock`` on one of N slot files, which the kernel releases when
  its holder dies, and the rate limit is a timestamp in a locked file. These
  limits hold only among the processes of one machine.

Waiting for a slot or a start time is bounded by ``acquire_timeout``; past
it the limiter raises ``LimitTimeout``, a transient ``SourceError``.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings

from tiles.errors import SourceError

logger = logging.getLogger(__name__)

# Bounds of the randomised pause between two tries to take a slot. The pause
# grows from the first value to the second, and its randomness keeps many
# waiting workers from polling Redis in lockstep.
SLOT_POLL_FIRST_SECONDS = 0.005
SLOT_POLL_MAX_SECONDS = 0.05
# Keys of an idle limit group expire this long after their last lease or
# reservation, so a renamed group leaves nothing behind.
IDLE_KEY_TTL_MILLISECONDS = 60_000
# A stored start time further ahead than this is treated as stale (the
# system clock was set back) and replaced, instead of stalling every request.
MAX_RESERVATION_AHEAD_SECONDS = 3600.0
# Seconds the Redis client waits to connect and for each reply.
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0


class LimitTimeout(SourceError):
    """Waiting for a request slot or a start time exceeded ``acquire_timeout``."""

    def __init__(self, message: str):
        super().__init__(message, transient=True)


@dataclass(frozen=True)
class LimitConfig:
    """The limits of one limit group, as one caller configures them.

    Every process of a group must use the same values: the Redis scripts
    compare against the caller's cap and interval, so a process with a
    higher cap can fill slots that others would leave free.
    """

    group: str
    # None or 0 disables the cap.
    max_in_flight: int | None
    # None or 0 disables the rate limit.
    rate_per_second: float | None
    # Maximum wait for a slot plus a start time, in seconds.
    acquire_timeout: float
    # Maximum time one request may hold its slot after its start time, in
    # seconds. A Redis lease expires after it, which frees the slot of a
    # crashed holder.
    hold_seconds: float

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", self.group):
            raise ValueError(
                f"Invalid limit group {self.group!r}; use 1 to 100 letters, digits, '_', '.', ':' or '-'."
            )
        if self.max_in_flight is not None and self.max_in_flight < 0:
            raise ValueError(f"Invalid max_in_flight {self.max_in_flight}; use a positive integer, or 0 for no cap.")
        if self.rate_per_second is not None and self.rate_per_second < 0:
            raise ValueError(
                f"Invalid rate_per_second {self.rate_per_second}; use a positive number, or 0 for no rate limit."
            )
        if self.acquire_timeout <= 0:
            raise ValueError(f"Invalid acquire_timeout {self.acquire_timeout}; use a positive number of seconds.")
        if self.hold_seconds <= 0:
            raise ValueError(f"Invalid hold_seconds {self.hold_seconds}; use a positive number of seconds.")

    @property
    def cap(self) -> int:
        return self.max_in_flight or 0

    @property
    def interval(self) -> float:
        """Seconds between two request starts, or 0 without a rate limit."""
        return 1.0 / self.rate_per_second if self.rate_per_second else 0.0


class LimitBackend(abc.ABC):
    """Shared state of one limit group: the slots and the next start time."""

    name = "abstract"
    # Where the state lives and what to check when it fails, for error messages.
    location = ""
    remedy = ""

    @abc.abstractmethod
    def try_acquire_slot(self, lease_seconds: float) -> object | None:
        """Take a free slot and return its token, or return None when all slots are taken."""

    @abc.abstractmethod
    def renew_slot(self, token: object, lease_seconds: float) -> bool:
        """Extend a slot's lease to ``lease_seconds`` from now; return False when it was lost."""

    @abc.abstractmethod
    def release_slot(self, token: object) -> None: ...

    @abc.abstractmethod
    def reserve_start(self, max_wait: float) -> float | None:
        """Reserve the next start time and return the seconds until it.

        Returns None, reserving nothing, when the start time is more than
        ``max_wait`` seconds away.
        """


class RequestLimiter:
    """Applies one limit group's cap and rate limit around each request."""

    def __init__(self, config: LimitConfig, backend: LimitBackend | None):
        if backend is None and (config.cap or config.interval):
            raise ValueError(f"Limit group {config.group!r} sets limits but has no backend to store them.")
        self.config = config
        self.backend = backend
        # Threads of this process waiting for a slot are woken as soon as
        # another thread of the process releases one, so a slot freed here
        # is taken again without waiting for the next poll.
        self._slot_released = threading.Condition()

    @contextlib.contextmanager
    def request(self, description: str) -> Iterator[None]:
        """Wait for a slot and a start time, then run the block while holding the slot.

        ``description`` names the request in ``LimitTimeout`` messages. The
        slot is released when the block ends, also on an exception.
        """
        config = self.config
        deadline = time.monotonic() + config.acquire_timeout
        token: object | None = None
        if config.cap:
            # The first lease covers the wait for a start time as well; it is
            # shortened to hold_seconds once the request starts.
            token = self._acquire_slot(deadline, config.acquire_timeout + config.hold_seconds, description)
        try:
            if config.interval:
                self._wait_for_start(deadline, description)
                if token is not None:
                    self._renew_slot(token)
            yield
        finally:
            if token is not None:
                self._release_slot(token)

    def _acquire_slot(self, deadline: float, lease_seconds: float, description: str) -> object:
        assert self.backend is not None
        pause = SLOT_POLL_FIRST_SECONDS
        while True:
            token = self._call_backend(self.backend.try_acquire_slot, lease_seconds)
            if token is not None:
                return token
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LimitTimeout(
                    f"Waited {self.config.acquire_timeout:g} s for one of the {self.config.cap} request slots "
                    f"of limit group {self.config.group!r} ({self.backend.name} backend) for {description}; "
                    "all stayed taken. Raise max_in_flight or acquire_timeout, or run fewer workers."
                )
            with self._slot_released:
                self._slot_released.wait(min(remaining, random.uniform(pause / 2, pause)))
            pause = min(pause * 1.5, SLOT_POLL_MAX_SECONDS)

    def _wait_for_start(self, deadline: float, description: str) -> None:
        assert self.backend is not None
        max_wait = max(0.0, deadline - time.monotonic())
        wait = self._call_backend(self.backend.reserve_start, max_wait)
        if wait is None:
            raise LimitTimeout(
                f"The rate limit of {self.config.rate_per_second:g} requests/s of limit group "
                f"{self.config.group!r} ({self.backend.name} backend) would delay {description} by more than "
                f"the {max_wait:.1f} s left of acquire_timeout. Raise rate_per_second or acquire_timeout, "
                "or run fewer workers."
            )
        if wait > 0:
            time.sleep(wait)

    def _renew_slot(self, token: object) -> None:
        assert self.backend is not None
        try:
            renewed = self.backend.renew_slot(token, self.config.hold_seconds)
        except redis.RedisError as error:
            logger.warning("Renewing a request slot of limit group %r failed: %s", self.config.group, error)
            return
        if not renewed:
            # Only possible when this process stalled longer than the first
            # lease; the request goes on, so the cap may be exceeded by one.
            logger.warning(
                "The request slot lease of limit group %r expired before its request started.", self.config.group
            )

    def _release_slot(self, token: object) -> None:
        assert self.backend is not None
        try:
            self.backend.release_slot(token)
        except (redis.RedisError, OSError) as error:
            # A Redis lease then expires after hold_seconds; a lock file's
            # lock ends when its descriptor is closed, which release_slot
            # always does.
            logger.warning("Releasing a request slot of limit group %r failed: %s", self.config.group, error)
        with self._slot_released:
            self._slot_released.notify()

    def _call_backend(self, method, *args):
        assert self.backend is not None
        try:
            return method(*args)
        except (redis.RedisError, OSError) as error:
            raise SourceError(
                f"The request limits of group {self.config.group!r} are unavailable because "
                f"{self.backend.location} failed: {error}. {self.backend.remedy}",
                transient=True,
            ) from error


# --- Redis backend -----------------------------------------------------------

# Every script reads the time from Redis so that all machines share one clock.
# Milliseconds since the epoch with a microsecond fraction.
_REDIS_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
"""

# Keep the key alive at least ``lease`` plus the idle TTL from now.
_REDIS_EXTEND_TTL = """
local keep = math.ceil(lease) + tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
"""

# KEYS[1]: sorted set of lease tokens scored by expiry (ms).
# ARGV: cap, lease (ms), idle TTL (ms), token. Returns 1 when the slot is taken.
_ACQUIRE_SLOT_SCRIPT = (
    _REDIS_NOW
    + """
local cap = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
"""
    + _REDIS_EXTEND_TTL
    + """
return 1
"""
)

# ARGV: unused, lease (ms), idle TTL (ms), token. Returns 0 when the lease was already dropped.
_RENEW_SLOT_SCRIPT = (
    _REDIS_NOW
    + """
local lease = tonumber(ARGV[2])
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[4])
if (not expiry) or tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[4])
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
"""
    + _REDIS_EXTEND_TTL
    + """
return 1
"""
)

# KEYS[1]: the theoretical arrival time (ms) of the next request start.
# ARGV: interval (ms), max wait (ms), idle TTL (ms). Returns the wait in
# microseconds, or -1 when it would exceed the max wait.
_RESERVE_START_SCRIPT = (
    _REDIS_NOW
    + """
local interval = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local next_start = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, next_start)
local wait = start - now
if wait > max_wait then
  return -1
end
redis.call('SET', KEYS[1], string.format('%.3f', start + interval), 'PX',
  math.ceil(wait + interval) + tonumber(ARGV[3]))
return math.floor(wait * 1000)
"""
)

_redis_clients: dict[str, redis.Redis] = {}
_redis_clients_lock = threading.Lock()


def redis_client(url: str) -> redis.Redis:
    """Return this process's client for a Redis URL; its pool reconnects after a fork."""
    with _redis_clients_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                health_check_interval=30,
            )
            _redis_clients[url] = client
        return client


class RedisLimitBackend(LimitBackend):
    name = "redis"

    def __init__(self, client: redis.Redis, key_prefix: str, config: LimitConfig):
        self.client = client
        self.config = config
        self.location = f"Redis at {redact_url(_client_url(client))}"
        self.remedy = "Start Redis or fix TILE_LIMITS_REDIS_URL."
        self.slots_key = f"{key_prefix}:{config.group}:in_flight"
        self.start_key = f"{key_prefix}:{config.group}:next_start"
        self._acquire = client.register_script(_ACQUIRE_SLOT_SCRIPT)
        self._renew = client.register_script(_RENEW_SLOT_SCRIPT)
        self._reserve = client.register_script(_RESERVE_START_SCRIPT)

    def try_acquire_slot(self, lease_seconds: float) -> str | None:
        token = uuid.uuid4().hex
        acquired = self._acquire(
            keys=[self.slots_key],
            args=[self.config.cap, _milliseconds(lease_seconds), IDLE_KEY_TTL_MILLISECONDS, token],
        )
        return token if acquired == 1 else None

    def renew_slot(self, token: object, lease_seconds: float) -> bool:
        renewed = self._renew(
            keys=[self.slots_key],
            args=[0, _milliseconds(lease_seconds), IDLE_KEY_TTL_MILLISECONDS, str(token)],
        )
        return renewed == 1

    def release_slot(self, token: object) -> None:
        self.client.zrem(self.slots_key, str(token))

    def reserve_start(self, max_wait: float) -> float | None:
        wait_microseconds = self._reserve(
            keys=[self.start_key],
            args=[f"{self.config.interval * 1000:.6f}", _milliseconds(max_wait), IDLE_KEY_TTL_MILLISECONDS],
        )
        if wait_microseconds < 0:
            return None
        return wait_microseconds / 1_000_000


def _client_url(client: redis.Redis) -> str:
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"unix://{options['path']}"
    return f"redis://{options.get('host', '?')}:{options.get('port', '?')}/{options.get('db', 0)}"


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


# --- Lock-file backend -------------------------------------------------------


class FileLimitBackend(LimitBackend):
    """Slots and the next start time in lock files of one folder.

    ``flock`` locks belong to an open file description, so two threads of one
    process that each open a slot file exclude each other like two processes
    do. NOTE: ``flock`` is only reliable on a local filesystem; the folder
    must not be on NFS or another network filesystem.
    """

    name = "local"

    def __init__(self, directory: Path, config: LimitConfig):
        self.directory = directory
        self.config = config
        self.location = f"the lock files in {directory}"
        self.remedy = "Check that CACHECAMPAIGN_VAR_DIR is a writable local folder."
        directory.mkdir(parents=True, exist_ok=True)
        self.start_path = directory / "next_start"

    def try_acquire_slot(self, lease_seconds: float) -> int | None:
        cap = self.config.cap
        # Starting at a random slot spreads the callers over the files, so
        # most find a free one on the first try.
        first = random.randrange(cap)
        for offset in range(cap):
            path = self.directory / f"slot-{(first + offset) % cap}.lock"
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(descriptor)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue
                raise
            return descriptor
        return None

    def renew_slot(self, token: object, lease_seconds: float) -> bool:
        # A lock-file slot has no lease: it lasts until its descriptor closes.
        return True

    def release_slot(self, token: object) -> None:
        assert isinstance(token, int)
        # Closing the descriptor releases its lock.
        os.close(token)

    def reserve_start(self, max_wait: float) -> float | None:
        descriptor = os.open(self.start_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            now = time.time()
            next_start = _parse_timestamp(os.pread(descriptor, 64, 0))
            if next_start > now + MAX_RESERVATION_AHEAD_SECONDS:
                next_start = 0.0
            start = max(now, next_start)
            wait = start - now
            if wait > max_wait:
                return None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{start + self.config.interval:.6f}".encode(), 0)
            return wait
        finally:
            os.close(descriptor)


def _parse_timestamp(raw: bytes) -> float:
    try:
        return float(raw.decode("ascii").strip() or 0.0)
    except (UnicodeDecodeError, ValueError):
        return 0.0


# --- Choosing a backend ------------------------------------------------------


def build_limiter(config: LimitConfig) -> RequestLimiter:
    """Build a limiter whose backend follows ``settings.TILE_LIMITS_REDIS_URL``."""
    if not config.cap and not config.interval:
        return RequestLimiter(config, None)
    redis_url = settings.TILE_LIMITS_REDIS_URL
    backend: LimitBackend
    if redis_url:
        backend = RedisLimitBackend(redis_client(redis_url), settings.TILE_LIMITS_KEY_PREFIX, config)
    else:
        backend = FileLimitBackend(Path(settings.VAR_DIR) / "limits" / config.group, config)
    return RequestLimiter(config, backend)


def redact_url(url: str) -> str:
    """Return a URL with its user info and every query value replaced by ``***``.

    Both can carry secrets: API keys are often passed as a user name or as a
    query parameter.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{pair.split('=', 1)[0]}=***" if "=" in pair else pair for pair in parts.query.split("&") if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
