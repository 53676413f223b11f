"""A tile source that fetches tiles from an upstream XYZ tile server over HTTP.

Configured per layer in ``settings.TILE_SOURCES``, for example::

    {"kind": "xyz",
     "url": "https://tiles.example.org/{layer}/{visparam}/{period}/{year}/{month}/{z}/{x}/{y}.png",
     "timeout": 10, "retries": 4, "backoff": 0.5, "backoff_max": 30,
     "max_in_flight": 8, "rate_per_second": 20}

Every process fetching through the same limit group shares one cap on
requests in flight and one request rate (see ``tiles.limits``).
"""

from __future__ import annotations

import email.utils
import io
import logging
import math
import os
import random
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import urllib3
from django.core.exceptions import ImproperlyConfigured
from PIL import Image, UnidentifiedImageError

from tiles.address import TileAddress
from tiles.errors import SourceError, SourceTimeout
from tiles.limits import LimitConfig, build_limiter, redact_url
from tiles.render import EMPTY_TILE
from tiles.sources.base import TileSource
from tiles.storage import tile_key

logger = logging.getLogger(__name__)

URL_PLACEHOLDERS = frozenset({"x", "y", "z", "year", "period", "month", "visparam", "layer"})
REQUIRED_PLACEHOLDERS = frozenset({"x", "y", "z"})

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# Larger bodies or images are rejected: a map tile is 256 or 512 pixels wide
# and well under a megabyte, so anything bigger is a wrong URL or an attack.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
# Statuses worth another attempt besides 5xx: 408 Request Timeout and 429 Too Many Requests.
RETRYABLE_CLIENT_STATUSES = frozenset({408, 429})
EMPTY_STATUSES = frozenset({204, 404})
# Error bodies up to this size are read and discarded so the connection is reused.
MAX_DRAINED_BYTES = 64 * 1024

DEFAULTS: dict[str, Any] = {
    "timeout": 10.0,
    "retries": 4,
    "backoff": 0.5,
    "backoff_max": 30.0,
    "max_in_flight": 8,
    "rate_per_second": None,
    "acquire_timeout": 60.0,
    "fetch_threads": 4,
}
# The connect timeout is the read timeout, but no more than this many seconds,
# unless "connect_timeout" sets it.
MAX_DEFAULT_CONNECT_TIMEOUT = 5.0
USER_AGENT = f"cachecampaign tile seeder (urllib3/{urllib3.__version__})"


@dataclass(frozen=True)
class XYZConfig:
    url: str
    connect_timeout: float
    read_timeout: float
    # Maximum time one attempt may take from sending the request to the end
    # of the body, in seconds. The read timeout bounds each socket read but
    # not a body that trickles in.
    total_timeout: float
    retries: int
    backoff: float
    backoff_max: float
    max_in_flight: int | None
    rate_per_second: float | None
    acquire_timeout: float
    fetch_threads: int
    limit_group: str
    headers: dict[str, str]


@dataclass(frozen=True)
class _Failure:
    """One failed attempt and whether another attempt may succeed."""

    reason: str
    retryable: bool
    status: int | None = None
    timed_out: bool = False
    # Seconds the server asked to wait (Retry-After), before the backoff_max cap.
    retry_after: float | None = None


@dataclass(frozen=True)
class _Image:
    """The body of a 200 response, not checked yet."""

    body: bytes
    content_type: str


class XYZSource(TileSource):
    def __init__(self, layer: str, config: dict):
        super().__init__(layer, config)
        self.options = parse_config(layer, config)
        try:
            limits = LimitConfig(
                group=self.options.limit_group,
                max_in_flight=self.options.max_in_flight,
                rate_per_second=self.options.rate_per_second,
                acquire_timeout=self.options.acquire_timeout,
                # A request ends within total_timeout plus one read timeout,
                # because the deadline is checked between reads. The extra
                # 5 s cover the time to release the slot.
                hold_seconds=self.options.total_timeout + self.options.read_timeout + 5.0,
            )
        except ValueError as error:
            raise ImproperlyConfigured(f"TILE_SOURCES[{layer!r}] has invalid limits: {error}") from error
        self.limiter = build_limiter(limits)

    def fetch(self, address: TileAddress) -> bytes:
        options = self.options
        url = self.tile_url(address)
        tile = tile_key(address)
        attempts = options.retries + 1
        failure: _Failure | None = None
        for attempt in range(1, attempts + 1):
            with self.limiter.request(f"tile {tile}"):
                outcome = self._attempt(url)
            # The image is checked after the request slot is released, so
            # that the slot serves the next request meanwhile.
            if isinstance(outcome, _Image):
                outcome = _png_from_body(outcome.body, outcome.content_type)
            if isinstance(outcome, bytes):
                return outcome
            failure = outcome
            if not failure.retryable:
                raise SourceError(
                    f"Fetching tile {tile} from {redact_url(url)} failed because the request {failure.reason}. "
                    f"Check the URL template, credentials and headers of TILE_SOURCES[{self.layer!r}].",
                    transient=False,
                    status=failure.status,
                )
            if attempt == attempts:
                break
            wait = self._retry_wait(attempt, failure)
            logger.log(
                logging.INFO if failure.status == 429 else logging.WARNING,
                "Attempt %d of %d for tile %s from %s failed: %s; retrying in %.2f s.",
                attempt, attempts, tile, redact_url(url), failure.reason, wait,
            )
            time.sleep(wait)
        assert failure is not None
        message = (
            f"Fetching tile {tile} from {redact_url(url)} failed after {attempts} attempts because the last "
            f"one {failure.reason}. Check that the tile server is up, or raise 'retries' or 'backoff_max' in "
            f"TILE_SOURCES[{self.layer!r}]."
        )
        if failure.timed_out:
            raise SourceTimeout(message)
        raise SourceError(message, transient=True, status=failure.status)

    def fetch_many(self, addresses: list[TileAddress]) -> dict[TileAddress, bytes | Exception]:
        """Fetch tiles on up to ``fetch_threads`` threads; the shared limits still apply to each request."""
        if len(addresses) <= 1 or self.options.fetch_threads <= 1:
            return super().fetch_many(addresses)

        def fetch_one(address: TileAddress) -> bytes | Exception:
            try:
                return self.fetch(address)
            except Exception as error:  # noqa: BLE001 - returned to the caller, which counts and records it
                return error

        return dict(zip(addresses, fetch_pool(self.options.fetch_threads).map(fetch_one, addresses), strict=True))

    def tile_url(self, address: TileAddress) -> str:
        values = {
            "x": address.x,
            "y": address.y,
            "z": address.z,
            "year": address.year,
            "period": address.period.value,
            "month": "" if address.month is None else address.month,
            "visparam": address.vis_param,
            "layer": address.layer,
        }
        return self.options.url.format_map({name: quote(str(value), safe="") for name, value in values.items()})

    def _attempt(self, url: str) -> _Image | bytes | _Failure:
        """Send one request; return the image body to check, the empty tile or the failure."""
        options = self.options
        deadline = time.monotonic() + options.total_timeout
        try:
            response = http_pool().request(
                "GET",
                url,
                headers=options.headers or None,
                timeout=urllib3.Timeout(connect=options.connect_timeout, read=options.read_timeout),
                retries=REDIRECTS_ONLY,
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as error:
            return _request_failure(error, options)
        try:
            status = response.status
            if status == 200:
                body = _read_body(response, deadline, options.total_timeout)
                if isinstance(body, _Failure):
                    return body
                return _Image(body, response.headers.get("Content-Type", ""))
            _drain(response)
            if status in EMPTY_STATUSES:
                return EMPTY_TILE
            return _status_failure(status, response.headers.get("Retry-After"))
        except urllib3.exceptions.HTTPError as error:
            # The connection is in an unknown state after a failed read: drop it.
            response.close()
            return _request_failure(error, options)
        finally:
            response.release_conn()

    def _retry_wait(self, attempt: int, failure: _Failure) -> float:
        """Return the pause before the next attempt, in seconds.

        A Retry-After value is honoured up to ``backoff_max``; otherwise the
        pause is drawn uniformly from 0 to ``backoff * 2 ** (attempt - 1)``,
        capped at ``backoff_max`` ("full jitter").
        """
        options = self.options
        if failure.retry_after is not None:
            return min(failure.retry_after, options.backoff_max)
        ceiling = min(options.backoff_max, options.backoff * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


# --- Response handling -------------------------------------------------------


def _read_body(response: urllib3.BaseHTTPResponse, deadline: float, total_timeout: float) -> bytes | _Failure:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _Failure(f"returned a {declared}-byte body, above the {MAX_BODY_BYTES}-byte limit", retryable=False)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.stream(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _Failure(f"returned a body above the {MAX_BODY_BYTES}-byte limit", retryable=False)
        if time.monotonic() > deadline:
            return _Failure(
                f"timed out: the body took longer than {total_timeout:g} s", retryable=True, timed_out=True
            )
    return b"".join(chunks)


def _drain(response: urllib3.BaseHTTPResponse) -> None:
    """Read a small error body to its end, so that the connection goes back to the pool."""
    size = 0
    for chunk in response.stream(16 * 1024):
        size += len(chunk)
        if size > MAX_DRAINED_BYTES:
            # Closing the connection instead of reading on.
            response.close()
            return


def _png_from_body(body: bytes, content_type: str) -> bytes | _Failure:
    """Return the body as PNG bytes, converting a JPEG, or the failure when it is no valid image.

    An invalid body is retried, because overloaded servers and proxies
    sometimes return 200 with an HTML error page.
    """
    if body.startswith(PNG_SIGNATURE):
        kind = "PNG"
    elif body.startswith(JPEG_SIGNATURE):
        kind = "JPEG"
    else:
        return _Failure(
            f"returned HTTP 200 with a body that is not a PNG or JPEG image "
            f"(Content-Type {content_type or 'missing'!s}, first bytes {body[:16]!r})",
            retryable=True,
            status=200,
        )
    try:
        with Image.open(io.BytesIO(body)) as image:
            width, height = image.size
            if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
                return _Failure(
                    f"returned a {width}x{height} image, above the {MAX_IMAGE_SIDE}-pixel side limit",
                    retryable=False,
                    status=200,
                )
            if kind == "PNG":
                # verify() checks the chunk checksums; a truncated or corrupt PNG fails here.
                image.verify()
                return body
            image.load()
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()
    except UnidentifiedImageError:
        return _Failure(
            f"returned HTTP 200 with an invalid {kind} image (Pillow cannot identify it)", retryable=True, status=200
        )
    except (OSError, SyntaxError, ValueError) as error:
        return _Failure(f"returned HTTP 200 with an invalid {kind} image ({error})", retryable=True, status=200)


def _status_failure(status: int, retry_after: str | None) -> _Failure:
    if status == 429:
        return _Failure("returned HTTP 429", retryable=True, status=status, retry_after=parse_retry_after(retry_after))
    if status >= 500 or status in RETRYABLE_CLIENT_STATUSES:
        return _Failure(f"returned HTTP {status}", retryable=True, status=status)
    return _Failure(f"returned HTTP {status}", retryable=False, status=status)


def _request_failure(error: urllib3.exceptions.HTTPError, options: XYZConfig) -> _Failure:
    cause = _root_cause(error)
    # NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError in urllib3 2.
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return _Failure(f"failed to connect or read: {_short_error(cause)}", retryable=True)
    if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
        return _Failure(f"timed out (connect timeout {options.connect_timeout:g} s)", retryable=True, timed_out=True)
    if isinstance(cause, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return _Failure(f"timed out (read timeout {options.read_timeout:g} s)", retryable=True, timed_out=True)
    if isinstance(cause, urllib3.exceptions.MaxRetryError):
        # Only redirects are followed, so an exhausted budget means a redirect loop.
        return _Failure(f"failed: too many redirects ({_short_error(cause)})", retryable=False)
    if isinstance(cause, (urllib3.exceptions.LocationValueError, urllib3.exceptions.LocationParseError,
                          urllib3.exceptions.URLSchemeUnknown)):
        # An invalid URL fails the same way on every attempt.
        return _Failure(f"failed: {_short_error(cause)}", retryable=False)
    # Refused or reset connections, DNS failures, bodies cut short.
    return _Failure(f"failed to connect or read: {_short_error(cause)}", retryable=True)


def _root_cause(error: Exception) -> Exception:
    """Return the error behind urllib3's wrappers.

    urllib3 reports a failed attempt as a MaxRetryError (no attempt is
    retried here) or a ProtocolError whose ``reason`` or argument is the
    error that happened.
    """
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        if not isinstance(error.reason, urllib3.exceptions.ResponseError):
            return _root_cause(error.reason)
    if isinstance(error, urllib3.exceptions.ProtocolError) and len(error.args) > 1 \
            and isinstance(error.args[1], Exception):
        return error.args[1]
    return error


def _short_error(error: Exception) -> str:
    text = str(error)[-300:]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the wait in seconds that a Retry-After header requests, or None when it is missing or invalid.

    The header contains either a number of seconds or an HTTP-date (RFC 9110,
    section 10.2.3); a date in the past means no wait.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        # RFC 9110 allows only whole seconds; fractions are accepted, negative or non-finite values are not.
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return max(0.0, (when - current).total_seconds())


# --- HTTP connections and fetch threads ---------------------------------------

# Redirects are followed; failed attempts are retried by XYZSource.fetch.
REDIRECTS_ONLY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5,
                               raise_on_redirect=True, raise_on_status=False)
# Connections kept open per upstream host; a few more than the usual
# max_in_flight, so that connections are reused instead of reopened.
POOL_MAX_SIZE = 64

_pool: urllib3.PoolManager | None = None
_pool_pid: int | None = None
_executor: ThreadPoolExecutor | None = None
_executor_key: tuple[int, int] | None = None
_process_lock = threading.Lock()


def http_pool() -> urllib3.PoolManager:
    """Return this process's connection pool, creating a new one after a fork."""
    global _pool, _pool_pid
    with _process_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = urllib3.PoolManager(num_pools=16, maxsize=POOL_MAX_SIZE, headers={"User-Agent": USER_AGENT})
            _pool_pid = os.getpid()
        return _pool


def fetch_pool(threads: int) -> ThreadPoolExecutor:
    """Return this process's fetch threads, kept between points; a new pool after a fork or a new size."""
    global _executor, _executor_key
    key = (os.getpid(), threads)
    with _process_lock:
        if _executor is None or _executor_key != key:
            # A pool inherited through fork has no live threads; it is dropped, not shut down.
            if _executor is not None and _executor_key is not None and _executor_key[0] == key[0]:
                _executor.shutdown(wait=False)
            _executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="xyz-fetch")
            _executor_key = key
        return _executor


# --- Configuration -----------------------------------------------------------


def parse_config(layer: str, raw: dict) -> XYZConfig:
    """Validate a layer's xyz configuration, raising ``ImproperlyConfigured`` naming the bad key."""
    where = f"TILE_SOURCES[{layer!r}]"
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{where}['url'] is {url!r}; set it to an http:// or https:// URL template.")
    _check_placeholders(url, where)
    options = {**DEFAULTS, **raw}

    read_timeout = _number(options, "timeout", where, minimum=0.001)
    connect_timeout = _number(
        {"connect_timeout": options.get("connect_timeout", min(read_timeout, MAX_DEFAULT_CONNECT_TIMEOUT))},
        "connect_timeout", where, minimum=0.001,
    )
    total_default = connect_timeout + 2 * read_timeout
    total_timeout = _number({"total_timeout": options.get("total_timeout", total_default)}, "total_timeout", where,
                            minimum=0.001)
    backoff = _number(options, "backoff", where, minimum=0.0)
    backoff_max = _number(options, "backoff_max", where, minimum=0.0)
    max_in_flight = options.get("max_in_flight")
    if max_in_flight is not None and (not isinstance(max_in_flight, int) or isinstance(max_in_flight, bool)
                                      or max_in_flight < 0):
        raise ImproperlyConfigured(
            f"{where}['max_in_flight'] is {max_in_flight!r}; use a positive integer, or 0 or null for no cap."
        )
    rate = options.get("rate_per_second")
    if rate is not None:
        rate = _number(options, "rate_per_second", where, minimum=0.0)

    headers = options.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ImproperlyConfigured(f"{where}['headers'] must map header names to string values.")
    limit_group = options.get("limit_group") or layer
    return XYZConfig(
        url=url,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        total_timeout=total_timeout,
        retries=_integer(options, "retries", where),
        backoff=backoff,
        backoff_max=backoff_max,
        max_in_flight=max_in_flight or None,
        rate_per_second=rate or None,
        acquire_timeout=_number(options, "acquire_timeout", where, minimum=0.001),
        fetch_threads=max(1, _integer(options, "fetch_threads", where)),
        limit_group=str(limit_group),
        headers=dict(headers),
    )


def _check_placeholders(url: str, where: str) -> None:
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(url)
                  if name is not None]
    except ValueError as error:
        raise ImproperlyConfigured(
            f"{where}['url'] is not a valid template ({error}); escape literal braces as {{{{ }}}}."
        ) from error
    names = {name for name, _, _ in fields}
    # Values are substituted as strings, so a numeric format such as {z:02d} would fail on every fetch.
    formatted = sorted(name for name, spec, conversion in fields if spec or conversion)
    if formatted:
        raise ImproperlyConfigured(
            f"{where}['url'] formats the placeholders {formatted}; write them plainly, as {{z}}, without ':' or '!'."
        )
    unknown = names - URL_PLACEHOLDERS
    if unknown:
        raise ImproperlyConfigured(
            f"{where}['url'] has unknown placeholders {sorted(unknown)}; use only {sorted(URL_PLACEHOLDERS)}."
        )
    missing = REQUIRED_PLACEHOLDERS - names
    if missing:
        raise ImproperlyConfigured(
            f"{where}['url'] lacks the placeholders {sorted(missing)}; add {{z}}, {{x}} and {{y}}."
        )


def _number(options: dict, key: str, where: str, *, minimum: float) -> float:
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ImproperlyConfigured(f"{where}[{key!r}] is {value!r}; use a number of at least {minimum:g}.")
    return float(value)


def _integer(options: dict, key: str, where: str) -> int:
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(f"{where}[{key!r}] is {value!r}; use an integer of 0 or more.")
    return value
