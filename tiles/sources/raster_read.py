"""Reading web mercator tiles from an open raster with the GDAL calls of rio-tiler's ``Reader.tile()``.

``Reader.tile()`` (rio-tiler 9.4) spends about half of a tile's read time
outside GDAL's warp. For every tile it computes the file's default web
mercator resolution (``calculate_default_transform``), sets a masked
array's mask through numpy's slow mask setter and reads band statistics
tags. ``TileReader`` computes the resolution once per file, then builds the
same ``WarpedVRT`` with the same parameters and reads it the same way, so a
tile has the pixels and mask that ``Reader.tile()`` gives. Where GDAL would
resample that warped dataset by warping again at the tile's size,
``TileReader`` builds the second warped dataset directly (see
``TileReader._warps_to_tile_size``). Files that rio-tiler reads by another
route are read with ``Reader.tile()`` itself: files without a nodata value,
files already in web mercator, and geographic files reaching past 85.06°
latitude.

Every read returns all bands of the file. Where GDAL resamples the warped
grid to the tile's size because the file is finer than the tile, a read of
all bands gives other pixels than a read of some of them (GDAL 3.10,
rasterio 1.4.4). A fixed band set therefore keeps a tile's bytes the same
whichever vis params are rendered with it.

Each tile is read alone, with its own warped dataset, because GDAL's warper
approximates the coordinate transformation along each warped row (error
threshold 0.125 pixel, the rasterio and gdalwarp default). One read of a
4x4 block of tiles, cut into tiles, changed 3.5 to 4.9 % of the pixels on
the Landsat scene of ``benchmarks/bench_raster_rendering.py`` at zooms 12
and 13, and saved under 5 % of the CPU time. With a near-exact
transformation the cut tiles matched, but cost 18 to 23 ms of CPU time per
tile against 2.0 to 2.8 ms for tiles read alone with the approximate one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from morecantile import Tile
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.transform import Affine, from_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.warp import transform as transform_points
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.utils import non_alpha_indexes

WGS84 = CRS.from_epsg(4326)
# GDAL's default oversampling threshold for nearest-neighbour reads from overviews (GDAL 3.10).
GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD = 1.2
# rio-tiler clamps geographic rasters to this latitude before computing their
# web mercator resolution; such files take rio-tiler's own path.
MERCATOR_LATITUDE_LIMIT = 85.06


@dataclass(frozen=True)
class TileImage:
    """The bands of one read tile: a (bands, height, width) array masked where a band is nodata.

    ``indexes`` are the file's band indexes of the array's bands, in order.
    """

    array: np.ma.MaskedArray
    indexes: tuple[int, ...]

    def positions(self, indexes: tuple[int, ...]) -> tuple[int, ...]:
        """Return the array positions of the file's band ``indexes``."""
        return tuple(self.indexes.index(index) for index in indexes)


class TileReader:
    """Reader of the tiles of one open dataset, which is not thread-safe, like the dataset."""

    def __init__(self, reader: Reader, dataset: DatasetReader, tolerance: float = 0.125):
        self.reader = reader
        # Maximum error of GDAL's approximate coordinate transformation, in source pixels.
        # rasterio and rio-tiler use 0.125, and Reader.tile() uses it whatever this is.
        self.tolerance = tolerance
        self.dataset = dataset
        self.tms = reader.tms
        self.crs = self.tms.rasterio_crs
        # The file's bands that every read returns, which are all bands but an alpha band.
        self.band_indexes: tuple[int, ...] = tuple(non_alpha_indexes(dataset))
        # The dataset's resolution in the tile matrix set's CRS, computed on the first read.
        self._native: Affine | None = None

    def uses_warped_vrt(self, nodata: float | None) -> bool:
        """Return whether tiles of this dataset are read here rather than by ``Reader.tile()``."""
        dataset = self.dataset
        if nodata is None or dataset.crs is None or dataset.crs == self.crs or self.reader.options:
            return False
        if dataset.crs == WGS84:
            _west, south, _east, north = dataset.bounds
            if max(abs(south), abs(north)) > MERCATOR_LATITUDE_LIMIT:
                return False
        return True

    def tile(self, x: int, y: int, z: int, nodata: float | None) -> TileImage:
        """Read every band but an alpha band of tile z/x/y.

        ``nodata`` overrides the file's nodata value, and None keeps it.
        Raises rio-tiler's ``TileOutsideBounds`` where ``Reader.tile()`` does.
        """
        indexes = self.band_indexes
        if nodata is None:
            nodata = self.dataset.nodata
        if not self.uses_warped_vrt(nodata):
            options = {} if nodata is None else {"nodata": nodata}
            return TileImage(self.reader.tile(x, y, z, indexes=indexes, **options).array, indexes)
        bounds = tuple(self.tms.xy_bounds(Tile(x=x, y=y, z=z)))
        if not self._corner_inside(bounds) and not self.reader.tile_exists(x, y, z):
            raise TileOutsideBounds(f"Tile(x={x}, y={y}, z={z}) is outside bounds")

        matrix = self.tms.matrix(z)
        height, width = matrix.tileHeight, matrix.tileWidth
        transform, vrt_width, vrt_height = self._vrt_grid(bounds, height, width)
        if self._warps_to_tile_size(vrt_width / width, vrt_height / height):
            # Same geotransform arithmetic as GDAL's RescaleDstGeoTransform, bit for bit.
            transform = Affine(
                transform.a * (vrt_width / width), transform.b * (vrt_width / width), transform.c,
                transform.d * (vrt_height / height), transform.e * (vrt_height / height), transform.f,
            )
            vrt_width, vrt_height = width, height
        with WarpedVRT(
            self.dataset,
            crs=self.crs,
            transform=transform,
            width=vrt_width,
            height=vrt_height,
            resampling=Resampling.nearest,
            tolerance=self.tolerance,
            dtype=self.dataset.dtypes[0],
            src_nodata=nodata,
            nodata=nodata,
            add_alpha=False,
        ) as vrt:
            values = vrt.read(
                indexes=list(indexes), out_shape=(len(indexes), height, width), resampling=Resampling.nearest
            )
        mask = np.isnan(values) if math.isnan(nodata) else values == nodata
        return TileImage(np.ma.MaskedArray(values, mask=mask, copy=False), indexes)

    def _warps_to_tile_size(self, x_factor: float, y_factor: float) -> bool:
        """Return whether GDAL would serve the tile's read by warping straight to the tile's size.

        When all bands of a whole warped dataset are read into a smaller
        array and no overview is chosen, GDAL 3.10's
        ``VRTWarpedDataset::IRasterIO`` builds a warped dataset of the
        array's size, with the geotransform scaled by the size ratio, and
        warps into it. Building that dataset here gives the same pixels for
        one warp of the tile's size instead of two datasets and a warp of the
        larger grid. GDAL chooses an overview whose downsampling factor is
        below 1.2 times the requested one, so this requires a factor at least
        10 % below that threshold for the file's smallest overview.

        NOTE: this depends on GDAL internals. The tests compare the bytes of
        every tile with ``Reader.tile()`` at zooms with and without resampling.
        """
        factor = max(x_factor, y_factor)
        if factor <= 1.0:
            return False
        # GDAL looks at the overviews of band 1.
        overviews = self.dataset.overviews(1)
        if not overviews:
            return True
        return factor * GDAL_OVERVIEW_OVERSAMPLING_THRESHOLD < 0.9 * min(overviews)

    def _corner_inside(self, bounds: tuple[float, float, float, float]) -> bool:
        """Return True when a corner of the tile lies more than one pixel inside the dataset's bounds.

        rio-tiler's ``tile_exists`` intersects the dataset's bounds with the
        bounding box of the tile's edges in the dataset's CRS. The edges are
        densified with 21 points each, corners included, so a corner inside
        the bounds makes ``tile_exists`` True. Transforming four points costs
        about a quarter of the densified transformation. The margin covers
        rounding differences between the two transformations.
        """
        west, south, east, north = bounds
        try:
            xs, ys = transform_points(
                self.crs, self.dataset.crs, [west, east, east, west], [south, south, north, north]
            )
        except RasterioError:
            # A corner is outside the projection's domain, so tile_exists decides.
            return False
        left, bottom, right, top = self.dataset.bounds
        margin = max(abs(self.dataset.res[0]), abs(self.dataset.res[1]))
        low_x, high_x = min(left, right) + margin, max(left, right) - margin
        low_y, high_y = min(bottom, top) + margin, max(bottom, top) - margin
        return any(low_x < x < high_x and low_y < y < high_y for x, y in zip(xs, ys))

    def _vrt_grid(self, bounds: tuple[float, float, float, float], height: int, width: int) -> tuple[Affine, int, int]:
        """Return the transform and size of the virtual warped dataset of one tile.

        The grid spans the tile's bounds at the dataset's own resolution, or
        at the tile's resolution when that is finer (overzoom). GDAL then
        resamples the grid to the tile's size while reading. This is the grid
        that rio-tiler 9.4's ``get_vrt_transform`` gives a tile of a file in
        another CRS than the tile's.
        """
        if self._native is None:
            self._native = self._native_transform()
        west, south, east, north = bounds
        tile_transform = from_bounds(west, south, east, north, width, height)
        x_resolution = self._native.a
        y_resolution = self._native.e
        if abs(x_resolution) > abs(tile_transform.a):
            x_resolution = tile_transform.a
        if abs(y_resolution) > abs(tile_transform.e):
            y_resolution = tile_transform.e
        vrt_width = max(1, round((east - west) / x_resolution))
        vrt_height = max(1, round((south - north) / y_resolution))
        return from_bounds(west, south, east, north, vrt_width, vrt_height), vrt_width, vrt_height

    def _native_transform(self) -> Affine:
        dataset = self.dataset
        transform, _width, _height = calculate_default_transform(
            dataset.crs, self.crs, dataset.width, dataset.height, *dataset.bounds
        )
        return transform
