"""Insert validated positions as TVI points with ids ``{index}_{campaign}``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from django.db import transaction

from campaigns.models import Point

SAVE_CHUNK_SIZE = 2000
# Coordinates that agree to 1e-7 degrees (about 1 cm) count as the same place.
DUPLICATE_PRECISION = 10**7
POINT_INDEX = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class SaveResult:
    imported: int
    skipped: int
    first_id: str | None
    last_id: str | None


def point_id(index: int, campaign_id: str) -> str:
    return f"{index}_{campaign_id}"


def point_index(point_id_value: str, campaign_id: str) -> int | None:
    """Return N of an id ``N_{campaign}``, or None for ids of any other shape."""
    suffix = f"_{campaign_id}"
    if not point_id_value.endswith(suffix):
        return None
    prefix = point_id_value[: -len(suffix)]
    return int(prefix) if POINT_INDEX.fullmatch(prefix) else None


def coordinate_key(lon: float, lat: float) -> tuple[int, int]:
    return round(lon * DUPLICATE_PRECISION), round(lat * DUPLICATE_PRECISION)


def scan_existing_points(campaign_id: str, using: str, *, with_coordinates: bool) -> tuple[int, set[tuple[int, int]]]:
    """Return the highest numeric index among the campaign's point ids and, if asked, their coordinate keys.

    Rows are streamed in chunks, so a campaign of 100,000 points is never loaded at once.
    """
    highest = 0
    keys: set[tuple[int, int]] = set()
    # order_by() drops the model's default ordering, which this scan does not need.
    points = Point.objects.using(using).filter(campaign_id=campaign_id).order_by()
    if with_coordinates:
        rows: Iterator[tuple[Any, ...]] = points.values_list("id", "lon", "lat").iterator(chunk_size=SAVE_CHUNK_SIZE)
    else:
        rows = points.values_list("id").iterator(chunk_size=SAVE_CHUNK_SIZE)
    for row in rows:
        index = point_index(row[0], campaign_id)
        if index is not None and index > highest:
            highest = index
        if with_coordinates and row[1] is not None and row[2] is not None:
            keys.add(coordinate_key(row[1], row[2]))
    return highest, keys


def save_points(
    campaign_id: str,
    positions: Iterable[tuple[float, float]],
    *,
    skip_duplicates: bool = False,
    using: str | None = None,
    chunk_size: int = SAVE_CHUNK_SIZE,
) -> SaveResult:
    """Insert validated (lon, lat) positions as points of a campaign, numbering ids after the existing ones.

    Ids are ``{index}_{campaign}`` from the highest existing numeric index plus
    one, and ids of other shapes do not count. With ``skip_duplicates`` a position
    whose rounded coordinates already exist in the campaign (or earlier in
    ``positions``) is skipped. ``cached`` is left NULL, which TVI reads as not
    cached. Runs in one transaction on ``using`` (the points' database by
    default): an error leaves the campaign as it was.
    """
    alias = using or Point.objects.db
    imported = skipped = 0
    first_id: str | None = None
    last_id: str | None = None
    with transaction.atomic(using=alias):
        # NOTE: two imports into the same campaign at once may compute the same
        # next index on databases without a write lock at BEGIN. The second
        # then fails on the primary key and rolls back instead of mixing ids.
        highest, existing = scan_existing_points(campaign_id, alias, with_coordinates=skip_duplicates)
        next_index = highest + 1
        chunk: list[Point] = []
        for lon, lat in positions:
            if skip_duplicates:
                key = coordinate_key(lon, lat)
                if key in existing:
                    skipped += 1
                    continue
                existing.add(key)
            new_id = point_id(next_index, campaign_id)
            next_index += 1
            first_id = first_id or new_id
            last_id = new_id
            chunk.append(Point(id=new_id, campaign_id=campaign_id, lon=lon, lat=lat))
            if len(chunk) >= chunk_size:
                Point.objects.using(alias).bulk_create(chunk)
                imported += len(chunk)
                chunk = []
        if chunk:
            Point.objects.using(alias).bulk_create(chunk)
            imported += len(chunk)
    return SaveResult(imported=imported, skipped=skipped, first_id=first_id, last_id=last_id)
