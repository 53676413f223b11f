"""The ``raster`` tile source: tiles rendered with rio-tiler from catalogued GeoTIFF/COG files.

The source looks up the file of a tile's layer, year and period in a raster
catalog (see ``tiles.sources.raster_catalog``) and reads the tile's window in
web mercator with rio-tiler. It turns digital numbers into values with the
entry's scale and offset, then stretches them with the vis param. Tiles with
no catalogued file, or outside the file's bounds, are ``render.EMPTY_TILE``.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rio_tiler.errors import NoOverviewWarning, RioTilerError, TileOutsideBounds
from rio_tiler.io import Reader

from tiles import render
from tiles.address import TileAddress
from tiles.errors import SourceError
from tiles.sources.base import TileSource
from tiles.sources.raster_catalog import CatalogEntry, CatalogKey, catalog_key, load_catalog
from tiles.sources.raster_read import TileImage, TileReader
from tiles.visparams import VisParam, get_vis_param

logger = logging.getLogger(__name__)

# Open files kept per process; the least recently used one is closed past this.
DEFAULT_MAX_OPEN_FILES = 32


class RasterSource(TileSource):
    """Renders tiles from the GeoTIFF/COG files of a raster catalog.

    ``config`` keys: ``catalog`` (path of the catalog JSON file, default
    ``settings.RASTER_CATALOG_FILE``) and ``max_open_files`` (default 32).
    """

    def __init__(self, layer: str, config: dict):
        super().__init__(layer, config)
        catalog_path = config.get("catalog") or settings.RASTER_CATALOG_FILE
        self.catalog = CatalogFile(Path(catalog_path))
        max_open = config.get("max_open_files", DEFAULT_MAX_OPEN_FILES)
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise ImproperlyConfigured(
                f"Tile source of layer {layer!r}: max_open_files={max_open!r} is invalid; use an integer of 1 or more."
            )
        self.rasters = OpenRasters(max_open)

    def fetch(self, address: TileAddress) -> bytes:
        entry = self.catalog.entry_for(address)
        if entry is None:
            return render.EMPTY_TILE
        vis = get_vis_param(address.vis_param)
        indexes = band_indexes(entry, vis, address.year)
        image = self._read_tile(entry, address, indexes)
        if image is None:
            return render.EMPTY_TILE
        return render_image(image, image.positions(indexes), entry, vis)

    def fetch_many(self, addresses: list[TileAddress]) -> dict[TileAddress, bytes | Exception]:
        """Render several tiles, reading each (file, tile) window once for all its vis params.

        Each tile is read as ``fetch`` reads it, so both return the same bytes
        for a tile. The module ``tiles.sources.raster_read`` explains why
        tiles are not cut out of larger reads.
        """
        results: dict[TileAddress, bytes | Exception] = {}
        groups: dict[tuple[CatalogKey, int, int, int], list[tuple[TileAddress, tuple[int, int, int]]]] = {}
        entries: dict[CatalogKey, CatalogEntry] = {}
        for address in addresses:
            try:
                entry = self.catalog.entry_for(address)
                if entry is None:
                    results[address] = render.EMPTY_TILE
                    continue
                indexes = band_indexes(entry, get_vis_param(address.vis_param), address.year)
            except Exception as error:  # noqa: BLE001 - returned to the caller, which counts and records it
                results[address] = error
                continue
            entries[entry.key] = entry
            groups.setdefault((entry.key, address.z, address.x, address.y), []).append((address, indexes))

        for (key, _z, _x, _y), members in groups.items():
            entry = entries[key]
            union = sorted({index for _address, indexes in members for index in indexes})
            try:
                image = self._read_tile(entry, members[0][0], tuple(union))
            except Exception as error:  # noqa: BLE001 - returned to the caller, which counts and records it
                for address, _indexes in members:
                    results[address] = error
                continue
            for address, indexes in members:
                if image is None:
                    results[address] = render.EMPTY_TILE
                    continue
                try:
                    results[address] = render_image(
                        image, image.positions(indexes), entry, get_vis_param(address.vis_param)
                    )
                except Exception as error:  # noqa: BLE001 - returned to the caller, which counts and records it
                    results[address] = error
        return results

    def close(self) -> None:
        self.rasters.close()

    def _read_tile(self, entry: CatalogEntry, address: TileAddress, indexes: tuple[int, ...]) -> TileImage | None:
        """Read one web mercator tile, or return None when the tile misses the file.

        The image has every band of the file but an alpha band. ``indexes``
        are the bands that the caller will use, and this checks them.
        """
        # Another thread may close the reader between ``get`` and the read (least recently used
        # eviction), so a closed reader is fetched again once.
        for _attempt in range(2):
            raster = self.rasters.get(entry)
            out_of_range = [index for index in indexes if index > raster.band_count]
            if out_of_range:
                raise SourceError(
                    f"Raster {entry.path} has {raster.band_count} bands, but {entry.describe()} maps a band "
                    f"to index {max(out_of_range)}. Fix the entry's 'bands' mapping to use indexes 1 to "
                    f"{raster.band_count}."
                )
            alpha = [index for index in indexes if index not in raster.tiles.band_indexes]
            if alpha:
                raise SourceError(
                    f"Raster {entry.path} band {alpha[0]} is an alpha band, but {entry.describe()} maps an "
                    f"image band to it. Fix the entry's 'bands' mapping to use the bands "
                    f"{', '.join(map(str, raster.tiles.band_indexes))}."
                )
            with raster.lock:
                if raster.closed:
                    continue
                try:
                    return raster.tiles.tile(address.x, address.y, address.z, entry.nodata)
                except TileOutsideBounds:
                    return None
                except (RasterioError, RioTilerError) as error:
                    raise SourceError(
                        f"Reading tile z={address.z} x={address.x} y={address.y} from raster {entry.path} "
                        f"({entry.describe()}) failed: {error}",
                        transient=entry.is_remote,
                    ) from error
        raise SourceError(
            f"Raster {entry.path} was closed twice while tile z={address.z} x={address.x} y={address.y} waited "
            f"to read it, because more files are in use than max_open_files allows. Raise max_open_files.",
            transient=True,
        )


def band_indexes(entry: CatalogEntry, vis: VisParam, year: int) -> tuple[int, int, int]:
    """Return the file's band indexes of a vis param's red, green and blue bands.

    Raises a permanent ``SourceError`` naming every band the entry does not map.
    """
    names = vis.bands_for_year(year)
    missing = [name for name in names if name not in entry.bands]
    if missing:
        raise SourceError(
            f"Vis param {vis.name} needs band {', '.join(missing)} for {year}, but raster {entry.path} "
            f"({entry.describe()}) maps only {', '.join(entry.bands)}. "
            f"Add the band to the entry's 'bands' mapping if the file has it, catalogue a file that has it, "
            f"or remove {vis.name} from the campaign's vis params."
        )
    red, green, blue = (entry.bands[name] for name in names)
    return red, green, blue


def render_image(image: TileImage, positions: tuple[int, ...], entry: CatalogEntry, vis: VisParam) -> bytes:
    """Stretch the bands at ``positions`` of a read image and encode them as a PNG tile.

    A pixel is transparent when any of the three bands is masked, because it
    is nodata or outside the file. Bands of uint8 or uint16 digital numbers
    are stretched through a lookup table and other bands value by value.
    Both ways give the same bytes for the same values.
    """
    bands = list(positions)
    valid = ~np.ma.getmaskarray(image.array)[bands].any(axis=0)
    if not valid.any():
        return render.EMPTY_TILE
    numbers = image.array.data[bands]
    if numbers.dtype in (np.uint8, np.uint16):
        table = render.stretch_table(vis, entry.scale, entry.offset, np.iinfo(numbers.dtype).max + 1)
        return render.encode_tile(render.render_rgba_from_table(numbers, valid, table))
    values = numbers.astype(np.float32) * np.float32(entry.scale) + np.float32(entry.offset)
    return render.encode_tile(render.render_rgba(values, valid, vis))


class CatalogFile:
    """A raster catalog file, read again whenever its modification time, size or inode changes.

    A missing file is a catalog without imagery: every lookup returns None,
    and a warning is logged once until the file appears.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._entries: dict[CatalogKey, CatalogEntry] = {}
        self._error: str | None = None
        self._missing_logged = False
        self._missing_keys_logged: set[CatalogKey] = set()

    def entries(self) -> dict[CatalogKey, CatalogEntry]:
        """Return the catalog's entries, reading the file again if it changed."""
        with self._lock:
            return self._current_entries()

    def entry_for(self, address: TileAddress) -> CatalogEntry | None:
        key = catalog_key(address.layer, address.year, address.period, address.month)
        with self._lock:
            entry = self._current_entries().get(key)
            if entry is not None or self._signature is None or key in self._missing_keys_logged:
                return entry
            self._missing_keys_logged.add(key)
        logger.info(
            "Raster catalog %s has no file for layer %s, year %s, period %s%s, so its tiles are transparent.",
            self.path, address.layer, address.year, address.period.value,
            f", month {address.month}" if address.month else "",
        )
        return None

    def _current_entries(self) -> dict[CatalogKey, CatalogEntry]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return self._forget_missing()
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature != self._signature:
            self._reload(signature)
        if self._error is not None:
            raise ImproperlyConfigured(self._error)
        return self._entries

    def _forget_missing(self) -> dict[CatalogKey, CatalogEntry]:
        if not self._missing_logged:
            logger.warning(
                "Raster catalog %s does not exist, so every raster tile is transparent. "
                "Create it (python scripts/sample_data.py --dest DIR writes a sample one) "
                "or set RASTER_CATALOG_FILE.",
                self.path,
            )
            self._missing_logged = True
        self._signature = None
        self._entries = {}
        self._error = None
        return self._entries

    def _reload(self, signature: tuple[int, int, int]) -> None:
        self._signature = signature
        self._missing_keys_logged.clear()
        try:
            self._entries = load_catalog(self.path)
        except FileNotFoundError:
            self._forget_missing()
            return
        except ImproperlyConfigured as error:
            self._entries = {}
            self._error = str(error)
            logger.error("%s", error)
            return
        except (OSError, UnicodeDecodeError) as error:
            self._entries = {}
            self._error = (
                f"Reading raster catalog {self.path} failed: {error}. Check the file's permissions and encoding."
            )
            logger.error("%s", self._error)
            return
        self._error = None
        self._missing_logged = False
        logger.info("Loaded raster catalog %s with %d entries.", self.path, len(self._entries))


@dataclass
class OpenRaster:
    reader: Reader
    dataset: DatasetReader
    tiles: TileReader
    band_count: int
    # rasterio datasets are not thread-safe, so reads of one file take turns.
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def close(self) -> None:
        with self.lock:
            self.reader.close()
            self.dataset.close()
            self.closed = True


class OpenRasters:
    """Open rio-tiler readers of one process, reused across tiles and closed least recently used first.

    A local file is opened again when its modification time or size changes.
    A forked child process drops the readers it inherited and opens its own.
    """

    def __init__(self, max_open: int):
        self.max_open = max_open
        self._lock = threading.Lock()
        self._readers: OrderedDict[tuple, OpenRaster] = OrderedDict()
        self._pid = os.getpid()

    def get(self, entry: CatalogEntry) -> OpenRaster:
        key = self._key(entry)
        with self._lock:
            if self._pid != os.getpid():
                # GDAL handles must not be shared across processes, and the parent still owns these.
                self._readers = OrderedDict()
                self._pid = os.getpid()
            raster = self._readers.get(key)
            if raster is not None:
                self._readers.move_to_end(key)
                return raster
            raster = self._open(entry)
            # A reader of an older version of the same file is stale, so close it now.
            for stale_key in [other for other in self._readers if other[0] == entry.path]:
                self._readers.pop(stale_key).close()
            self._readers[key] = raster
            while len(self._readers) > self.max_open:
                _key, evicted = self._readers.popitem(last=False)
                evicted.close()
            return raster

    def close(self) -> None:
        with self._lock:
            readers = list(self._readers.values()) if self._pid == os.getpid() else []
            self._readers = OrderedDict()
        for raster in readers:
            raster.close()

    def __len__(self) -> int:
        return len(self._readers)

    @staticmethod
    def _key(entry: CatalogEntry) -> tuple:
        if entry.is_remote:
            return (entry.path,)
        try:
            stat = os.stat(entry.path)
        except FileNotFoundError:
            raise SourceError(
                f"Raster {entry.path} ({entry.describe()}) does not exist. "
                "Create the file or fix the entry's 'path'."
            ) from None
        return (entry.path, stat.st_mtime_ns, stat.st_size)

    @staticmethod
    def _open(entry: CatalogEntry) -> OpenRaster:
        try:
            # A dataset that rio-tiler opens itself keeps the GDAL environment of the opening
            # thread, and closing it from another thread raises rasterio's EnvError (rasterio
            # 1.4.4, rio-tiler 9.4). A dataset opened inside a short-lived Env has none attached.
            with rasterio.Env():
                dataset = rasterio.open(entry.path)
        except RasterioError as error:
            raise SourceError(
                f"Opening raster {entry.path} ({entry.describe()}) failed: {error}. "
                "Check that the file is a GeoTIFF that GDAL can read.",
                transient=entry.is_remote,
            ) from error
        try:
            with warnings.catch_warnings():
                # The check below logs the same advice once per opened file.
                warnings.simplefilter("ignore", NoOverviewWarning)
                reader = Reader(entry.path, dataset=dataset)
        except (RasterioError, RioTilerError) as error:
            dataset.close()
            raise SourceError(
                f"Opening raster {entry.path} ({entry.describe()}) failed: {error}. "
                "Check that the file is a GeoTIFF that GDAL can read.",
                transient=entry.is_remote,
            ) from error
        if min(dataset.width, dataset.height) > 512 and not dataset.overviews(1):
            logger.warning(
                "Raster %s has no overviews, so every low-zoom tile reads the full-resolution pixels. "
                "Convert it to a Cloud-Optimized GeoTIFF to speed up rendering.",
                entry.path,
            )
        return OpenRaster(reader=reader, dataset=dataset, tiles=TileReader(reader, dataset), band_count=dataset.count)
