"""Read the per-layer tile-source configuration from a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

PATH_KEYS = ("catalog",)


def load_tile_sources(path: Path) -> dict[str, dict]:
    """Return ``{layer: config}`` from a JSON object; relative paths resolve against the file's folder."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImproperlyConfigured(f"TILE_SOURCES_FILE {path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise ImproperlyConfigured(f"TILE_SOURCES_FILE {path} is not valid JSON: {error}.") from None
    if not isinstance(data, dict) or not all(isinstance(value, dict) for value in data.values()):
        raise ImproperlyConfigured(
            f'TILE_SOURCES_FILE {path} must hold an object of layers, such as {{"landsat": {{"kind": "raster"}}}}.'
        )
    for layer, config in data.items():
        if "kind" not in config and "class" not in config:
            raise ImproperlyConfigured(f"TILE_SOURCES_FILE {path}: layer {layer!r} has no 'kind'; use raster or xyz.")
        for key in PATH_KEYS:
            if key in config and not Path(config[key]).is_absolute():
                config[key] = str((path.parent / config[key]).resolve())
    return data
