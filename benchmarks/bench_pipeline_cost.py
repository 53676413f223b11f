"""Pipeline cost curve: seconds per 1,000 points as campaigns grow, and what recounting would cost.

For each database (SQLite with the filesystem broker, PostgreSQL with a
Redis broker) the script migrates a scratch database, starts one real
Celery worker (2 processes) with a tile source that costs nothing, and for
each campaign size caches a fresh campaign through ``runs.start_run``,
timing the run from the start request to the campaign's flag clearing. It
also measures the start request's peak RSS in a separate process, and, in
the same database, the per-point cost of the O(1) progress update used by
the service next to a baseline that recounts the campaign's cached points
after every point, at each campaign size.

Usage: ``python benchmarks/bench_pipeline_cost.py [--sqlite-sizes 1000,10000]
[--postgres-sizes 1000,10000,100000] [--sizes N,...] [--backends sqlite,postgres] [--rss-size 100000]``.
By default the 100,000-point run is made on PostgreSQL only, the
production database, so that ``make bench`` fits in 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    ROOT,
    add_common_arguments,
    append_record,
    format_table,
    machine_busy_seconds,
    process_tree_cpu_seconds,
    processes_cpu_seconds,
)

PYTHON = sys.executable
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/cachecampaign_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
BATCH_SIZE = 20
RUN_TIMEOUT_SECONDS = 3600
# Points whose progress update is timed per campaign size, for both variants.
PROGRESS_SAMPLE = 300
# Server processes whose CPU time a run also costs (the database and the broker).
SERVER_PROCESSES = ("postgres", "redis-server")

DRIVER = r'''
import json, os, random, resource, sys, time
import django
django.setup()
from django.db import connection
from campaigns.models import CachingRun, Campaign, Point, RunPoint
from campaigns import runs, progress

command, campaign_id = sys.argv[1], sys.argv[2]

def make_campaign(size):
    Point.objects.filter(campaign_id=campaign_id).delete()
    Campaign.objects.filter(pk=campaign_id).delete()
    campaign = Campaign.objects.create(id=campaign_id, initial_year=2020, final_year=2020,
                                       vis_params=["landsat-tvi-true"])
    generator = random.Random(size)
    chunk = []
    for index in range(1, size + 1):
        chunk.append(Point(id=f"{index}_{campaign_id}", campaign=campaign,
                           lon=generator.uniform(-73.5, -34.8), lat=generator.uniform(-33.7, 5.1)))
        if len(chunk) == 5000:
            Point.objects.bulk_create(chunk); chunk = []
    Point.objects.bulk_create(chunk)

if command == "create":
    make_campaign(int(sys.argv[3]))
    print(json.dumps({"created": int(sys.argv[3])}))
elif command == "run":
    began = time.monotonic()
    result = runs.start_run(campaign_id, batch_size=int(sys.argv[3]), started_by="benchmark")
    start_seconds = time.monotonic() - began
    deadline = began + float(sys.argv[4])
    while Campaign.objects.filter(pk=campaign_id, caching_in_progress=True).exists():
        if time.monotonic() > deadline:
            print(json.dumps({"error": "timeout"})); sys.exit(1)
        time.sleep(0.2)
    elapsed = time.monotonic() - began
    run = CachingRun.objects.get(pk=result.run.pk)
    campaign = Campaign.objects.get(pk=campaign_id)
    print(json.dumps({"seconds": elapsed, "start_seconds": start_seconds, "state": run.state,
                      "succeeded": run.succeeded_points, "cached": campaign.cached_points}))
elif command == "start-rss":
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = runs.start_run(campaign_id, batch_size=5, started_by="benchmark")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The ledger fill is the part of a start that touches every point; run it
    # here too (the dispatch task does it in production) and cancel.
    runs._fill_ledger(CachingRun.objects.get(pk=result.run.pk))
    filled = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs.cancel_run(campaign_id)
    print(json.dumps({"start_rss_mb": after / 1024, "baseline_rss_mb": before / 1024,
                      "with_ledger_rss_mb": filled / 1024}))
elif command == "progress":
    sample = int(sys.argv[3])
    from django.db import transaction
    from django.utils import timezone
    total = Point.objects.of_campaign(campaign_id).count()
    sample = min(sample, total // 2)
    ids = list(Point.objects.of_campaign(campaign_id).order_by("pk").values_list("pk", flat=True)[: 2 * sample])
    # The rest of the campaign is cached already, as near the end of a run,
    # where a recount has the most rows to count.
    Point.objects.of_campaign(campaign_id).exclude(pk__in=ids).update(cached=True)
    Campaign.objects.filter(pk=campaign_id).update(total_points=total, cached_points=total - len(ids))
    began = time.monotonic()
    for point_id in ids[:sample]:
        progress.mark_point_cached(point_id, campaign_id, "benchmark")
    o1 = (time.monotonic() - began) / sample
    began = time.monotonic()
    for point_id in ids[sample:]:
        with transaction.atomic():
            Point.objects.mark_cached(point_id, timezone.now(), "benchmark")
            cached = Point.objects.of_campaign(campaign_id).is_cached().count()
            Campaign.objects.filter(pk=campaign_id).update(cached_points=cached)
    recount = (time.monotonic() - began) / sample
    print(json.dumps({"o1_ms": o1 * 1000, "recount_ms": recount * 1000}))
'''


def backend_environment(name: str, scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "cachecampaign.settings",
        "PYTHONPATH": str(ROOT),
        "CACHECAMPAIGN_VAR_DIR": str(scratch),
        "TILE_SOURCES_FILE": str(scratch / "sources.json"),
        "LOG_LEVEL": "WARNING",
    })
    if name == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{scratch / 'db.sqlite3'}"
        env["CELERY_BROKER_URL"] = "filesystem://"
    else:
        env["DATABASE_URL"] = POSTGRES_URL
        env["CELERY_BROKER_URL"] = REDIS_URL
    return env


def reset_postgres() -> None:
    database = POSTGRES_URL.rsplit("/", 1)[1]
    server = POSTGRES_URL.rsplit("/", 1)[0] + "/postgres"
    for statement in (f"DROP DATABASE IF EXISTS {database}", f"CREATE DATABASE {database}"):
        subprocess.run(["psql", server, "-q", "-c", statement], check=True, capture_output=True)
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], check=True, capture_output=True)


def driver(env: dict[str, str], *arguments: str) -> dict:
    completed = subprocess.run([PYTHON, "-c", DRIVER, *arguments], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=RUN_TIMEOUT_SECONDS + 60)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"driver {arguments} failed: {completed.stderr[-2000:]}")
    return json.loads(lines[-1])


WORKER_PROCESSES = int(os.environ.get("BENCH_WORKER_PROCESSES", "2"))


def start_worker(env: dict[str, str], scratch: Path, *, niceness: int = 0) -> subprocess.Popen:
    """Start one Celery worker of ``WORKER_PROCESSES`` processes, at ``niceness`` above this process's."""
    log = open(scratch / "worker.log", "ab")
    prefix = ["nice", "-n", str(niceness)] if niceness else []
    process = subprocess.Popen(
        [*prefix, PYTHON, "-m", "celery", "-A", "cachecampaign", "worker", "--loglevel", "WARNING",
         "--concurrency", str(WORKER_PROCESSES),
         "--hostname", f"bench-{os.getpid()}@localhost", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    time.sleep(6)
    return process


def stop_worker(worker: subprocess.Popen, grace_seconds: float = 60.0) -> None:
    """Stop a worker started by ``start_worker``: a warm shutdown, then SIGKILL after ``grace_seconds``.

    On the filesystem broker the worker notices a shutdown request only
    between two polls of its queue. On a busy machine that once took over 30 s.
    """
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


def measure_backend(name: str, sizes: list[int], rss_size: int, log) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"bench-pipeline-{name}-") as folder:
        scratch = Path(folder)
        (scratch / "sources.json").write_text(json.dumps({"landsat": {"class": "benchmarks.nullsource.NullSource"}}))
        env = backend_environment(name, scratch)
        if name == "postgres":
            reset_postgres()
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        worker = start_worker(env, scratch)
        try:
            for size in sizes:
                campaign_id = f"bench_{size}"
                driver(env, "create", campaign_id, str(size))
                worker_cpu, machine_cpu = process_tree_cpu_seconds(worker.pid), machine_busy_seconds()
                server_cpu = processes_cpu_seconds(SERVER_PROCESSES)
                run = driver(env, "run", campaign_id, str(BATCH_SIZE), str(RUN_TIMEOUT_SECONDS))
                worker_cpu = process_tree_cpu_seconds(worker.pid) - worker_cpu
                machine_cpu = machine_busy_seconds() - machine_cpu
                server_cpu = processes_cpu_seconds(SERVER_PROCESSES) - server_cpu
                log(f"{name} {size} points: {run}, worker CPU {worker_cpu:.1f} s, PostgreSQL and Redis CPU "
                    f"{server_cpu:.1f} s, machine CPU {machine_cpu:.1f} s")
                row = {"backend": name, "points": size, **run}
                row["per_1000"] = run["seconds"] / size * 1000
                # CPU time is steadier than elapsed time on a shared machine:
                # the worker's own, and the whole machine's (database, broker
                # and anything else running) over the same interval.
                row["worker_cpu_ms"] = worker_cpu * 1000 / size
                row["machine_cpu_ms"] = machine_cpu * 1000 / size
                row["server_cpu_ms"] = server_cpu * 1000 / size
                rows.append(row)
        finally:
            stop_worker(worker)
        for size in sorted(set(sizes + [rss_size])):
            campaign_id = f"progress_{size}"
            driver(env, "create", campaign_id, str(size))
            if size == rss_size:
                # The start request is measured first, on the campaign's
                # not-cached points. No worker runs now, so its run is cancelled
                # before any point is cached and the campaign can be reused.
                rss = driver(env, "start-rss", campaign_id)
                log(f"{name} start request with {rss_size} points: {rss}")
                rows.append({"backend": name, "rss_points": rss_size, **rss})
            measured = driver(env, "progress", campaign_id, str(PROGRESS_SAMPLE))
            log(f"{name} progress update at {size} points: {measured}")
            rows.append({"backend": name, "progress_points": size, **measured})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite-sizes", default="1000,10000", help="campaign sizes cached on SQLite")
    parser.add_argument("--postgres-sizes", default="1000,10000,100000", help="campaign sizes cached on PostgreSQL")
    parser.add_argument("--sizes", default="", help="campaign sizes for every backend, instead of the two above")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--rss-size", type=int, default=100_000, help="campaign size of the start-request RSS")
    add_common_arguments(parser, rounds=1)
    arguments = parser.parse_args()
    sizes_of = {
        "sqlite": arguments.sizes or arguments.sqlite_sizes,
        "postgres": arguments.sizes or arguments.postgres_sizes,
    }
    rows: list[dict] = []
    for backend in arguments.backends.split(","):
        sizes = [int(size) for size in sizes_of[backend].split(",")]
        rows.extend(measure_backend(backend, sizes, arguments.rss_size, print))

    runs_table = format_table(
        ["backend", "points", "seconds", "s per 1,000 points", "points/s", "worker CPU ms/point",
         "PostgreSQL + Redis CPU ms/point", "machine CPU ms/point", "state"],
        [[r["backend"], r["points"], r["seconds"], r["per_1000"], r["points"] / r["seconds"], r["worker_cpu_ms"],
          r["server_cpu_ms"], r["machine_cpu_ms"], r["state"]]
         for r in rows if "points" in r],
    )
    curve = []
    for backend in {r["backend"] for r in rows if "points" in r}:
        by_size = {r["points"]: r["per_1000"] for r in rows if r.get("backend") == backend and "points" in r}
        ordered = sorted(by_size)
        for small, large in zip(ordered, ordered[1:]):
            ratio = (by_size[large] * large / 1000) / (by_size[small] * small / 1000)
            curve.append([backend, f"{large:,}/{small:,}", ratio, large / small])
    curve_table = format_table(["backend", "sizes", "time ratio", "linear ratio"], curve) if curve else "(one size only)"
    progress_table = format_table(
        ["backend", "campaign points", "O(1) update ms/point", "recount ms/point", "recount / O(1)"],
        [[r["backend"], r["progress_points"], r["o1_ms"], r["recount_ms"], r["recount_ms"] / r["o1_ms"]]
         for r in rows if "progress_points" in r],
    )
    rss_table = format_table(
        ["backend", "campaign points", "start request peak RSS MB", "with ledger fill MB", "process before MB"],
        [[r["backend"], r["rss_points"], r["start_rss_mb"], r["with_ledger_rss_mb"], r["baseline_rss_mb"]]
         for r in rows if "rss_points" in r],
    )
    body = "\n\n".join([
        "Runs through one real worker (2 processes), batch size "
        f"{BATCH_SIZE}, a tile source that costs nothing, seed preset (3 tiles per point):",
        runs_table, "Growth between sizes (time ratio close to the linear ratio means linear cost):", curve_table,
        f"Progress update per point, timed over up to {PROGRESS_SAMPLE} points per variant, by campaign size, with "
        "the rest of the campaign already cached (the recount baseline counts the campaign's cached points after "
        "every point, so a run's total recount cost grows with the square of its size):", progress_table,
        "Start request:", rss_table,
    ])
    print(body)
    if not arguments.no_record:
        append_record("Pipeline cost curve", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
