"""A private redis-server on a spare 127.0.0.1 port, which a test may kill, freeze and start again.

Tests of broker faults use their own server, never the machine's shared
Redis: stopping the shared one would break every other process that uses it.
The server keeps nothing on disk (``--save ""``, ``--appendonly no``), so a
restart loses every queued message, as a real Redis without persistence does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import redis

HOST = "127.0.0.1"
# Seconds to wait for a started server to reply to PING.
START_TIMEOUT_SECONDS = 10.0


def redis_server_available() -> bool:
    return shutil.which("redis-server") is not None


def spare_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or spare_port()
        self.process: subprocess.Popen | None = None
        self.folder.mkdir(parents=True, exist_ok=True)

    def url(self, database: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{database}"

    def start(self) -> None:
        """Start the server on its port and wait until it replies to PING."""
        command = [
            "redis-server", "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.folder),
        ]
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        log_tail = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log_tail}")

    def answers(self, timeout: float = 0.5) -> bool:
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """Stop the server with SIGKILL, as a crash or an OOM kill does; its data is lost."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """Stop the server process with SIGSTOP, so connections open but no command gets a reply."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()
