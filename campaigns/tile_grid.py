"""The picture grid of a point's cached tiles: one row per year, one column per vis param and period.

Each cell is the tile that contains the point at the chosen zoom. Storage is
checked for every cell here, so a page shows a missing tile as a missing
cell and never makes the tile endpoint produce it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils.translation import gettext as _

from campaigns.models import Campaign, Point
from campaigns.runs import InvalidCampaign, campaign_plan
from tiles.address import TileAddress
from tiles.grid import center_tile
from tiles.periods import Period
from tiles.storage import tile_exists, tile_key


@dataclass(frozen=True)
class GridColumn:
    vis_param: str
    period: Period
    month: int | None

    @property
    def label(self) -> str:
        if self.month is not None:
            return f"{self.vis_param} · {self.period.value} {self.month:02d}"
        return f"{self.vis_param} · {self.period.value}"


@dataclass
class GridCell:
    column: GridColumn
    key: str
    stored: bool
    url: str


@dataclass
class GridRow:
    year: int
    cells: list[GridCell]


@dataclass
class TileGrid:
    zoom: int | None = None
    zooms: tuple[int, ...] = ()
    x: int | None = None
    y: int | None = None
    columns: list[GridColumn] = field(default_factory=list)
    rows: list[GridRow] = field(default_factory=list)
    # Why the grid is empty, for a campaign that cannot be cached.
    error: str = ""

    @property
    def stored(self) -> int:
        return sum(cell.stored for row in self.rows for cell in row.cells)

    @property
    def total(self) -> int:
        return sum(len(row.cells) for row in self.rows)


def point_tile_grid(point: Point, zoom: int | None, tile_url: Callable[[TileAddress], str]) -> TileGrid:
    """Build the grid of a point at ``zoom`` (the plan's first zoom when None or not in the plan)."""
    campaign = Campaign.objects.filter(pk=point.campaign_id).first()
    if campaign is None:
        return TileGrid(error=_("Campaign %(id)s not found.") % {"id": point.campaign_id})
    try:
        plan = campaign_plan(campaign)
    except InvalidCampaign as error:
        return TileGrid(error=str(error))

    zooms = plan.preset.zooms
    chosen = zoom if zoom in zooms else zooms[0]
    x, y = center_tile(point.lon, point.lat, chosen)
    columns = [
        GridColumn(vis_param, period, month)
        for vis_param in plan.vis_params
        for period, month in plan.preset.period_months()
    ]
    grid = TileGrid(zoom=chosen, zooms=zooms, x=x, y=y, columns=columns)
    for year in plan.years:
        cells = []
        for column in columns:
            address = TileAddress(plan.layer, column.vis_param, column.period, year, column.month, chosen, x, y)
            stored = tile_exists(address)
            cells.append(GridCell(column, tile_key(address), stored, tile_url(address) if stored else ""))
        grid.rows.append(GridRow(year, cells))
    return grid
