"""The tile endpoint: stored tiles on a hit, produce-store-return on a miss.

``GET /api/layers/{layer}/{x}/{y}/{z}?period=&year=&month=&visparam=`` with
x, y and z in that order, as TVI requests them. Every value is validated
before it reaches ``tile_key``, so no request can name a path of its own.
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET

from tiles.address import TileAddress
from tiles.errors import InvalidTileRequest, SourceError, SourceTimeout, StorageError
from tiles.seeding import seed_tiles
from tiles.storage import read_tile, tile_key
from tiles.visparams import DEFAULT_VIS_PARAMS

logger = logging.getLogger(__name__)

ALLOWED_QUERY = {"period", "year", "month", "visparam"}


def _error(status: int, reason: str, message: str) -> JsonResponse:
    response = JsonResponse({"status": "error", "message": message, "code": reason}, status=status)
    response["Cache-Control"] = "no-store"
    response["X-Error-Reason"] = reason
    return response


def _tile_response(request: HttpRequest, data: bytes, cache_state: str) -> HttpResponse:
    etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(data, content_type="image/png")
    response["ETag"] = etag
    response["X-Cache"] = cache_state
    patch_cache_control(response, public=True, max_age=settings.TILE_HTTP_MAX_AGE)
    return response


def parse_address(layer: str, x: str, y: str, z: str, query) -> TileAddress:
    unknown = sorted(set(query) - ALLOWED_QUERY)
    if unknown:
        raise InvalidTileRequest(
            f"Unknown query parameter {unknown[0]!r}; use {', '.join(sorted(ALLOWED_QUERY))}."
        )
    year = query.get("year")
    if year in (None, ""):
        raise InvalidTileRequest("Missing year; add ?year=YYYY.")
    vis_param = query.get("visparam") or (DEFAULT_VIS_PARAMS.get(layer, ("",))[0])
    return TileAddress.validated(
        layer=layer,
        vis_param=vis_param,
        period=query.get("period") or "DRY",
        year=year,
        month=query.get("month"),
        z=z,
        x=x,
        y=y,
    )


@require_GET
def tile(request: HttpRequest, layer: str, x: str, y: str, z: str) -> HttpResponse:
    try:
        address = parse_address(layer, x, y, z, request.GET)
    except InvalidTileRequest as error:
        return _error(400, "invalid_request", str(error))

    try:
        data = read_tile(address)
    except StorageError as error:
        logger.error("Tile %s: %s", tile_key(address), error)
        return _error(503, "storage_unavailable", str(error))
    if data is not None:
        return _tile_response(request, data, "HIT")

    if not settings.TILE_RENDER_ON_MISS:
        return _error(404, "not_cached", f"Tile {tile_key(address)} is not cached.")
    outcome = seed_tiles([address])
    if outcome.failed:
        key, message = outcome.errors[0]
        return _error(*_failure_status(outcome.first_error), f"Producing tile {key} failed: {message}")
    try:
        data = read_tile(address)
    except StorageError as error:
        return _error(503, "storage_unavailable", str(error))
    if data is None:
        return _error(503, "storage_unavailable", f"Tile {tile_key(address)} was produced but cannot be read back.")
    return _tile_response(request, data, "MISS")


def _failure_status(error: Exception | None) -> tuple[int, str]:
    if isinstance(error, SourceTimeout):
        return 504, "source_timeout"
    if isinstance(error, StorageError):
        return 503, "storage_unavailable"
    if isinstance(error, SourceError) and error.transient:
        return 503, "source_unavailable"
    return 502, "source_failed"
