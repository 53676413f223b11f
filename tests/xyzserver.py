"""A threaded XYZ tile server on 127.0.0.1 with injectable faults and request counters.

Tests start it in-process (``TileServer``) or as a child process
(``python -m tests.xyzserver``, which prints ``URL http://127.0.0.1:PORT``).
Any path ending in ``/{z}/{x}/{y}`` with an optional extension is a tile;
its colour depends on z, x and y. Behaviour comes from an ordered list of
``Rule``s, where the first rule matching a request decides the response, plus
a fixed latency for every request.

Control endpoints, not counted as requests:

- ``GET /_stats``: counters and the request log as JSON;
- ``POST /_reset``: zero the counters and clear the log;
- ``POST /_config``: replace the behaviour with a JSON object
  ``{"latency": 0.05, "seed": 1, "rules": [{"status": 503, "first": 2}]}``.

Requests may carry an ``X-Test-Client`` header; the log records it, so a test
can tell which process sent each request.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

HOST = "127.0.0.1"
TILE_PATH = re.compile(r"/(\d+)/(\d+)/(\d+)(?:\.\w+)?$")
TEMPLATE_PATH = "/{layer}/{visparam}/{period}/{year}/{month}/{z}/{x}/{y}.png"
# Sleeping handlers wake up this often to notice that the server is stopping.
SLEEP_SLICE_SECONDS = 0.05
# The log keeps at most this many requests, so a long run cannot exhaust memory.
MAX_LOG_ENTRIES = 100_000
BODY_KINDS = ("png", "jpeg", "invalid", "truncated", "corrupt", "none")


@dataclass
class Rule:
    """One injected behaviour and the requests it applies to.

    A rule applies to a request when all three conditions hold:

    - ``path``, a regular expression searched in the request path, matches
      or is None;
    - the request's 1-based number among the requests of its path is at most
      ``first`` or listed in ``numbers``, or both are None;
    - a draw seeded by the server seed, the path and the number is below
      ``probability``.

    The draw depends only on those three values, so a run repeats the same
    faults whatever the thread timing.
    """

    status: int = 200
    # Body of the response, one of BODY_KINDS: "png" is the tile, "jpeg" the
    # tile as JPEG, "invalid" an HTML page, "truncated" the first 40 bytes of
    # the PNG, "none" an empty body. "corrupt" is the PNG with one byte of its
    # image data flipped, so a chunk checksum fails. Without a body kind,
    # statuses other than 200 return a short text body.
    body: str | None = None
    retry_after: str | None = None
    # Seconds to wait before responding; longer than the client's read
    # timeout, it simulates a server that does not respond in time.
    sleep: float = 0.0
    path: str | None = None
    first: int | None = None
    numbers: list[int] | None = None
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.body is not None and self.body not in BODY_KINDS:
            raise ValueError(f"Invalid rule body {self.body!r}; use one of {', '.join(BODY_KINDS)}.")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"Invalid rule probability {self.probability}; use 0 to 1.")

    def applies(self, path: str, number: int, seed: int) -> bool:
        if self.path is not None and not re.search(self.path, path):
            return False
        if self.first is not None or self.numbers is not None:
            in_first = self.first is not None and number <= self.first
            in_numbers = self.numbers is not None and number in self.numbers
            if not (in_first or in_numbers):
                return False
        if self.probability < 1.0:
            digest = hashlib.sha256(f"{seed}:{path}:{number}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
            return draw < self.probability
        return True


@dataclass
class RequestRecord:
    path: str
    number: int
    client: str
    # Seconds since the server started: when the request arrived and when
    # its response was about to be written.
    start: float
    end: float | None = None
    status: int | None = None


@dataclass
class ServerState:
    latency: float = 0.0
    seed: int = 0
    rules: list[Rule] = field(default_factory=list)
    total: int = 0
    per_path: Counter = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    log: list[RequestRecord] = field(default_factory=list)


@functools.lru_cache(maxsize=4096)
def tile_image(z: int, x: int, y: int, kind: str = "png") -> bytes:
    """Return a 256x256 tile of one colour derived from z, x and y."""
    colour = ((x * 37 + 11) % 256, (y * 59 + 23) % 256, (z * 83 + 47) % 256)
    buffer = io.BytesIO()
    if kind == "jpeg":
        Image.new("RGB", (256, 256), colour).save(buffer, format="JPEG", quality=90)
    else:
        Image.new("RGBA", (256, 256), (*colour, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


class TileServer:
    """The server, its behaviour and its counters; all methods are thread-safe."""

    def __init__(self, port: int = 0, *, latency: float = 0.0, seed: int = 0, rules: list[Rule] | None = None):
        self.state = ServerState(latency=latency, seed=seed, rules=list(rules or []))
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.started_at = time.monotonic()
        self.httpd = _Server((HOST, port), _Handler)
        self.httpd.tile_server = self
        self.thread: threading.Thread | None = None

    # --- lifecycle ---

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def template(self) -> str:
        """The URL template of the tiles, with every placeholder the xyz source fills."""
        return self.url + TEMPLATE_PATH

    def start(self) -> TileServer:
        # A short poll interval lets stop() return quickly.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="xyz-test-server", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def __enter__(self) -> TileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- behaviour and counters ---

    def configure(self, *, latency: float | None = None, seed: int | None = None,
                  rules: list[Rule] | None = None) -> None:
        with self.lock:
            if latency is not None:
                self.state.latency = latency
            if seed is not None:
                self.state.seed = seed
            if rules is not None:
                self.state.rules = list(rules)

    def reset(self) -> None:
        """Zero the counters and clear the log; the behaviour stays."""
        with self.lock:
            self.state.total = 0
            self.state.per_path = Counter()
            self.state.max_in_flight = self.state.in_flight
            self.state.log = []

    @property
    def total(self) -> int:
        return self.state.total

    @property
    def max_in_flight(self) -> int:
        return self.state.max_in_flight

    @property
    def in_flight(self) -> int:
        return self.state.in_flight

    def requests_of(self, path: str) -> int:
        with self.lock:
            return self.state.per_path[path]

    def records(self) -> list[RequestRecord]:
        with self.lock:
            return list(self.state.log)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "total": self.state.total,
                "per_path": dict(self.state.per_path),
                "in_flight": self.state.in_flight,
                "max_in_flight": self.state.max_in_flight,
                "log": [dataclasses.asdict(record) for record in self.state.log],
            }

    # --- request handling, called by _Handler ---

    def begin(self, path: str, client: str) -> tuple[RequestRecord, Rule | None, float]:
        with self.lock:
            state = self.state
            state.total += 1
            state.per_path[path] += 1
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            record = RequestRecord(path, state.per_path[path], client, time.monotonic() - self.started_at)
            if len(state.log) < MAX_LOG_ENTRIES:
                state.log.append(record)
            rule = next((rule for rule in state.rules if rule.applies(path, record.number, state.seed)), None)
            return record, rule, state.latency

    def finish(self, record: RequestRecord, status: int) -> None:
        with self.lock:
            record.end = time.monotonic() - self.started_at
            record.status = status
            self.state.in_flight -= 1

    def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, SLEEP_SLICE_SECONDS))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes bursts of connections wait for SYN retries.
    request_queue_size = 128
    tile_server: TileServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes. With Nagle's algorithm
    # on, the body waits for the client's delayed ACK, about 40 ms on Linux.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_stats":
            self._send(200, json.dumps(self.server.tile_server.stats()).encode(), "application/json")
            return
        self._serve_tile(path)

    def do_POST(self) -> None:
        tile_server = self.server.tile_server
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        if self.path == "/_reset":
            tile_server.reset()
            self._send(200, b"{}", "application/json")
        elif self.path == "/_config":
            try:
                options = json.loads(payload or b"{}")
                rules = [Rule(**rule) for rule in options.get("rules", [])] if "rules" in options else None
            except (ValueError, TypeError) as error:
                self._send(400, f"Invalid configuration: {error}".encode(), "text/plain")
                return
            tile_server.configure(latency=options.get("latency"), seed=options.get("seed"), rules=rules)
            self._send(200, b"{}", "application/json")
        else:
            self._send(404, b"Unknown control path; use /_reset or /_config.", "text/plain")

    def _serve_tile(self, path: str) -> None:
        tile_server = self.server.tile_server
        record, rule, latency = tile_server.begin(path, self.headers.get("X-Test-Client", ""))
        status = rule.status if rule else 200
        try:
            tile_server.pause(latency + (rule.sleep if rule else 0.0))
            match = TILE_PATH.search(path)
            if match is None and status == 200:
                status = 404
            body, content_type = self._body(rule, status, match)
        finally:
            # Counted as finished before the response is written: a client
            # can only send its next request after reading this response, so
            # the in-flight count never includes a request that has ended.
            tile_server.finish(record, status)
        headers = {"Retry-After": rule.retry_after} if rule and rule.retry_after is not None else {}
        try:
            self._send(status, body, content_type, headers)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up, as a timing-out client does.
            self.close_connection = True

    def _body(self, rule: Rule | None, status: int, match: re.Match | None) -> tuple[bytes, str]:
        kind = rule.body if rule else None
        if kind is None and status == 200:
            kind = "png"
        if kind is None:
            return f"HTTP {status} injected by the test tile server".encode(), "text/plain"
        if kind == "none" or match is None:
            return b"", "text/plain"
        z, x, y = (int(group) for group in match.groups())
        if kind == "invalid":
            return b"<html><body>Service overloaded</body></html>", "text/html"
        if kind == "jpeg":
            return tile_image(z, x, y, "jpeg"), "image/jpeg"
        if kind == "truncated":
            return tile_image(z, x, y)[:40], "image/png"
        if kind == "corrupt":
            corrupt = bytearray(tile_image(z, x, y))
            # The last 12 bytes are the IEND chunk; 20 bytes from the end is inside IDAT.
            corrupt[-20] ^= 0xFF
            return bytes(corrupt), "image/png"
        return tile_image(z, x, y), "image/png"

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if status != 204 and body:
            self.wfile.write(body)


# --- Access from another process ---------------------------------------------


def read_stats(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """Return the counters of a server started in another process."""
    with urllib.request.urlopen(f"{url}/_stats", timeout=timeout) as response:
        return json.load(response)


def reset_stats(url: str, timeout: float = 5.0) -> None:
    _post(f"{url}/_reset", {}, timeout)


def configure_remote(url: str, *, latency: float | None = None, seed: int | None = None,
                     rules: list[Rule] | None = None, timeout: float = 5.0) -> None:
    options: dict[str, Any] = {}
    if latency is not None:
        options["latency"] = latency
    if seed is not None:
        options["seed"] = seed
    if rules is not None:
        options["rules"] = [dataclasses.asdict(rule) for rule in rules]
    _post(f"{url}/_config", options, timeout)


def _post(url: str, payload: dict, timeout: float) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve test XYZ tiles on 127.0.0.1 until SIGTERM or SIGINT.")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one.")
    parser.add_argument("--latency", type=float, default=0.0, help="Seconds added to every tile response.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the rules' probability draws.")
    arguments = parser.parse_args()
    server = TileServer(arguments.port, latency=arguments.latency, seed=arguments.seed)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with server:
        print(f"URL {server.url}", flush=True)
        while not stopped.wait(0.1):
            pass


if __name__ == "__main__":
    main()
