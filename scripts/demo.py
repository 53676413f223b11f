"""Cache a real Landsat campaign end to end on the embedded default, as an operator would.

Steps: prepare the sample scene and its catalog, migrate, import about 50
points over the scene, start a Celery worker and the web server, start
caching through the REST API, follow the progress until the run ends, print
the final status and write a contact sheet of cached tiles.

Run it with ``make demo``; everything it writes stays under ``var/``.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cachecampaign.settings")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import translation  # noqa: E402
from django.utils.translation import gettext as _  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from tqdm import tqdm  # noqa: E402

import sample_data  # noqa: E402
from campaigns.models import CachingRun, Campaign, Point  # noqa: E402
from campaigns.runs import campaign_plan  # noqa: E402
from tiles.render import is_empty_tile  # noqa: E402
from tiles.storage import read_tile, tile_key, tile_storage  # noqa: E402

CAMPAIGN_ID = "demo_landsat"
VIS_PARAM = "landsat-toa-true"
PORT = int(os.environ.get("DEMO_PORT", "8083"))
RUN_TIMEOUT_SECONDS = 900
VAR_DIR = Path(settings.VAR_DIR)


def say(message: str) -> None:
    print(message, flush=True)


def free_port(preferred: int) -> int:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reset_campaign() -> None:
    """Forget an earlier demo run: its points, runs and tiles, so this run caches for real."""
    campaign = Campaign.objects.filter(pk=CAMPAIGN_ID).first()
    if campaign is None:
        return
    plan = campaign_plan(campaign)
    storage = tile_storage()
    for point in Point.objects.of_campaign(CAMPAIGN_ID):
        for address in plan.addresses_for(point.lon, point.lat):
            storage.delete(tile_key(address))
    Point.objects.of_campaign(CAMPAIGN_ID).delete()
    CachingRun.objects.of_campaign(CAMPAIGN_ID).delete()
    campaign.delete()


def start_process(command: list[str], log_name: str) -> subprocess.Popen:
    log = open(VAR_DIR / log_name, "ab")
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.3)
    raise SystemExit(_("The web server did not respond at %(url)s within %(seconds)d s.") % {"url": url, "seconds": timeout})


def follow_run(base_url: str, headers: dict) -> dict:
    status_url = f"{base_url}/api/cache/campaign/{CAMPAIGN_ID}/status"
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    with tqdm(total=100.0, unit="%", bar_format="{l_bar}{bar}| {n:.2f}/{total:.0f} % [{elapsed}]") as bar:
        while time.monotonic() < deadline:
            body = requests.get(status_url, headers=headers, timeout=10).json()
            data = body["data"]
            bar.n = data["cache_percentage"]
            bar.set_description(_("%(cached)d of %(total)d points") % {
                "cached": data["cached_points"], "total": data["total_points"]})
            bar.refresh()
            if not data["caching_in_progress"]:
                return body
            time.sleep(0.5)
    raise SystemExit(_("The run did not end within %(seconds)d s.") % {"seconds": RUN_TIMEOUT_SECONDS})


def write_contact_sheet(path: Path, columns: int = 6, count: int = 24) -> tuple[int, int]:
    """Compose up to ``count`` cached tiles into one PNG; return (tiles shown, non-blank tiles)."""
    campaign = Campaign.objects.get(pk=CAMPAIGN_ID)
    plan = campaign_plan(campaign)
    tiles: list[tuple[str, Image.Image, bool]] = []
    points = sorted(Point.objects.of_campaign(CAMPAIGN_ID), key=lambda point: int(point.id.split("_", 1)[0]))
    for point in points:
        address = next(a for a in plan.addresses_for(point.lon, point.lat) if a.z == 14)
        data = read_tile(address) or b""
        tiles.append((point.id, Image.open(io.BytesIO(data)).convert("RGBA"), not is_empty_tile(data)))
        if len(tiles) >= count:
            break
    rows = (len(tiles) + columns - 1) // columns
    label_height = 16
    sheet = Image.new("RGBA", (columns * 256, rows * (256 + label_height)), (255, 255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, (point_id, image, _visible) in enumerate(tiles):
        left = (index % columns) * 256
        top = (index // columns) * (256 + label_height)
        sheet.alpha_composite(image, (left, top + label_height))
        draw.text((left + 4, top + 2), f"{point_id} z14", fill=(0, 0, 0, 255))
    sheet.save(path)
    return len(tiles), sum(1 for _point, _image, visible in tiles if visible)


def main() -> int:
    translation.activate(settings.LANGUAGE_CODE)
    began = time.monotonic()
    say(_("Preparing the sample Landsat scene..."))
    sample = sample_data.prepare(VAR_DIR)
    os.environ["RASTER_CATALOG_FILE"] = str(sample.catalog)

    call_command("migrate", verbosity=0)
    reset_campaign()
    call_command(
        "import_points", CAMPAIGN_ID, str(sample.points),
        initial_year=2020, final_year=2020, vis_params=VIS_PARAM,
    )
    user, _created = User.objects.get_or_create(username="demo", defaults={"is_staff": True})
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    token, _created = Token.objects.get_or_create(user=user)
    headers = {"Authorization": f"Token {token.key}"}

    port = free_port(PORT)
    base_url = f"http://127.0.0.1:{port}"
    python = sys.executable
    worker = start_process(
        [python, "-m", "celery", "-A", "cachecampaign", "worker", "--loglevel", "INFO", "--concurrency", "2",
         "--hostname", "demo@localhost", "--without-gossip", "--without-mingle"],
        "demo-worker.log",
    )
    server = start_process([python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], "demo-web.log")
    try:
        wait_for_http(f"{base_url}/api/schema/")
        say(_("Web server at %(url)s; worker log in %(log)s") % {"url": base_url, "log": VAR_DIR / "demo-worker.log"})
        response = requests.post(
            f"{base_url}/api/cache/campaign/start", json={"campaign_id": CAMPAIGN_ID, "batch_size": 5},
            headers=headers, timeout=30,
        )
        say(json.dumps(response.json(), indent=2, ensure_ascii=False))
        if response.status_code != 200:
            return 1
        final = follow_run(base_url, headers)
    finally:
        for process in (server, worker):
            process.terminate()
        for process in (server, worker):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    say(_("Final status:"))
    say(json.dumps(final, indent=2, ensure_ascii=False))
    sheet = VAR_DIR / "demo-contact-sheet.png"
    shown, visible = write_contact_sheet(sheet)
    run = CachingRun.objects.of_campaign(CAMPAIGN_ID).first()
    say(_("Contact sheet: %(path)s (%(shown)d tiles, %(visible)d with imagery)") % {
        "path": sheet, "shown": shown, "visible": visible})
    say(_("%(points)d points, %(stored)d tiles stored, %(skipped)d shared tiles found stored, in %(seconds).1f s") % {
        "points": run.succeeded_points, "stored": run.tiles_stored, "skipped": run.tiles_skipped,
        "seconds": time.monotonic() - began})
    return 0 if final["data"]["cache_percentage"] == 100.0 else 1


if __name__ == "__main__":
    sys.exit(main())
