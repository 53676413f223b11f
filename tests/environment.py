"""Pytest plugin loaded before Django: one scratch folder per test session.

The database file, the filesystem broker, stored tiles and raster catalogs
of a test session live in one temporary folder, shared through environment
variables with the worker processes the tests start.
"""

import os
import tempfile

if "CACHECAMPAIGN_VAR_DIR" not in os.environ:
    os.environ["CACHECAMPAIGN_VAR_DIR"] = tempfile.mkdtemp(prefix="cachecampaign-test-")
os.environ.setdefault("DJANGO_LANGUAGE_CODE", "en")

# Unless a test run names its own, every layer uses the counting test source,
# which logs each produced tile to a file so tests can count production across
# worker processes.
_var = os.environ["CACHECAMPAIGN_VAR_DIR"]
if "TILE_SOURCES_FILE" not in os.environ:
    import json

    _sources_file = os.path.join(_var, "tile-sources.json")
    _config = {
        "class": "tests.fakesources.CountingSource",
        "log": os.path.join(_var, "tiles-produced.log"),
        "control_dir": _var,
    }
    with open(_sources_file, "w") as _handle:
        json.dump({"landsat": _config, "sentinel": _config}, _handle)
    os.environ["TILE_SOURCES_FILE"] = _sources_file
