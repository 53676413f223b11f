"""Status endpoint under load: wrk against /api/cache/campaign/{id}/status while a 100,000-point run progresses.

The script migrates a scratch PostgreSQL database (or SQLite with
``--backend sqlite``), creates a campaign of ``--points`` points, starts a
real worker with a tile source that costs nothing and gunicorn on
127.0.0.1, starts the run, and once points are being cached runs ``wrk``
(Debian package) against the status endpoint with a staff token. It reports
requests/s, latency percentiles and how far the run progressed meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_pipeline_cost import (  # noqa: E402
    DRIVER,
    backend_environment,
    driver,
    reset_postgres,
    start_worker,
)
from benchmarks.common import ROOT, add_common_arguments, append_record, format_table  # noqa: E402

PYTHON = sys.executable

TOKEN_SCRIPT = r'''
import django; django.setup()
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
print(Token.objects.get_or_create(user=user)[0].key)
'''

LATENCY_LINE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> dict:
    result: dict = {}
    for line in output.splitlines():
        match = LATENCY_LINE.match(line)
        if match:
            result[f"p{match.group(1)}_ms"] = to_ms(match.group(2), match.group(3))
        if line.startswith("Requests/sec:"):
            result["requests_per_second"] = float(line.split()[1])
        if "Non-2xx or 3xx responses" in line:
            result["errors"] = int(line.split()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="campaign size")
    parser.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--seconds", type=int, default=20, help="duration of the wrk load")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    add_common_arguments(parser, rounds=1)
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed; install the Debian package: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="bench-status-") as folder:
        scratch = Path(folder)
        (scratch / "sources.json").write_text(json.dumps({"landsat": {"class": "benchmarks.nullsource.NullSource"}}))
        env = backend_environment(arguments.backend, scratch)
        if arguments.backend == "postgres":
            reset_postgres()
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        token = subprocess.run([PYTHON, "-c", TOKEN_SCRIPT], cwd=ROOT, env=env, check=True, capture_output=True,
                               text=True).stdout.strip().splitlines()[-1]
        campaign_id = "status_load"
        driver(env, "create", campaign_id, str(arguments.points))
        port = free_port()
        web = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "cachecampaign.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=open(scratch / "web.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = start_worker(env, scratch)
        run_driver = subprocess.Popen(
            [PYTHON, "-c", DRIVER, "run", campaign_id, "20", "3600"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/api/cache/campaign/{campaign_id}/status"
        try:
            time.sleep(8)
            before = json.loads(subprocess.run(["curl", "-s", "-H", f"Authorization: Token {token}", url],
                                               capture_output=True, text=True).stdout)["data"]["cached_points"]
            wrk = subprocess.run(
                ["wrk", "-t", "2", "-c", str(arguments.connections), "-d", f"{arguments.seconds}s", "--latency",
                 "-H", f"Authorization: Token {token}", url],
                capture_output=True, text=True, timeout=arguments.seconds + 60,
            )
            after = json.loads(subprocess.run(["curl", "-s", "-H", f"Authorization: Token {token}", url],
                                              capture_output=True, text=True).stdout)["data"]["cached_points"]
        finally:
            for process in (run_driver, worker, web):
                try:
                    os.killpg(process.pid, 15)
                except ProcessLookupError:
                    pass
            for process in (run_driver, worker, web):
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
    result = parse_wrk(wrk.stdout)
    print(wrk.stdout)
    table = format_table(
        ["backend", "campaign points", "requests/s", "p50 ms", "p90 ms", "p99 ms", "non-2xx", "points cached during load"],
        [[arguments.backend, arguments.points, result.get("requests_per_second", float("nan")),
          result.get("p50_ms", float("nan")), result.get("p90_ms", float("nan")),
          result.get("p99_ms", float("nan")), result.get("errors", 0), after - before]],
    )
    body = (f"wrk, 2 threads, {arguments.connections} connections, {arguments.seconds} s, token auth, gunicorn with 2 "
            f"workers, while a run caches the campaign (1 Celery worker, 2 processes, a tile source that costs "
            f"nothing). Goal: p99 < 50 ms at 200 requests/s.\n\n{table}")
    print(body)
    if not arguments.no_record:
        append_record("Status endpoint under load", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
