"""Benchmark: seeding tiles from a slow upstream XYZ server, cachecampaign against MapProxy's mapproxy-seed.

A local tile server on 127.0.0.1 (``tests.xyzserver.TileServer``) returns
every tile after a fixed latency and logs every request. Both contenders
seed the same tile list: the "seed" preset plan (zooms 12, 13 and 14, the
tile under the point, period DRY) of the first 1,000 points of the TVI
campaign file ``points/pontos_aa_5000.geojson`` for 2019 and 2020 with the
vis param landsat-tvi-true.

- cachecampaign: a caching run started with ``campaigns.runs.start_run`` and
  carried out by a real Celery worker process (prefork) whose layer fetches
  from the server through the xyz source, capped at ``--in-flight`` requests
  in flight across all of its processes. The run uses a scratch SQLite
  database (or ``--database-url``) and the filesystem broker (or
  ``--broker-url``) under a temporary folder.
- MapProxy: ``mapproxy-seed -c IN_FLIGHT`` (that many seeding processes)
  into a file cache, with one coverage per zoom made of the planned tiles.

The script checks at the server that both requested exactly the planned
tile paths, and reports tiles per second, the ceiling ``in-flight ÷
latency``, each contender's fraction of it, their ratio and duplicate
requests (requests minus unique paths).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

YEARS = (2019, 2020)
VIS_PARAM = "landsat-tvi-true"
LAYER = "landsat"
PERIOD = "DRY"
ZOOMS = (12, 13, 14)
POINTS_FILE = "points/pontos_aa_5000.geojson"
# The month placeholder is left out: a DRY tile has no month, and MapProxy's
# URL template has no equivalent of an empty path segment.
PATH_TEMPLATE = "/{layer}/{visparam}/{period}/{year}/{z}/{x}/{y}.png"
# Synthetic points, when the real file is missing, fall in this box over Brazil.
BRAZIL_LONGITUDES = (-73.5, -34.8)
BRAZIL_LATITUDES = (-33.7, 5.1)
MAPPROXY_VENV = common.BENCHMARKS_DIR / ".venv-mapproxy"
BENCH_REQUIREMENTS = common.ROOT / "requirements" / "bench.txt"
# The planned tile boxes given to MapProxy are shrunk by this fraction of a
# tile on each side, so that a box never touches a neighbouring tile.
COVERAGE_INSET = 0.01
# A round may take at most this many times its ideal duration (tiles ÷
# ceiling), plus a minute, before the script gives up on it.
ROUND_TIMEOUT_FACTOR = 10.0
# Rounds stop being added once the contenders have run this long (seconds).
ROUNDS_TIME_LIMIT = 300.0


@dataclass(frozen=True)
class Tile:
    year: int
    z: int
    x: int
    y: int

    def path(self) -> str:
        return PATH_TEMPLATE.format(layer=LAYER, visparam=VIS_PARAM, period=PERIOD, year=self.year,
                                    z=self.z, x=self.x, y=self.y)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser, rounds=2)
    parser.add_argument("--points", type=int, default=1000, help="points taken from the start of the file (default 1000)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server waits before each tile (default 0.05)")
    parser.add_argument("--in-flight", type=int, default=8,
                        help="requests in flight: cachecampaign's max_in_flight and MapProxy's process count (default 8)")
    parser.add_argument("--concurrency", type=int, default=6, help="Celery worker processes (default 6)")
    parser.add_argument("--fetch-threads", type=int, default=6, help="xyz source fetch_threads per worker process (default 6)")
    parser.add_argument("--prefetch-multiplier", type=int, default=2,
                        help="Celery worker prefetch multiplier: tasks reserved per worker process (default 2)")
    parser.add_argument("--contenders", default="cachecampaign,mapproxy",
                        help="comma-separated contenders to run (default cachecampaign,mapproxy)")
    parser.add_argument("--batch-size", type=int, default=48, help="point tasks of the run queued or running at once (default 48)")
    parser.add_argument("--database-url", default="",
                        help="database for cachecampaign, e.g. postgres://user@127.0.0.1:5432/scratch; "
                             "default: a scratch SQLite file in a temporary folder")
    parser.add_argument("--broker-url", default="",
                        help="Celery broker, e.g. redis://127.0.0.1:6379/14; default: the filesystem broker in a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    arguments = parser.parse_args()
    for name in ("points", "in_flight", "concurrency", "fetch_threads", "batch_size", "rounds"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if arguments.latency <= 0:
        parser.error("--latency must be above 0 seconds")
    return arguments


# --- Inputs ------------------------------------------------------------------


def load_points(count: int) -> tuple[list[tuple[float, float]], str]:
    """Return the first ``count`` (lon, lat) points of the real campaign file, or synthetic ones, and what they are."""
    folder = common.sample_data_folder()
    path = folder / POINTS_FILE if folder else None
    if path is not None and path.is_file():
        features = json.loads(path.read_text(encoding="utf-8"))["features"]
        points = [tuple(feature["geometry"]["coordinates"][:2]) for feature in features[:count]]
        return [(float(lon), float(lat)) for lon, lat in points], f"the first {len(points):,} points of {POINTS_FILE}"
    generator = random.Random(1000)
    points = [(generator.uniform(*BRAZIL_LONGITUDES), generator.uniform(*BRAZIL_LATITUDES)) for _ in range(count)]
    return points, (
        f"{count:,} synthetic points (seeded random, lon {BRAZIL_LONGITUDES[0]}..{BRAZIL_LONGITUDES[1]}, "
        f"lat {BRAZIL_LATITUDES[0]}..{BRAZIL_LATITUDES[1]}), because {common.SAMPLE_DATA_ENV} has no {POINTS_FILE}"
    )


def planned_tiles(points: list[tuple[float, float]]) -> list[Tile]:
    """Return the unique tiles of the points' caching plan, computed by cachecampaign's own planner."""
    from tiles.grid import get_preset
    from tiles.plan import CachePlan

    plan = CachePlan(LAYER, YEARS, (VIS_PARAM,), get_preset("seed"))
    if plan.preset.zooms != ZOOMS or plan.preset.buffer != 0:
        raise SystemExit(f"The seed preset is {plan.preset.as_dict()}, expected zooms {ZOOMS} and buffer 0.")
    tiles: dict[Tile, None] = {}
    for lon, lat in points:
        for address in plan.addresses_for(lon, lat):
            tiles[Tile(address.year, address.z, address.x, address.y)] = None
    return list(tiles)


# --- Scratch environment -----------------------------------------------------


def configure_environment(scratch: Path, arguments: argparse.Namespace, template: str) -> None:
    """Point this process and the worker it starts at scratch settings; call before ``django.setup()``."""
    sources = scratch / "tile-sources.json"
    layer = {
        "kind": "xyz", "url": template, "timeout": 10, "retries": 2, "backoff": 0.1,
        "max_in_flight": arguments.in_flight, "fetch_threads": arguments.fetch_threads,
        "limit_group": "bench-upstream",
    }
    sources.write_text(json.dumps({LAYER: layer}), encoding="utf-8")
    database_url = arguments.database_url or f"sqlite:///{scratch / 'db.sqlite3'}"
    broker_url = arguments.broker_url or "filesystem://"
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "cachecampaign.settings",
        "CACHECAMPAIGN_VAR_DIR": str(scratch / "var"),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "TILE_SOURCES_FILE": str(sources),
        "TILE_STORAGE_BACKEND": "filesystem",
        "TILE_STORAGE_ROOT": str(scratch / "tiles"),
        "TILE_PLAN_ZOOMS": ",".join(str(zoom) for zoom in ZOOMS),
        "TILE_PLAN_BUFFER": "0",
        "TILE_PLAN_DEFAULT_PRESET": "seed",
        "TILE_LIMITS_REDIS_URL": broker_url if broker_url.startswith(("redis://", "rediss://")) else "",
        "CACHE_MAX_BATCH_SIZE": str(max(1000, arguments.batch_size)),
        "LOG_LEVEL": "INFO",
    })
    for name in ("MONGODB_URI", "MONGODB_NAME", "CAMPAIGNS_DATABASE_URL"):
        os.environ.pop(name, None)


def setup_django() -> None:
    import logging

    import django

    django.setup()
    # The worker logs at INFO to its own file; this process only reports.
    logging.getLogger().setLevel(logging.WARNING)
    # kombu warns on every connection to the filesystem broker that its URL has no host name.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)


# --- Contender A: cachecampaign ----------------------------------------------


class CachecampaignSeeder:
    """Caching runs of one campaign per round, carried out by one Celery worker started once."""

    label = "cachecampaign"

    def __init__(self, scratch: Path, points_file: Path, arguments: argparse.Namespace, server, tiles: list[Tile]):
        self.scratch = scratch
        self.points_file = points_file
        self.arguments = arguments
        self.server = server
        self.tiles = tiles
        self.tile_root = scratch / "tiles"
        self.worker_log = scratch / "worker.log"
        self.point_timings: list[float] = []
        self.worker_pid: int | None = None

    def prepare(self, rounds: int) -> None:
        from django.core.management import call_command

        with open(os.devnull, "w") as sink:
            call_command("migrate", interactive=False, verbosity=0, stdout=sink)
            for number in range(1, rounds + 1):
                call_command(
                    "import_points", self.campaign_id(number), str(self.points_file),
                    initial_year=YEARS[0], final_year=YEARS[-1], vis_params=VIS_PARAM, stdout=sink,
                )

    @contextlib.contextmanager
    def worker(self) -> Iterator[None]:
        """Run one Celery worker (prefork) until the block ends, as tests.workers.running_worker does."""
        from tests.workers import stop_worker, wait_for_worker, worker_environment

        name = f"bench-{os.getpid()}@localhost"
        command = [
            sys.executable, "-m", "celery", "-A", "cachecampaign", "worker", "--loglevel", "INFO",
            "--pool", "prefork", "--concurrency", str(self.arguments.concurrency),
            "--prefetch-multiplier", str(self.arguments.prefetch_multiplier),
            "--hostname", name, "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        with open(self.worker_log, "ab") as log:
            process = subprocess.Popen(command, cwd=common.ROOT, env=worker_environment(), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_worker(name, timeout=60)
            self.worker_pid = process.pid
            yield
        finally:
            stop_worker(process)

    @staticmethod
    def campaign_id(number: int) -> str:
        return f"bench-upstream-{number}"

    def run_round(self, number: int) -> dict[str, float]:
        from django.utils import timezone

        from campaigns.models import CachingRun
        from campaigns.runs import start_run

        shutil.rmtree(self.tile_root, ignore_errors=True)
        self.server.reset()
        log_offset = self.worker_log.stat().st_size if self.worker_log.exists() else 0
        timeout = 60 + ROUND_TIMEOUT_FACTOR * len(self.tiles) * self.arguments.latency / self.arguments.in_flight

        assert self.worker_pid is not None, "start the worker first"
        cpu = CpuMeter(lambda: time.process_time() + common.process_tree_cpu_seconds(self.worker_pid))
        started = timezone.now()
        result = start_run(self.campaign_id(number), batch_size=self.arguments.batch_size, started_by="benchmark")
        deadline = time.monotonic() + timeout
        while True:
            run = CachingRun.objects.filter(pk=result.run.pk).values(
                "state", "ended_at", "tiles_stored", "tiles_failed", "failed_points", "last_error"
            ).first()
            if run is not None and run["ended_at"] is not None and run["state"] not in ("dispatching", "running"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"cachecampaign round {number} did not end within {timeout:.0f} s; see {self.worker_log}."
                )
            time.sleep(0.05)
        seconds = (run["ended_at"] - started).total_seconds()
        if run["state"] != "completed" or run["failed_points"]:
            raise SystemExit(
                f"cachecampaign round {number} ended {run['state']} with {run['failed_points']} failed points: "
                f"{run['last_error']}. See {self.worker_log}."
            )
        cpu.stop()
        self.point_timings.extend(point_tile_times(self.worker_log, log_offset))
        return measure_round(self.server, self.tiles, seconds, cpu)


POINT_LOG = re.compile(r"Point \S+ cached: .*\(plan (\d+) ms, tiles (\d+) ms, mark (\d+) ms\)")


def point_tile_times(log_path: Path, offset: int) -> list[float]:
    """Return the per-point tile times (ms) that the worker logged after ``offset``."""
    with open(log_path, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", "replace")
    return [float(match.group(2)) for match in POINT_LOG.finditer(text)]


# --- Contender B: MapProxy ---------------------------------------------------


def ensure_mapproxy() -> tuple[Path, str]:
    """Return the mapproxy-seed executable and MapProxy's version, installing requirements/bench.txt into its venv when needed."""
    python = MAPPROXY_VENV / "bin" / "python"
    seed = MAPPROXY_VENV / "bin" / "mapproxy-seed"
    stamp = MAPPROXY_VENV / ".installed"
    if not (seed.exists() and stamp.exists() and stamp.stat().st_mtime >= BENCH_REQUIREMENTS.stat().st_mtime):
        print(f"Installing {BENCH_REQUIREMENTS.relative_to(common.ROOT)} into {MAPPROXY_VENV.relative_to(common.ROOT)} ...",
              flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MAPPROXY_VENV)], check=True, timeout=300)
        installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(BENCH_REQUIREMENTS)],
                                   capture_output=True, text=True, timeout=900)
        if installed.returncode != 0:
            raise SystemExit(f"Installing MapProxy failed:\n{installed.stderr[-3000:]}")
        stamp.touch()
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('MapProxy'))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    return seed, version


def tile_polygon_wkt(z: int, x: int, y: int) -> str:
    """Return the tile's box in EPSG:3857, shrunk by COVERAGE_INSET of a tile on each side, as WKT."""
    import mercantile

    bounds = mercantile.xy_bounds(x, y, z)
    inset_x = (bounds.right - bounds.left) * COVERAGE_INSET
    inset_y = (bounds.top - bounds.bottom) * COVERAGE_INSET
    left, right = bounds.left + inset_x, bounds.right - inset_x
    bottom, top = bounds.bottom + inset_y, bounds.top - inset_y
    return f"(({left} {bottom}, {right} {bottom}, {right} {top}, {left} {top}, {left} {bottom}))"


def write_mapproxy_configuration(folder: Path, server_url: str, tiles: list[Tile], processes: int) -> tuple[Path, Path]:
    """Write mapproxy.yaml (one tile source and file cache per year) and seed.yaml (one seed task per zoom)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    caches, sources = {}, {}
    for year in YEARS:
        url = server_url + PATH_TEMPLATE.format(
            layer=LAYER, visparam=VIS_PARAM, period=PERIOD, year=year, z="%(z)s", x="%(x)s", y="%(y)s"
        )
        sources[f"upstream_{year}"] = {
            "type": "tile", "url": url, "grid": "webmercator_xyz",
            "http": {"client_timeout": 10},
        }
        caches[f"cache_{year}"] = {
            "grids": ["webmercator_xyz"],
            "sources": [f"upstream_{year}"],
            "format": "image/png",
            "cache": {"type": "file", "directory": str(folder / "cache" / str(year)), "directory_layout": "tms"},
        }
    mapproxy = {
        "services": {"demo": None},
        "layers": [{"name": f"landsat_{year}", "title": f"Landsat {year}", "sources": [f"cache_{year}"]}
                   for year in YEARS],
        "caches": caches,
        "sources": sources,
        # XYZ tiles: web mercator with rows counted from the top.
        "grids": {"webmercator_xyz": {"base": "GLOBAL_WEBMERCATOR", "origin": "nw"}},
        "globals": {
            "cache": {"base_dir": str(folder / "cache"), "lock_dir": str(folder / "locks"),
                      "concurrent_tile_creators": 1},
        },
    }
    coverages, seeds = {}, {}
    for zoom in ZOOMS:
        polygons = sorted({tile_polygon_wkt(tile.z, tile.x, tile.y) for tile in tiles if tile.z == zoom})
        wkt_path = folder / f"coverage-z{zoom}.wkt"
        wkt_path.write_text("MULTIPOLYGON(" + ", ".join(polygons) + ")\n", encoding="utf-8")
        coverages[f"tiles_z{zoom}"] = {"datasource": str(wkt_path), "srs": "EPSG:3857"}
        seeds[f"seed_z{zoom}"] = {
            "caches": [f"cache_{year}" for year in YEARS], "grids": ["webmercator_xyz"],
            "levels": [zoom], "coverages": [f"tiles_z{zoom}"],
        }
    mapproxy_path = folder / "mapproxy.yaml"
    seed_path = folder / "seed.yaml"
    mapproxy_path.write_text(yaml.safe_dump(mapproxy, sort_keys=False), encoding="utf-8")
    seed_path.write_text(yaml.safe_dump({"seeds": seeds, "coverages": coverages}, sort_keys=False), encoding="utf-8")
    return mapproxy_path, seed_path


class MapProxySeeder:
    label = "MapProxy"

    def __init__(self, scratch: Path, executable: Path, arguments: argparse.Namespace, server, tiles: list[Tile]):
        self.folder = scratch / "mapproxy"
        self.executable = executable
        self.arguments = arguments
        self.server = server
        self.tiles = tiles
        self.mapproxy_path, self.seed_path = write_mapproxy_configuration(
            self.folder, server.url, tiles, arguments.in_flight
        )
        self.log_path = self.folder / "seed.log"

    def run_round(self, number: int) -> dict[str, float]:
        shutil.rmtree(self.folder / "cache", ignore_errors=True)
        shutil.rmtree(self.folder / "locks", ignore_errors=True)
        self.server.reset()
        timeout = 60 + ROUND_TIMEOUT_FACTOR * len(self.tiles) * self.arguments.latency / self.arguments.in_flight
        command = [str(self.executable), "-f", str(self.mapproxy_path), "-s", str(self.seed_path),
                   "-c", str(self.arguments.in_flight)]
        with open(self.log_path, "ab") as log:
            cpu = CpuMeter(lambda: time.process_time() + children_cpu_seconds())
            started = time.perf_counter()
            try:
                completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                           stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise SystemExit(f"mapproxy-seed round {number} did not end within {timeout:.0f} s; see {self.log_path}.")
            seconds = time.perf_counter() - started
            cpu.stop()
        if completed.returncode != 0:
            raise SystemExit(f"mapproxy-seed round {number} exited with {completed.returncode}; see {self.log_path}.")
        return measure_round(self.server, self.tiles, seconds, cpu)


# --- Measurements ------------------------------------------------------------


class CpuMeter:
    """CPU time of the contender's processes, and of the whole machine, from creation to ``stop()``."""

    def __init__(self, own_seconds: Callable[[], float]):
        self.own_seconds = own_seconds
        self.own_start = own_seconds()
        self.machine_start = common.machine_busy_seconds()
        self.own = self.machine = 0.0

    def stop(self) -> None:
        self.own = self.own_seconds() - self.own_start
        self.machine = common.machine_busy_seconds() - self.machine_start


def children_cpu_seconds() -> float:
    """Return the CPU time of this process's ended and waited-for children (and theirs), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_round(server, tiles: list[Tile], seconds: float, cpu: CpuMeter) -> dict[str, float]:
    """Return a round's measurements, checking at the server that exactly the planned paths were requested."""
    records = server.records()
    counts = Counter(record.path for record in records)
    expected = {tile.path() for tile in tiles}
    missing = expected - counts.keys()
    unexpected = counts.keys() - expected
    if missing or unexpected:
        raise SystemExit(
            f"The server saw {len(counts):,} unique paths, {len(missing):,} planned paths missing "
            f"(e.g. {sorted(missing)[:3]}) and {len(unexpected):,} unplanned (e.g. {sorted(unexpected)[:3]})."
        )
    failed = sum(1 for record in records if record.status != 200)
    window = max(record.end or record.start for record in records) - min(record.start for record in records)
    request_seconds = sum((record.end or record.start) - record.start for record in records)
    return {
        "seconds": seconds,
        "tiles_per_second": len(tiles) / seconds,
        "window_tiles_per_second": len(tiles) / window,
        "requests": float(len(records)),
        "duplicates": float(len(records) - len(counts)),
        "failed_requests": float(failed),
        "max_in_flight": float(server.max_in_flight),
        "mean_in_flight": request_seconds / window,
        # The server runs in this process, so its CPU time counts for every contender.
        "cpu_ms_per_tile": cpu.own * 1000 / len(tiles),
        # Cores kept busy by processes other than the contender's and the server's.
        "other_cores": max(0.0, cpu.machine - cpu.own) / seconds,
    }


def report(contenders: list[common.Contender], arguments: argparse.Namespace, tiles: list[Tile], inputs: str,
           cachecampaign: CachecampaignSeeder | None, mapproxy_version: str) -> str:
    ceiling = arguments.in_flight / arguments.latency
    rows = []
    for contender in contenders:
        rate = contender.median("tiles_per_second")
        rows.append([
            contender.label,
            len(contender.rounds),
            contender.median("seconds"),
            rate,
            rate / ceiling,
            contender.median("window_tiles_per_second") / ceiling,
            contender.median("mean_in_flight"),
            int(max(contender.values("max_in_flight"))),
            int(max(contender.values("requests"))),
            int(max(contender.values("duplicates"))),
            contender.median("cpu_ms_per_tile"),
            contender.median("other_cores"),
        ])
    table = common.format_table(
        ["contender", "rounds", "median s", "tiles/s", "of ceiling", "of ceiling, server window",
         "mean in flight", "max in flight", "max requests", "max duplicates", "CPU ms/tile", "other cores"],
        rows,
    )
    lines = [
        f"Upstream seeding: {len(tiles):,} unique tiles ({inputs}; zooms {', '.join(map(str, ZOOMS))}, centre tile, "
        f"{PERIOD}, years {YEARS[0]} and {YEARS[-1]}, {VIS_PARAM}), server latency {arguments.latency * 1000:.0f} ms, "
        f"{arguments.in_flight} requests in flight, ceiling {arguments.in_flight} / {arguments.latency:g} s = "
        f"{ceiling:.0f} tiles/s.",
    ]
    if cachecampaign is not None:
        lines.append(
            f"cachecampaign: 1 Celery worker, prefork concurrency {arguments.concurrency}, prefetch multiplier "
            f"{arguments.prefetch_multiplier}, fetch_threads {arguments.fetch_threads}, max_in_flight "
            f"{arguments.in_flight}, batch_size {arguments.batch_size}, database "
            f"{'given by --database-url' if arguments.database_url else 'scratch SQLite'}, broker "
            f"{'given by --broker-url' if arguments.broker_url else 'filesystem'}; seconds run from start_run to "
            "the run's ended_at."
        )
    if mapproxy_version:
        lines.append(
            f"MapProxy {mapproxy_version}: mapproxy-seed -c {arguments.in_flight} into a file cache; seconds run "
            "from process start to exit."
        )
    lines += [
        "The server window runs from the first request's arrival to the last response; mean in flight is the "
        "requests' summed duration over that window. CPU ms/tile is the CPU time of the contender's processes "
        "and of this process, which runs the server, per tile. Other cores is the CPU time of every other "
        "process on the machine over the round's duration.",
        "",
        table,
        "",
        "Every contender requested exactly the planned paths in every round.",
    ]
    if cachecampaign is not None:
        timings = sorted(cachecampaign.point_timings)
        if timings:
            lines.append(
                f"cachecampaign per-point tile time (worker log): median {common.median(timings):.0f} ms, "
                f"p90 {timings[int(0.9 * (len(timings) - 1))]:.0f} ms over {len(timings):,} points."
            )
        ours = contenders[0]
        fraction = ours.median("tiles_per_second") / ceiling
        goal = (f"Goals: cachecampaign >= 0.95 x ceiling ({'met' if fraction >= 0.95 else 'missed'}: "
                f"{fraction:.3f})")
        if len(contenders) > 1:
            speedup = common.ratio(ours.median("tiles_per_second"), contenders[1].median("tiles_per_second"))
            lines.insert(-1, f"cachecampaign / MapProxy: {speedup:.2f}x tiles/s.")
            goal += f", ahead of MapProxy ({'met' if speedup > 1 else 'missed'}: {speedup:.2f}x)"
        duplicates = int(max(ours.values("duplicates")))
        goal += f", 0 duplicate requests ({'met' if duplicates == 0 else 'missed'}: {duplicates})."
        lines.append(goal)
    return "\n".join(lines)


def main() -> int:
    arguments = parse_arguments()
    chosen = [name.strip().lower() for name in arguments.contenders.split(",") if name.strip()]
    unknown = set(chosen) - {"cachecampaign", "mapproxy"}
    if unknown or not chosen:
        raise SystemExit(f"Invalid --contenders {arguments.contenders!r}; use cachecampaign, mapproxy or both.")
    from tests.xyzserver import TileServer

    points, inputs = load_points(arguments.points)
    mapproxy_seed, mapproxy_version = ensure_mapproxy() if "mapproxy" in chosen else (None, "")
    scratch = Path(tempfile.mkdtemp(prefix="bench-upstream-"))
    try:
        with TileServer(latency=arguments.latency) as server, contextlib.ExitStack() as stack:
            configure_environment(scratch, arguments, server.url + PATH_TEMPLATE)
            setup_django()
            tiles = planned_tiles(points)
            print(f"{len(tiles):,} unique tiles from {inputs}.", flush=True)

            contenders = []
            ours = None
            if "cachecampaign" in chosen:
                ours = CachecampaignSeeder(scratch, write_points(scratch / "points.geojson", points), arguments,
                                           server, tiles)
                ours.prepare(arguments.rounds)
                stack.enter_context(ours.worker())
                contenders.append(common.Contender(ours.label, ours.run_round))
            if mapproxy_seed is not None:
                theirs = MapProxySeeder(scratch, mapproxy_seed, arguments, server, tiles)
                contenders.append(common.Contender(theirs.label, theirs.run_round))
            common.run_alternating(contenders, arguments.rounds, time_limit=ROUNDS_TIME_LIMIT)
            text = report(contenders, arguments, tiles, inputs, ours, mapproxy_version)
    finally:
        if arguments.keep:
            print(f"Kept {scratch}.")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(text)
    if not arguments.no_record:
        extra = {"MapProxy": mapproxy_version} if mapproxy_version else {}
        common.append_record("Upstream seeding: cachecampaign vs MapProxy", text, extra_packages=extra)
    return 0


def write_points(path: Path, points: list[tuple[float, float]]) -> Path:
    features = [
        {"type": "Feature", "properties": {"id": index}, "geometry": {"type": "Point", "coordinates": [lon, lat]}}
        for index, (lon, lat) in enumerate(points)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


if __name__ == "__main__":
    sys.exit(main())
