"""The sets of stored tiles that campaigns and points need, computed without loading all points.

A tile is a grid cell ``(z, x, y)`` combined with a *layer slice*: layer, vis
param, period, month and year. Every point of a plan needs the same slices,
so a set of tiles is kept as a map from cell to the slices needed there.
Points close together share cells, which keeps the map far smaller than a
list of keys: a campaign of 100,000 points on the seed preset needs at most
300,000 cells.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.db.models import Q

from campaigns.models import CachingRun, Campaign, Point
from campaigns.runs import InvalidCampaign, campaign_plan
from tiles.address import TileAddress
from tiles.grid import MAX_BUFFER, MAX_LATITUDE, point_tiles
from tiles.periods import Period
from tiles.plan import CachePlan

logger = logging.getLogger(__name__)

Cell = tuple[int, int, int]
# (layer, vis param, period, month, year)
Slice = tuple[str, str, Period, int | None, int]

POINT_CHUNK = 2000


def plan_slices(plan: CachePlan) -> frozenset[Slice]:
    return frozenset(
        (plan.layer, vis_param, period, month, year)
        for year in plan.years
        for vis_param in plan.vis_params
        for period, month in plan.preset.period_months()
    )


def slice_address(cell: Cell, layer_slice: Slice) -> TileAddress:
    layer, vis_param, period, month, year = layer_slice
    z, x, y = cell
    return TileAddress(layer, vis_param, period, year, month, z, x, y)


def campaign_plans(campaign: Campaign, run_plans: Iterable[dict] = ()) -> list[CachePlan]:
    """Return the distinct plans a campaign's tiles may have been cached with.

    That is its current plan and the plan of each of its runs, because a run
    may have used a preset other than the campaign's. A campaign that cannot
    be cached (Planet, no years) contributes only its runs' plans.
    """
    plans: dict[str, CachePlan] = {}
    try:
        current = campaign_plan(campaign)
        plans[_plan_identity(current.as_dict())] = current
    except InvalidCampaign:
        pass
    for record in run_plans:
        identity = _plan_identity(record)
        if identity not in plans:
            plans[identity] = CachePlan.from_dict(record)
    return list(plans.values())


def _plan_identity(record: dict) -> str:
    # The refresh moment of a run changes when tiles were written, not which.
    return json.dumps({key: value for key, value in record.items() if key != "refresh_before"}, sort_keys=True)


def run_plans_by_campaign(campaign_ids: Iterable[str] | None = None) -> dict[str, list[dict]]:
    """Return each campaign's distinct run plans, read in one query."""
    runs = CachingRun.objects.all()
    if campaign_ids is not None:
        runs = runs.filter(campaign_id__in=list(campaign_ids))
    found: dict[str, dict[str, dict]] = {}
    for campaign_id, record in runs.values_list("campaign_id", "plan").iterator(chunk_size=500):
        if record:
            found.setdefault(campaign_id, {})[_plan_identity(record)] = record
    return {campaign_id: list(records.values()) for campaign_id, records in found.items()}


@dataclass
class Bounds:
    """The longitude and latitude range of a set of points, in WGS84 degrees."""

    west: float = 180.0
    east: float = -180.0
    south: float = 90.0
    north: float = -90.0

    def add(self, lon: float, lat: float) -> None:
        self.west = min(self.west, lon)
        self.east = max(self.east, lon)
        self.south = min(self.south, lat)
        self.north = max(self.north, lat)

    @property
    def empty(self) -> bool:
        return self.west > self.east


@dataclass
class TileSet:
    """Tiles as a map from grid cell to the layer slices needed in that cell."""

    cells: dict[Cell, frozenset[Slice]] = field(default_factory=dict)
    bounds: Bounds = field(default_factory=Bounds)
    min_zoom: int | None = None
    max_buffer: int = 0
    slices: frozenset[Slice] = frozenset()
    _interned: dict[frozenset[Slice], frozenset[Slice]] = field(default_factory=dict)

    def add_point(self, lon: float, lat: float, plans: list[tuple[CachePlan, frozenset[Slice]]]) -> None:
        self.bounds.add(lon, lat)
        for plan, slices in plans:
            zooms = plan.preset.zooms
            self.min_zoom = min(zooms) if self.min_zoom is None else min(self.min_zoom, *zooms)
            self.max_buffer = max(self.max_buffer, plan.preset.buffer)
            if not slices <= self.slices:
                self.slices = self.slices | slices
            for cell in point_tiles(lon, lat, zooms, plan.preset.buffer):
                current = self.cells.get(cell)
                if current is None or current is slices:
                    self.cells[cell] = slices
                elif not slices <= current:
                    merged = current | slices
                    self.cells[cell] = self._interned.setdefault(merged, merged)

    def tile_count(self) -> int:
        return sum(len(slices) for slices in self.cells.values())

    def addresses(self, excluded: dict[Cell, set[Slice]] | None = None) -> Iterator[TileAddress]:
        """Yield every tile of the set, leaving out the ``excluded`` slices of each cell."""
        excluded = excluded or {}
        for cell in sorted(self.cells):
            skip = excluded.get(cell, ())
            for layer_slice in sorted(self.cells[cell], key=_slice_order):
                if layer_slice not in skip:
                    yield slice_address(cell, layer_slice)

    def count_excluding(self, excluded: dict[Cell, set[Slice]]) -> int:
        return sum(len(slices) - len(excluded.get(cell, ())) for cell, slices in self.cells.items())

    def search_filter(self) -> Q | None:
        """Return a filter of the points that can share a tile with this set, or None when the set is empty.

        A point shares a tile only if it lies within (own buffer + the largest
        buffer + 1) tile widths of a point of the set, at the set's lowest
        zoom. A tile is at most as tall in latitude as it is wide in
        longitude, so the same margin in degrees bounds both. Near the
        antimeridian and the poles the filter drops that side's bound.
        """
        if self.bounds.empty or self.min_zoom is None:
            return None
        margin = (self.max_buffer + MAX_BUFFER + 1) * 360.0 / 2**self.min_zoom
        condition = Q()
        if self.bounds.west - margin > -180.0 and self.bounds.east + margin < 180.0:
            condition &= Q(lon__gte=self.bounds.west - margin, lon__lte=self.bounds.east + margin)
        if self.bounds.south - margin > -MAX_LATITUDE:
            condition &= Q(lat__gte=self.bounds.south - margin)
        if self.bounds.north + margin < MAX_LATITUDE:
            condition &= Q(lat__lte=self.bounds.north + margin)
        return condition


def _slice_order(layer_slice: Slice) -> tuple:
    layer, vis_param, period, month, year = layer_slice
    return (layer, vis_param, period.value, month or 0, year)


def with_slices(plans: list[CachePlan]) -> list[tuple[CachePlan, frozenset[Slice]]]:
    return [(plan, plan_slices(plan)) for plan in plans]


def stream_points(points) -> Iterator[tuple[str, float, float]]:
    """Yield (id, lon, lat) of a point queryset, a chunk at a time."""
    yield from points.order_by("pk").values_list("pk", "lon", "lat").iterator(chunk_size=POINT_CHUNK)


def tile_set_of_points(
    points, plans: list[CachePlan], on_point: Callable[[], None] | None = None
) -> TileSet:
    """Build the tile set of a point queryset under the given plans, streaming the points."""
    tile_set = TileSet()
    plans_with_slices = with_slices(plans)
    for _point_id, lon, lat in stream_points(points):
        tile_set.add_point(lon, lat, plans_with_slices)
        if on_point is not None:
            on_point()
    return tile_set


def tiles_needed_elsewhere(
    tile_set: TileSet, *, exclude_campaign: str | None = None, exclude_point: str | None = None
) -> dict[Cell, set[Slice]]:
    """Return the slices of the set's cells that points outside the set also need.

    Points of ``exclude_campaign``, and the point ``exclude_point``, are the
    set's own and are not counted. Every other point counts whatever its
    ``cached`` flag: a point not cached yet may be in a run that has already
    found a tile stored and is about to mark the point cached.
    """
    shared: dict[Cell, set[Slice]] = {}
    search = tile_set.search_filter()
    if search is None:
        return shared
    campaigns = Campaign.objects.all()
    if exclude_campaign is not None:
        campaigns = campaigns.exclude(pk=exclude_campaign)
    run_plans = run_plans_by_campaign()
    for campaign in campaigns.iterator(chunk_size=200):
        plans = [
            (plan, slices & tile_set.slices)
            for plan, slices in with_slices(campaign_plans(campaign, run_plans.get(campaign.id, ())))
        ]
        plans = [(plan, slices) for plan, slices in plans if slices]
        if not plans:
            continue
        points = Point.objects.of_campaign(campaign.id).filter(search)
        if exclude_point is not None:
            points = points.exclude(pk=exclude_point)
        for _point_id, lon, lat in stream_points(points):
            for plan, slices in plans:
                for cell in point_tiles(lon, lat, plan.preset.zooms, plan.preset.buffer):
                    needed = tile_set.cells.get(cell)
                    if needed is None:
                        continue
                    common = needed & slices
                    if common:
                        shared.setdefault(cell, set()).update(common)
    return shared
