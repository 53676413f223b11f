"""Compile the message catalogs for tests that read Portuguese, when the compiled files are missing or old."""

from __future__ import annotations

import io
from pathlib import Path

from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "locale"


def catalogs() -> list[Path]:
    return sorted(LOCALE.glob("*/LC_MESSAGES/*.po"))


def ensure_compiled() -> None:
    """Run compilemessages when a ``.po`` file is newer than its ``.mo`` file, then reload Django's catalogs."""
    stale = [po for po in catalogs() if not po.with_suffix(".mo").exists()
             or po.with_suffix(".mo").stat().st_mtime < po.stat().st_mtime]
    if not stale:
        return
    call_command("compilemessages", locale=["pt_BR"], ignore_patterns=[".venv"], stdout=io.StringIO())
    from django.utils.translation.reloader import translation_file_changed

    # Django's autoreloader calls this when a .mo file changes; it drops every cached catalog.
    translation_file_changed(None, stale[0].with_suffix(".mo"))
