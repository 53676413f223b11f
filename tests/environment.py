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
