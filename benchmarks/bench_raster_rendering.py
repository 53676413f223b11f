"""Benchmark: rendering PNG tiles from the real Landsat scene, cachecampaign's raster path against a plain loop.

The scene (scripts/sample_data.py, a Landsat 8 Level-1 subset made a COG
with overviews) is prepared once under ``benchmarks/.cache``. The tile list
is every tile of the scene's footprint at zooms 12 and 13 plus every
``Z14_STEP``-th tile at zoom 14, rendered with the vis param
landsat-toa-true by:

- A, cachecampaign: ``RasterSource.fetch_many``, as seeding calls it;
- B, a plain loop: per tile, rio-tiler's ``Reader.tile()``, the vis param's
  stretch in float32 numpy, and Pillow's PNG encoder with its defaults;
- C, a floor: only the PNG encoding of A, on RGBA arrays rendered by A's
  code beforehand, with A's encoder settings.

The script checks that A's bytes equal those of ``fetch`` and of rio-tiler's
``Reader.tile()`` rendered by A's code, and measures reading blocks of 4x4
tiles at once against reading tiles alone.

All run in this one process, alternately, after a warm-up pass each, so
GDAL's block cache holds the scene for all of them. Tiles per CPU-second
are the process's CPU time, which other load on the machine does not
inflate; tiles/s are wall-clock.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

VIS_PARAM = "landsat-toa-true"
YEAR = 2020
ZOOMS = (12, 13, 14)
# Zoom 14 has about 800 tiles over the scene; this step keeps a spread sample.
Z14_STEP = 8
SAMPLE_FOLDER = common.CACHE_DIR / "landsat"
# Encoder settings measured side by side on the same arrays: (zlib level, zlib strategy).
ENCODER_SETTINGS = (
    (1, zlib.Z_DEFAULT_STRATEGY), (2, zlib.Z_DEFAULT_STRATEGY), (3, zlib.Z_DEFAULT_STRATEGY),
    (6, zlib.Z_DEFAULT_STRATEGY),
    (1, zlib.Z_RLE), (6, zlib.Z_RLE), (6, zlib.Z_FILTERED), (6, zlib.Z_HUFFMAN_ONLY),
)
# The parent-read experiment: zooms, and error thresholds of GDAL's approximate coordinate
# transformation in source pixels. rasterio 1.4.4 rejects a threshold of 0 (it builds the warped
# dataset without a transformer, and GDAL fails with "pfnTransformer is NULL"), so 1e-12 replaces
# for the exact transformation: it makes GDAL transform nearly every pixel exactly.
PARENT_ZOOMS = (12, 13)
PARENT_TOLERANCES = (0.125, 1e-12)
STRATEGY_NAMES = {
    zlib.Z_DEFAULT_STRATEGY: "default", zlib.Z_RLE: "Z_RLE", zlib.Z_FILTERED: "Z_FILTERED",
    zlib.Z_HUFFMAN_ONLY: "Z_HUFFMAN_ONLY",
}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_arguments(parser, rounds=3)
    arguments = parser.parse_args()
    if arguments.rounds < 1:
        parser.error("--rounds must be 1 or more")
    return arguments


def load_sample_data_script() -> ModuleType:
    """Import scripts/sample_data.py, a plain script rather than a package module."""
    path = common.ROOT / "scripts" / "sample_data.py"
    spec = importlib.util.spec_from_file_location("sample_data", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up by name while the script runs.
    sys.modules["sample_data"] = module
    spec.loader.exec_module(module)
    return module


def setup_django(scratch: Path) -> None:
    import logging

    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = "cachecampaign.settings"
    # Settings create folders under the var folder; keep them out of the work tree.
    os.environ["CACHECAMPAIGN_VAR_DIR"] = str(scratch)
    django.setup()
    logging.getLogger().setLevel(logging.WARNING)


def tile_list(cog: Path) -> list[tuple[int, int, int]]:
    """Return (z, x, y) of every tile of the COG's footprint at zooms 12 and 13 and a sample at 14."""
    import mercantile
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(cog) as dataset:
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    tiles = []
    for zoom in ZOOMS:
        footprint = sorted((tile.z, tile.x, tile.y) for tile in mercantile.tiles(west, south, east, north, zooms=[zoom]))
        tiles += footprint[::Z14_STEP] if zoom == 14 else footprint
    return tiles


# --- Contenders ----------------------------------------------------------------


class Cachecampaign:
    """A: the raster source of a catalog with the scene, as a caching run uses it."""

    label = "A cachecampaign"

    def __init__(self, catalog: Path, tiles: list[tuple[int, int, int]]):
        from tiles.address import TileAddress
        from tiles.periods import Period
        from tiles.sources.raster import RasterSource

        self.source = RasterSource("landsat", {"catalog": str(catalog)})
        self.addresses = [TileAddress("landsat", VIS_PARAM, Period.DRY, YEAR, None, z, x, y) for z, x, y in tiles]
        self.outputs: list[bytes] = []

    def render(self) -> list[bytes]:
        results = self.source.fetch_many(self.addresses)
        outputs = []
        for address in self.addresses:
            result = results[address]
            if isinstance(result, Exception):
                raise SystemExit(f"cachecampaign failed on tile {address}: {result}")
            outputs.append(result)
        return outputs


class PlainLoop:
    """B: rio-tiler's Reader.tile(), a float32 stretch and Pillow's default PNG settings, tile by tile."""

    label = "B plain rio-tiler loop"

    def __init__(self, cog: Path, catalog_entry, tiles: list[tuple[int, int, int]]):
        from rio_tiler.io import Reader

        from tiles.sources.raster import band_indexes
        from tiles.visparams import get_vis_param

        self.reader = Reader(str(cog))
        self.tiles = tiles
        self.vis = get_vis_param(VIS_PARAM)
        self.indexes = band_indexes(catalog_entry, self.vis, YEAR)
        self.scale = np.float32(catalog_entry.scale)
        self.offset = np.float32(catalog_entry.offset)
        self.low = np.asarray(self.vis.minimum, dtype=np.float32).reshape(3, 1, 1)
        self.high = np.asarray(self.vis.maximum, dtype=np.float32).reshape(3, 1, 1)

    def render(self) -> list[bytes]:
        from PIL import Image
        from rio_tiler.errors import TileOutsideBounds

        from tiles.render import EMPTY_TILE

        outputs = []
        for z, x, y in self.tiles:
            try:
                image = self.reader.tile(x, y, z, indexes=self.indexes, nodata=0)
            except TileOutsideBounds:
                outputs.append(EMPTY_TILE)
                continue
            valid = ~np.ma.getmaskarray(image.array).any(axis=0)
            if not valid.any():
                outputs.append(EMPTY_TILE)
                continue
            values = image.array.data.astype(np.float32) * self.scale + self.offset
            scaled = np.clip((values - self.low) / (self.high - self.low), 0.0, 1.0) ** np.float32(1 / self.vis.gamma)
            rgb = np.where(valid, np.rint(scaled * 255.0), 0).astype(np.uint8)
            rgba = np.dstack([rgb[0], rgb[1], rgb[2], np.where(valid, 255, 0).astype(np.uint8)])
            buffer = io.BytesIO()
            Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
            outputs.append(buffer.getvalue())
        return outputs


class EncodeFloor:
    """C: A's PNG encoding alone, on RGBA arrays that A's code rendered beforehand."""

    label = "C encode-only floor"

    def __init__(self, arrays: list[np.ndarray | None]):
        self.arrays = arrays

    def render(self) -> list[bytes]:
        from tiles import render

        return [render.EMPTY_TILE if rgba is None else render.encode_tile(rgba) for rgba in self.arrays]


def render_one_by_one(source, addresses) -> tuple[list[bytes], list[np.ndarray | None]]:
    """Render each address alone with ``fetch``, the tile endpoint's path.

    Returns the PNG bytes and the RGBA array that A's code encoded for each
    address, or None where it encoded nothing (the tile misses the scene or
    has no valid pixel).
    """
    from tiles.sources import raster

    outputs: list[bytes] = []
    arrays: list[np.ndarray | None] = []
    captured: list[np.ndarray] = []
    original = raster.render.encode_tile

    def capture(rgba: np.ndarray) -> bytes:
        captured.append(rgba.copy())
        return original(rgba)

    raster.render.encode_tile = capture
    try:
        for address in addresses:
            captured.clear()
            outputs.append(source.fetch(address))
            arrays.append(captured[0] if captured else None)
    finally:
        raster.render.encode_tile = original
    return outputs, arrays


def time_phases(ours: Cachecampaign) -> dict[str, float]:
    """Return the CPU seconds A spends reading, stretching and encoding its tiles, from one pass of all three.

    The pass calls the raster source's steps one by one, as ``fetch_many``
    does for a tile with one vis param.
    """
    from tiles.sources import raster
    from tiles.visparams import get_vis_param

    source = ours.source
    vis = get_vis_param(VIS_PARAM)
    phases = {"read": 0.0, "render": 0.0, "encode": 0.0}
    original = raster.render.encode_tile

    def timed_encode(rgba: np.ndarray) -> bytes:
        started = time.process_time()
        try:
            return original(rgba)
        finally:
            phases["encode"] += time.process_time() - started

    raster.render.encode_tile = timed_encode
    try:
        for address in ours.addresses:
            entry = source.catalog.entry_for(address)
            if entry is None:
                continue
            indexes = raster.band_indexes(entry, vis, YEAR)
            started = time.process_time()
            image = source._read_tile(entry, address, indexes)
            read_end = time.process_time()
            phases["read"] += read_end - started
            if image is not None:
                raster.render_image(image, image.positions(indexes), entry, vis)
                phases["render"] += time.process_time() - read_end
    finally:
        raster.render.encode_tile = original
    phases["stretch"] = phases.pop("render") - phases["encode"]
    return phases


def timed_round(render) -> dict[str, float]:
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    outputs = render()
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    from tiles.render import EMPTY_TILE

    images = [data for data in outputs if data != EMPTY_TILE]
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "tiles_per_second": len(outputs) / wall,
        "tiles_per_cpu_second": len(outputs) / cpu,
        "bytes_per_image_tile": sum(map(len, images)) / max(1, len(images)),
        "image_tiles": float(len(images)),
    }


# --- Checks and the encoder table ----------------------------------------------


def check_outputs(batched: list[bytes], single: list[bytes], reference: list[bytes]) -> list[str]:
    """Check that the endpoint's path returns A's bytes, and count the pixels where A and B differ."""
    from PIL import Image

    from tiles.render import EMPTY_TILE

    mismatched = sum(1 for first, second in zip(batched, single) if first != second)
    if mismatched:
        raise SystemExit(f"fetch_many and fetch returned different bytes for {mismatched} tiles.")
    empty_mismatch = sum(1 for first, second in zip(batched, reference) if (first == EMPTY_TILE) != (second == EMPTY_TILE))
    equal = total = max_difference = 0
    for first, second in zip(batched, reference):
        if first == EMPTY_TILE or second == EMPTY_TILE:
            continue
        ours_pixels = np.asarray(Image.open(io.BytesIO(first)).convert("RGBA"), dtype=np.int16)
        plain_pixels = np.asarray(Image.open(io.BytesIO(second)).convert("RGBA"), dtype=np.int16)
        equal += int((ours_pixels == plain_pixels).all(axis=2).sum())
        total += ours_pixels.shape[0] * ours_pixels.shape[1]
        max_difference = max(max_difference, int(np.abs(ours_pixels - plain_pixels).max()))
    return [
        f"Checks: fetch() (the tile endpoint's path) returned the same bytes as fetch_many() for all "
        f"{len(batched)} tiles; A and B agree on which tiles are empty "
        f"({'all' if not empty_mismatch else f'{empty_mismatch} differ'}), and {equal / max(1, total):.4%} of "
        f"the pixels of the image tiles are identical (max channel difference {max_difference}).",
    ]


def check_previous_read_path(ours: Cachecampaign, cog: Path, batched: list[bytes]) -> str:
    """Check that A returns, for every tile, the bytes of rio-tiler's ``Reader.tile()`` rendered by A's code.

    ``Reader.tile()`` of every band of the file, then ``render_image``, is
    how the raster source read tiles before it built the warped datasets
    itself. Equal bytes mean that no pixel of any tile changed.
    """
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    from tiles.render import EMPTY_TILE
    from tiles.sources.raster import band_indexes, render_image
    from tiles.visparams import get_vis_param

    vis = get_vis_param(VIS_PARAM)
    entry = next(iter(ours.source.catalog.entries().values()))
    positions = tuple(index - 1 for index in band_indexes(entry, vis, YEAR))
    differing = []
    with Reader(str(cog)) as reader:
        every_band = reader.dataset.indexes
        for address, data in zip(ours.addresses, batched):
            try:
                image = reader.tile(address.x, address.y, address.z, indexes=every_band, nodata=entry.nodata)
            except TileOutsideBounds:
                expected = EMPTY_TILE
            else:
                expected = render_image(image, positions, entry, vis)
            if data != expected:
                differing.append(f"{address.z}/{address.x}/{address.y}")
    if differing:
        raise SystemExit(
            f"A's bytes differ from rio-tiler's Reader.tile() rendered by render_image for {len(differing)} tiles, "
            f"such as {', '.join(differing[:5])}."
        )
    return (
        f"A returned, for all {len(batched)} tiles, the bytes of rio-tiler's Reader.tile() rendered by "
        "render_image (the previous read path), so no pixel changed."
    )


def parent_read_experiment(cog: Path, tiles: list[tuple[int, int, int]], nodata: float) -> str:
    """Measure reading 4x4 blocks of tiles as one parent window, against reading each tile alone.

    For each zoom in ``PARENT_ZOOMS`` and each error threshold in
    ``PARENT_TOLERANCES``, the tiles are read alone (as A reads them) and cut
    out of one read per block of 4x4 tiles, over the grid that the tiles
    alone use. Returns a table of the pixels that differ and of the CPU time
    per requested tile of both ways.
    """
    import rasterio
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    from tiles.sources.raster_read import TileReader

    rows = []
    with rasterio.open(cog) as dataset:
        for tolerance in PARENT_TOLERANCES:
            tiles_reader = TileReader(Reader(str(cog), dataset=dataset), dataset, tolerance=tolerance)
            for zoom in PARENT_ZOOMS:
                requested = [(x, y) for z, x, y in tiles if z == zoom]
                # Warm-up: the first read of a reader computes the dataset's web mercator resolution.
                for x, y in requested:
                    try:
                        tiles_reader.tile(x, y, zoom, nodata)
                    except TileOutsideBounds:
                        continue
                    break

                started = time.process_time()
                alone = {}
                for x, y in requested:
                    try:
                        alone[(x, y)] = tiles_reader.tile(x, y, zoom, nodata).array.data
                    except TileOutsideBounds:
                        continue
                alone_cpu = time.process_time() - started

                started = time.process_time()
                cut = read_parent_blocks(tiles_reader, zoom, list(alone), nodata)
                parent_cpu = time.process_time() - started

                differing = sum(int((alone[key] != cut[key]).any(axis=0).sum()) for key in alone)
                pixels = sum(array.shape[1] * array.shape[2] for array in alone.values())
                rows.append([
                    zoom, tolerance, len(alone), alone_cpu * 1000 / len(requested),
                    parent_cpu * 1000 / len(requested), f"{differing} of {pixels} ({differing / max(1, pixels):.2%})",
                ])
    return common.format_table(
        ["zoom", "error threshold px", "tiles read", "alone CPU ms/tile", "4x4 parent CPU ms/tile",
         "pixels differing"],
        rows,
    )


def read_parent_blocks(tiles_reader, zoom: int, keys: list[tuple[int, int]], nodata: float) -> dict:
    """Read each 4x4 block of tiles that contains one of ``keys`` once, and return the (x, y) tiles cut out of it."""
    from morecantile import Tile
    from rasterio.enums import Resampling
    from rasterio.transform import from_bounds
    from rasterio.vrt import WarpedVRT

    dataset = tiles_reader.dataset
    size = tiles_reader.tms.matrix(zoom).tileWidth
    bands = list(tiles_reader.band_indexes)
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for x, y in keys:
        blocks.setdefault((x // 4, y // 4), []).append((x, y))

    cut = {}
    for (block_x, block_y), children in blocks.items():
        west, _south, _east, north = tiles_reader.tms.xy_bounds(Tile(x=block_x * 4, y=block_y * 4, z=zoom))
        _west, south, east, _north = tiles_reader.tms.xy_bounds(Tile(x=block_x * 4 + 3, y=block_y * 4 + 3, z=zoom))
        # Every tile of a zoom has a warped grid of the same size, so the block's grid is 4x4 of them.
        first = tuple(tiles_reader.tms.xy_bounds(Tile(x=children[0][0], y=children[0][1], z=zoom)))
        _transform, child_width, child_height = tiles_reader._vrt_grid(first, size, size)
        with WarpedVRT(
            dataset, crs=tiles_reader.crs,
            transform=from_bounds(west, south, east, north, 4 * child_width, 4 * child_height),
            width=4 * child_width, height=4 * child_height, resampling=Resampling.nearest,
            tolerance=tiles_reader.tolerance, dtype=dataset.dtypes[0], src_nodata=nodata, nodata=nodata,
        ) as vrt:
            block = vrt.read(indexes=bands, out_shape=(len(bands), 4 * size, 4 * size), resampling=Resampling.nearest)
        for x, y in children:
            column, row = (x - block_x * 4) * size, (y - block_y * 4) * size
            cut[(x, y)] = block[:, row:row + size, column:column + size]
    return cut


def encoder_table(arrays: list[np.ndarray | None]) -> str:
    """Encode the same arrays with each setting and return a table of CPU ms and bytes per tile."""
    from PIL import Image

    images = [rgba for rgba in arrays if rgba is not None and rgba[:, :, 3].any()]
    rows = []
    for level, strategy in ENCODER_SETTINGS:
        cpu_start = time.process_time()
        size = 0
        for rgba in images:
            buffer = io.BytesIO()
            Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=level, compress_type=strategy)
            size += buffer.tell()
        cpu = time.process_time() - cpu_start
        rows.append([level, STRATEGY_NAMES[strategy], cpu * 1000 / len(images), size / len(images) / 1024])
    return common.format_table(["zlib level", "zlib strategy", "CPU ms/tile", "KiB/tile"], rows)


# --- Report ----------------------------------------------------------------------


def report(contenders: list[common.Contender], tiles: list[tuple[int, int, int]], checks: list[str],
           encoders: str, settings_line: str, phases: dict[str, float], parents: str) -> str:
    a, b, c = contenders
    rows = []
    for contender in contenders:
        rows.append([
            contender.label, len(contender.rounds), contender.median("seconds"),
            contender.median("tiles_per_second"), contender.median("tiles_per_cpu_second"),
            contender.median("bytes_per_image_tile") / 1024,
        ])
    table = common.format_table(
        ["contender", "rounds", "median s", "tiles/s", "tiles per CPU-second", "KiB per image tile"], rows
    )
    per_cpu = {contender.label: contender.median("tiles_per_cpu_second") for contender in contenders}
    versus_plain = per_cpu[a.label] / per_cpu[b.label]
    versus_floor = per_cpu[a.label] / per_cpu[c.label]
    counts = {zoom: sum(1 for z, _x, _y in tiles if z == zoom) for zoom in ZOOMS}
    image_tiles = int(a.rounds[0]["image_tiles"])
    return "\n".join([
        f"Raster rendering: {len(tiles)} tiles of the Landsat 8 scene (zoom 12: {counts[12]}, zoom 13: "
        f"{counts[13]}, every {Z14_STEP}th of zoom 14: {counts[14]}), vis param {VIS_PARAM}; {image_tiles} have "
        f"imagery and {len(tiles) - image_tiles} are empty (outside the scene or over nodata). One process, "
        "one thread.",
        settings_line,
        "",
        table,
        "",
        f"Per CPU-second: A / B = {versus_plain:.2f} (goal >= 1.5: {'met' if versus_plain >= 1.5 else 'missed'}), "
        f"A / C = {versus_floor:.2f} (goal >= 0.7: {'met' if versus_floor >= 0.7 else 'missed'}).",
        *checks,
        breakdown_line(phases, len(tiles)),
        "",
        "PNG encoder settings on the same image tiles (Pillow, CPU time of this process):",
        "",
        encoders,
        "",
        "Reading 4x4 blocks of tiles as one parent window and cutting it, against reading each tile alone "
        "(every band, nodata 0; an error threshold of 1e-12 px replaces GDAL's exact transformation, "
        "which rasterio 1.4.4 cannot select):",
        "",
        parents,
    ])


def breakdown_line(phases: dict[str, float], count: int) -> str:
    total = sum(phases.values())
    read, stretch, encode = (phases[name] * 1000 / count for name in ("read", "stretch", "encode"))
    return (
        f"A's CPU time per tile in one timed pass: {total * 1000 / count:.2f} ms, of which reading (one GDAL "
        f"warped dataset per tile) {read:.2f} ms ({phases['read'] / total:.0%}), the stretch and masking "
        f"{stretch:.2f} ms ({phases['stretch'] / total:.0%}) and PNG encoding {encode:.2f} ms "
        f"({phases['encode'] / total:.0%})."
    )


def main() -> int:
    arguments = parse_arguments()
    sample_data = load_sample_data_script()
    prepared = sample_data.prepare(SAMPLE_FOLDER)
    scratch = Path(tempfile.mkdtemp(prefix="bench-raster-"))
    try:
        return run_benchmark(arguments, prepared, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_benchmark(arguments: argparse.Namespace, prepared, scratch: Path) -> int:
    setup_django(scratch)
    from tiles import render
    from tiles.sources.raster_catalog import load_catalog

    tiles = tile_list(prepared.cog)
    catalog_entry = next(iter(load_catalog(prepared.catalog).values()))
    ours = Cachecampaign(prepared.catalog, tiles)
    plain = PlainLoop(prepared.cog, catalog_entry, tiles)
    # Warm-up: open the files and fill GDAL's block cache for every contender,
    # checking the outputs on the way.
    batched = ours.render()
    single, arrays = render_one_by_one(ours.source, ours.addresses)
    checks = check_outputs(batched, single, plain.render())
    checks.append(check_previous_read_path(ours, prepared.cog, batched))
    floor = EncodeFloor(arrays)
    floor.render()

    contenders = [
        common.Contender(ours.label, lambda _number: timed_round(ours.render)),
        common.Contender(plain.label, lambda _number: timed_round(plain.render)),
        common.Contender(floor.label, lambda _number: timed_round(floor.render)),
    ]
    common.run_alternating(contenders, arguments.rounds, time_limit=240)
    settings_line = (
        f"A and C encode with zlib level {render.PNG_COMPRESS_LEVEL} and strategy "
        f"{STRATEGY_NAMES.get(render.PNG_ZLIB_STRATEGY, render.PNG_ZLIB_STRATEGY)}; B with Pillow's defaults "
        "(level 6, default strategy)."
    )
    parents = parent_read_experiment(prepared.cog, tiles, catalog_entry.nodata)
    text = report(
        contenders, tiles, checks, encoder_table(floor.arrays), settings_line, time_phases(ours), parents
    )
    print()
    print(text)
    if not arguments.no_record:
        common.append_record("Raster rendering: cachecampaign vs a plain rio-tiler loop", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
