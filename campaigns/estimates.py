"""Estimate what caching a campaign's not-cached points would take: tiles, bytes and time.

Every figure is an estimate. ``unique_tiles`` counts each tile once even when
several points share it, and it includes tiles another campaign may already
have stored, so it is an upper bound of the tiles a run produces. Bytes use
the mean size of stored tiles of each vis param, measured on up to
``settings.CACHE_ESTIMATE_SAMPLE_TILES`` files, or
``settings.CACHE_ESTIMATE_TILE_BYTES`` when storage has none. Time divides
the unique tiles by the tiles per second that recent runs stored, or by
``settings.CACHE_ESTIMATE_TILES_PER_SECOND`` when no run has measured it.
"""

from __future__ import annotations

import logging
import posixpath

from django.conf import settings
from django.db.models import F
from django.utils.translation import gettext as _

from campaigns.models import CachingRun, Campaign, Point
from campaigns.runs import CampaignNotFound, campaign_plan
from campaigns.tile_sets import stream_points
from tiles.grid import point_tiles
from tiles.storage import tile_storage

logger = logging.getLogger(__name__)

# Runs whose throughput the time estimate averages.
RECENT_RUNS = 10
# Folders a size sample may list before it gives up, per vis param.
SAMPLE_MAX_FOLDERS = 200


def sample_tile_bytes(layer: str, vis_param: str, limit: int) -> tuple[float | None, int]:
    """Return the mean size in bytes of up to ``limit`` stored tiles of a vis param, and how many were measured."""
    storage = tile_storage()
    folders = [posixpath.join(layer, vis_param)]
    sizes: list[int] = []
    listed = 0
    while folders and len(sizes) < limit and listed < SAMPLE_MAX_FOLDERS:
        folder = folders.pop()
        listed += 1
        try:
            subfolders, files = storage.listdir(folder)
        except (OSError, NotImplementedError):
            continue
        for name in files:
            if len(sizes) >= limit:
                break
            if name.endswith(".png") and not name.startswith("."):
                try:
                    sizes.append(storage.size(posixpath.join(folder, name)))
                except OSError:
                    continue
        folders.extend(posixpath.join(folder, name) for name in sorted(subfolders, reverse=True))
    if not sizes:
        return None, 0
    return sum(sizes) / len(sizes), len(sizes)


def recent_throughput() -> tuple[float | None, int]:
    """Return the tiles stored per second by the most recent ended runs that stored tiles, and how many runs."""
    runs = (
        CachingRun.objects.filter(ended_at__isnull=False, tiles_stored__gt=0, ended_at__gt=F("created_at"))
        .order_by("-ended_at")
        .values_list("tiles_stored", "created_at", "ended_at")[:RECENT_RUNS]
    )
    tiles = 0
    seconds = 0.0
    count = 0
    for stored, created_at, ended_at in runs:
        tiles += stored
        seconds += (ended_at - created_at).total_seconds()
        count += 1
    if not count or seconds <= 0:
        return None, 0
    return tiles / seconds, count


def estimate_campaign(campaign_id: str, preset: str | None = None) -> dict:
    """Estimate the tiles, bytes and seconds of caching a campaign's not-cached points, streaming them.

    Raises ``CampaignNotFound`` and ``InvalidCampaign`` (with an unknown preset too).
    """
    campaign = Campaign.objects.filter(pk=campaign_id).first()
    if campaign is None:
        raise CampaignNotFound(_("Campaign %(id)s not found.") % {"id": campaign_id})
    plan = campaign_plan(campaign, preset)
    zooms, buffer = plan.preset.zooms, plan.preset.buffer
    slices_per_cell = len(plan.years) * len(plan.vis_params) * plan.preset.period_slots()

    cells: set[tuple[int, int, int]] = set()
    points = 0
    total_tiles = 0
    for _point_id, lon, lat in stream_points(Point.objects.of_campaign(campaign_id).not_cached()):
        point_cells = point_tiles(lon, lat, zooms, buffer)
        cells.update(point_cells)
        total_tiles += len(point_cells) * slices_per_cell
        points += 1
    unique_tiles = len(cells) * slices_per_cell

    limit = settings.CACHE_ESTIMATE_SAMPLE_TILES
    default_bytes = settings.CACHE_ESTIMATE_TILE_BYTES
    unique_per_vis_param = len(cells) * len(plan.years) * plan.preset.period_slots()
    bytes_per_tile = {}
    expected_bytes = 0
    for vis_param in plan.vis_params:
        measured, sampled = sample_tile_bytes(plan.layer, vis_param, limit)
        size = measured if measured is not None else float(default_bytes)
        bytes_per_tile[vis_param] = {
            "bytes": round(size),
            "source": "sampled" if measured is not None else "default",
            "sampled_tiles": sampled,
        }
        expected_bytes += round(size * unique_per_vis_param)

    measured_rate, runs = recent_throughput()
    rate = measured_rate if measured_rate is not None else settings.CACHE_ESTIMATE_TILES_PER_SECOND
    return {
        "campaign_id": campaign.id,
        "layer": plan.layer,
        "preset": plan.preset.name,
        "years": list(plan.years),
        "vis_params": list(plan.vis_params),
        "points_to_cache": points,
        "tiles_per_point": plan.tiles_per_point(),
        "total_tiles": total_tiles,
        "unique_tiles": unique_tiles,
        "bytes_per_tile": bytes_per_tile,
        "expected_bytes": expected_bytes,
        "tiles_per_second": round(rate, 3),
        "throughput_source": "recent_runs" if measured_rate is not None else "default",
        "throughput_runs": runs,
        "expected_seconds": round(unique_tiles / rate, 1),
    }

