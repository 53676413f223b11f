"""Status endpoint under load: wrk against /api/cache/campaign/{id}/status while a 100,000-point run progresses.

The script migrates a scratch PostgreSQL database (or SQLite with
``--backend sqlite``), creates a campaign of ``--points`` points, starts a
real worker with a tile source that costs nothing and gunicorn on
127.0.0.1 (with the repository's gunicorn.conf.py), starts the run, and once
points are being cached runs ``wrk`` (Debian package) against the status
endpoint with a staff token:

1. A warm-up, not reported, so that every gunicorn thread has loaded the
   code and opened its database connection.
2. ``--connections`` connections sending as fast as the server answers. This
   measures the maximum throughput, and its latency is mostly the time a
   request queues behind the others.
3. ``--paced-connections`` connections sending ``--rate`` requests/s in all
   (benchmarks/wrk_fixed_rate.lua). This measures the latency at the goal's
   rate.

For each measurement it reports requests/s, latency percentiles, errors, the
machine's 1-minute load average before it and how far the run progressed
meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# A database and a Redis database of its own, read by bench_pipeline_cost at
# import: reset_postgres() drops the database and empties the Redis database,
# which would break a pipeline benchmark running at the same time.
os.environ.setdefault("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/cachecampaign_bench_status")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")

from benchmarks.bench_pipeline_cost import (  # noqa: E402
    DRIVER,
    backend_environment,
    driver,
    reset_postgres,
    start_worker,
)
from benchmarks.common import ROOT, add_common_arguments, append_record, format_table  # noqa: E402

PYTHON = sys.executable
FIXED_RATE_SCRIPT = ROOT / "benchmarks" / "wrk_fixed_rate.lua"
GUNICORN_CONFIG = ROOT / "gunicorn.conf.py"
WRK_THREADS = 2
WARMUP_SECONDS = 3
# Seconds after the run starts before the first wrk load, so that the
# dispatch has filled the queue and points are being cached.
RUN_SETTLE_SECONDS = 8

TOKEN_SCRIPT = r'''
import django; django.setup()
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True})
print(Token.objects.get_or_create(user=user)[0].key)
'''

LATENCY_LINE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$")
SOCKET_ERRORS_LINE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> dict:
    result: dict = {"errors": 0, "socket_errors": 0}
    for line in output.splitlines():
        match = LATENCY_LINE.match(line)
        if match:
            result[f"p{match.group(1)}_ms"] = to_ms(match.group(2), match.group(3))
        if line.startswith("Requests/sec:"):
            result["requests_per_second"] = float(line.split()[1])
        if "Non-2xx or 3xx responses" in line:
            result["errors"] = int(line.split()[-1])
        socket_errors = SOCKET_ERRORS_LINE.search(line)
        if socket_errors:
            result["socket_errors"] = sum(int(count) for count in socket_errors.groups())
    return result


def load_average() -> float:
    """Return the machine's 1-minute load average (Linux /proc/loadavg), or NaN elsewhere."""
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            return float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def gunicorn_settings() -> dict:
    """Return the worker class and threads that gunicorn.conf.py sets, for the record; gunicorn's defaults without it."""
    settings = runpy.run_path(str(GUNICORN_CONFIG)) if GUNICORN_CONFIG.exists() else {}
    return {"worker_class": settings.get("worker_class", "sync"), "threads": settings.get("threads", 1)}


def cached_points(url: str, token: str) -> int:
    response = subprocess.run(["curl", "-s", "--max-time", "10", "-H", f"Authorization: Token {token}", url],
                              capture_output=True, text=True, timeout=30)
    return json.loads(response.stdout)["data"]["cached_points"]


def run_wrk(url: str, token: str, connections: int, seconds: int, script_arguments: list[str] | None = None) -> str:
    command = ["wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{seconds}s", "--latency",
               "-H", f"Authorization: Token {token}"]
    if script_arguments is not None:
        command += ["-s", str(FIXED_RATE_SCRIPT)]
    command.append(url)
    if script_arguments is not None:
        command += ["--", *script_arguments]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed with exit status {completed.returncode}: {completed.stderr[-2000:]}")
    return completed.stdout


def measure(label: str, url: str, token: str, connections: int, seconds: int,
            script_arguments: list[str] | None = None) -> dict:
    load = load_average()
    before = cached_points(url, token)
    output = run_wrk(url, token, connections, seconds, script_arguments)
    after = cached_points(url, token)
    print(f"--- {label}\n{output}")
    return {"label": label, "connections": connections, "load": load, "points_cached": after - before,
            **parse_wrk(output)}


def measurement_row(backend: str, points: int, result: dict) -> list:
    nan = float("nan")
    return [backend, points, result["label"], result["connections"], result.get("requests_per_second", nan),
            result.get("p50_ms", nan), result.get("p90_ms", nan), result.get("p99_ms", nan),
            result["errors"] + result["socket_errors"], result["points_cached"], result["load"]]


def goal_verdict(paced: dict, rate: float) -> str:
    achieved = paced.get("requests_per_second", 0.0)
    p99 = paced.get("p99_ms", float("nan"))
    if achieved < 0.95 * rate:
        return f"the paced load reached {achieved:.0f} of {rate:.0f} requests/s, so its latency does not test the goal"
    met = p99 < 50 and paced["errors"] + paced["socket_errors"] == 0
    return f"p99 {p99:.1f} ms at {achieved:.0f} requests/s: {'met' if met else 'missed'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="campaign size")
    parser.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--seconds", type=int, default=20, help="duration of each measured wrk load, in seconds")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections of the maximum-throughput load")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the paced load, in all")
    parser.add_argument("--paced-connections", type=int, default=16,
                        help="wrk connections of the paced load; enough that none waits for a free one")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--worker-niceness", type=int, default=10,
                        help="nice value of the Celery worker, so that web requests come first on shared cores "
                             "(default 10; 0 runs it at the web process's priority)")
    add_common_arguments(parser, rounds=1)
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed; install the Debian package: apt-get install wrk")
    if arguments.seconds < 1 or arguments.rate <= 0 or arguments.connections < WRK_THREADS \
            or arguments.paced_connections < WRK_THREADS:
        sys.exit(f"Invalid load: use --seconds 1 or more, a positive --rate and at least {WRK_THREADS} connections.")
    server = gunicorn_settings()
    # Load from other processes, before this script starts any of its own.
    starting_load = load_average()

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
        # cwd=ROOT, so gunicorn reads the repository's gunicorn.conf.py as a deployment does.
        web = subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "cachecampaign.wsgi", "-b", f"127.0.0.1:{port}",
             "-w", str(arguments.web_workers), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=open(scratch / "web.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = start_worker(env, scratch, niceness=arguments.worker_niceness)
        run_driver = subprocess.Popen(
            [PYTHON, "-c", DRIVER, "run", campaign_id, "20", "3600"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/api/cache/campaign/{campaign_id}/status"
        per_thread_rate = arguments.rate / WRK_THREADS
        try:
            time.sleep(RUN_SETTLE_SECONDS)
            run_wrk(url, token, arguments.paced_connections, WARMUP_SECONDS)
            saturated = measure("maximum throughput", url, token, arguments.connections, arguments.seconds)
            paced = measure(f"paced at {arguments.rate:.0f} requests/s", url, token, arguments.paced_connections,
                            arguments.seconds, [f"{per_thread_rate:g}"])
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

    table = format_table(
        ["backend", "campaign points", "measurement", "connections", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors",
         "points cached during load", "1-min load average before"],
        [measurement_row(arguments.backend, arguments.points, result) for result in (saturated, paced)],
    )
    body = (
        f"wrk, {WRK_THREADS} threads, {arguments.seconds} s per measurement after a {WARMUP_SECONDS} s warm-up, "
        f"token auth, gunicorn with {arguments.web_workers} {server['worker_class']} workers of {server['threads']} "
        f"threads (gunicorn.conf.py), while a run caches the campaign (1 Celery worker, 2 processes at nice "
        f"{arguments.worker_niceness}, a tile source that costs nothing). The maximum-throughput load sends as fast as the server answers, so its latency is "
        f"mostly queueing. The paced load sends {arguments.rate:.0f} requests/s in all with "
        f"benchmarks/wrk_fixed_rate.lua, and its latency does not count a request's wait for a free connection. "
        f"Errors are non-2xx responses plus socket errors. The machine's 1-minute load average was "
        f"{starting_load:.2f} before the script started, and the last column includes this benchmark's own run."
        f"\n\n"
        f"{table}\n\n"
        f"Goal: p99 < 50 ms at {arguments.rate:.0f} requests/s; {goal_verdict(paced, arguments.rate)}."
    )
    print(body)
    if not arguments.no_record:
        append_record("Status endpoint under load", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
