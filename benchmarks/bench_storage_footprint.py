"""Benchmark: bytes that cached tiles take per tile and per point, and what storing blank tiles as empty files saves.

The tiles are produced by cachecampaign's own seeding path
(``tiles.seeding.seed_tiles`` with the raster source) from the real
Landsat 8 scene that scripts/sample_data.py prepares under
``benchmarks/.cache``, for:

- the demo campaign's points (``sample_data.sample_points``, on valid
  pixels of the scene), and
- points around the scene: just outside each side and corner, whose tiles
  are partly over the scene, and far outside it, whose tiles are blank;

with the "seed" preset (zooms 12 to 14, the tile under the point, DRY) and
the "tvi" preset (zoom 13 with its 3x3 block, DRY and WET; the catalog has
no WET imagery, so those tiles are blank), year 2020.

Blank tiles are stored as empty files by ``tiles.storage.write_tile``; the
script counts them and what storing the transparent PNG each time would
take. Disk use is the filesystem's allocation (``st_blocks``).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from benchmarks.bench_raster_rendering import SAMPLE_FOLDER, load_sample_data_script  # noqa: E402

YEAR = 2020
RENDERABLE = ("landsat-tvi-true", "landsat-toa-true")
NOT_RENDERABLE = ("landsat-tvi-agri", "landsat-tvi-false")
PRESETS = ("seed", "tvi")
DEMO_POINTS = 50
# Offsets (degrees) of the points around the scene: just outside its edges, and far away.
NEAR_OFFSET = 0.01
FAR_OFFSET = 0.5


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-record", action="store_true", help="print the results without appending to BENCHMARKS.md")
    return parser.parse_args()


def setup_django(scratch: Path, catalog: Path) -> None:
    import logging

    import django

    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "cachecampaign.settings",
        "CACHECAMPAIGN_VAR_DIR": str(scratch),
        "TILE_STORAGE_BACKEND": "filesystem",
        "TILE_STORAGE_ROOT": str(scratch / "tiles"),
        "RASTER_CATALOG_FILE": str(catalog),
        "TILE_LIMITS_REDIS_URL": "",
        "CELERY_BROKER_URL": "filesystem://",
    })
    os.environ.pop("TILE_SOURCES_FILE", None)
    django.setup()
    logging.getLogger().setLevel(logging.WARNING)


def ring_points(cog: Path, offset: float) -> list[tuple[float, float]]:
    """Return 8 points ``offset`` degrees outside the scene's bounds: one per side and corner."""
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(cog) as dataset:
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    middle_lon, middle_lat = (west + east) / 2, (south + north) / 2
    xs = (west - offset, middle_lon, east + offset)
    ys = (south - offset, middle_lat, north + offset)
    return [(x, y) for x in xs for y in ys if (x, y) != (middle_lon, middle_lat)]


@dataclass
class Footprint:
    points: int
    tiles: int = 0
    image_tiles: int = 0
    blank_tiles: int = 0
    image_bytes: int = 0
    disk_bytes: int = 0
    # Bytes of the image tiles re-encoded with zlib level 6 and the default strategy.
    image_bytes_level6: int = 0
    keys: set[str] = field(default_factory=set)


def measure(points: list[tuple[float, float]], preset: str, vis_param: str, root: Path) -> Footprint:
    """Seed the points' tiles for one preset and vis param and measure the stored files."""
    from tiles.grid import get_preset
    from tiles.plan import CachePlan
    from tiles.seeding import seed_tiles
    from tiles.storage import tile_key

    plan = CachePlan("landsat", (YEAR,), (vis_param,), get_preset(preset))
    footprint = Footprint(points=len(points))
    for lon, lat in points:
        addresses = plan.addresses_for(lon, lat)
        outcome = seed_tiles(addresses)
        if outcome.failed:
            raise SystemExit(f"Seeding {vis_param} at ({lon}, {lat}) failed: {outcome.error_summary()}")
        footprint.keys.update(tile_key(address) for address in addresses)
    for key in footprint.keys:
        path = root / key
        status = path.stat()
        footprint.tiles += 1
        footprint.disk_bytes += status.st_blocks * 512
        if status.st_size == 0:
            footprint.blank_tiles += 1
            continue
        footprint.image_tiles += 1
        footprint.image_bytes += status.st_size
        footprint.image_bytes_level6 += len(reencode(path.read_bytes()))
    return footprint


def reencode(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=6, compress_type=zlib.Z_DEFAULT_STRATEGY)
    return buffer.getvalue()


def allocation_of(size: int, folder: Path) -> int:
    """Return the bytes the filesystem allocates for one file of ``size`` bytes in ``folder``."""
    path = folder / ".allocation-probe"
    path.write_bytes(b"\0" * size)
    try:
        return path.stat().st_blocks * 512
    finally:
        path.unlink()


def unrenderable_reasons(catalog: Path) -> list[str]:
    from tiles.errors import SourceError
    from tiles.sources.raster import band_indexes
    from tiles.sources.raster_catalog import load_catalog
    from tiles.visparams import get_vis_param

    entry = next(iter(load_catalog(catalog).values()))
    reasons = []
    for name in NOT_RENDERABLE:
        try:
            band_indexes(entry, get_vis_param(name), YEAR)
        except SourceError:
            needed = ", ".join(get_vis_param(name).bands_for_year(YEAR))
            reasons.append(f"{name} (needs {needed})")
        else:
            raise SystemExit(f"{name} renders on the scene; add it to RENDERABLE.")
    return reasons


def main() -> int:
    arguments = parse_arguments()
    started = time.perf_counter()
    prepared = load_sample_data_script().prepare(SAMPLE_FOLDER, DEMO_POINTS)
    scratch = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        return run_benchmark(arguments, prepared, scratch, started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_benchmark(arguments: argparse.Namespace, prepared, scratch: Path, started: float) -> int:
    setup_django(scratch, prepared.catalog)
    import json

    from tiles.render import EMPTY_TILE

    features = json.loads(prepared.points.read_text(encoding="utf-8"))["features"]
    demo = [tuple(feature["geometry"]["coordinates"]) for feature in features]
    near = ring_points(prepared.cog, NEAR_OFFSET)
    far = ring_points(prepared.cog, FAR_OFFSET)
    groups = {"demo points": demo, "just outside": near, "far outside": far, "all": demo + near + far}

    root = scratch / "tiles"
    rows = []
    for preset in PRESETS:
        for vis_param in RENDERABLE:
            for group, points in groups.items():
                footprint = measure(points, preset, vis_param, root)
                rows.append([
                    preset, vis_param, group, footprint.points, footprint.tiles, footprint.image_tiles,
                    footprint.blank_tiles,
                    footprint.image_bytes / max(1, footprint.image_tiles) / 1024,
                    footprint.image_bytes_level6 / max(1, footprint.image_tiles) / 1024,
                    footprint.image_bytes / footprint.points / 1024,
                    footprint.disk_bytes / footprint.points / 1024,
                ])
    table = common.format_table(
        ["preset", "vis param", "points", "count", "tiles", "image tiles", "blank tiles", "KiB/image tile",
         "KiB/image tile, level 6", "KiB/point", "disk KiB/point"],
        rows,
    )

    stored = sorted(root.rglob("*.png"))
    blank_files = [path for path in stored if path.stat().st_size == 0]
    png_allocation = allocation_of(len(EMPTY_TILE), root)
    saved_bytes = len(blank_files) * len(EMPTY_TILE)
    saved_disk = len(blank_files) * png_allocation - sum(path.stat().st_blocks * 512 for path in blank_files)
    all_bytes = sum(path.stat().st_size for path in stored)
    all_disk = sum(path.stat().st_blocks * 512 for path in stored)
    elapsed = time.perf_counter() - started

    text = "\n".join([
        f"Storage footprint: tiles seeded by tiles.seeding.seed_tiles from the Landsat 8 scene, year {YEAR}, "
        f"for {len(demo)} demo points on the scene, {len(near)} points {NEAR_OFFSET} degrees outside its sides "
        f"and corners and {len(far)} points {FAR_OFFSET} degrees outside. Presets: seed (zooms 12 to 14, the "
        "tile under the point, DRY) and tvi (zoom 13 with its 3x3 block, DRY and WET; the catalog has no WET "
        "imagery, so WET tiles are blank). Tiles shared by points count once. KiB/point is file content; disk "
        "KiB/point is what the filesystem allocates. The level 6 column re-encodes the same image tiles with "
        "zlib level 6 and the default strategy, the setting used before Z_RLE.",
        f"Not rendered: {', '.join(unrenderable_reasons(prepared.catalog))}: the scene has only B2, B3 and B4.",
        "",
        table,
        "",
        f"Blank-tile dedupe over the {len(stored):,} stored files: {len(blank_files):,} blank tiles are empty "
        f"files. Storing the {len(EMPTY_TILE)}-byte transparent PNG for each would add {saved_bytes / 1024:,.1f} "
        f"KiB of content and {saved_disk / 1024:,.0f} KiB of allocated disk ({png_allocation:,} bytes per file "
        f"here), on top of {all_bytes / 1024:,.0f} KiB of content and {all_disk / 1024:,.0f} KiB allocated. "
        "Each blank tile still takes an inode and a directory entry.",
        f"Seeding and measuring took {elapsed:.0f} s.",
    ])
    print(text)
    if not arguments.no_record:
        common.append_record("Storage footprint of cached tiles", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
