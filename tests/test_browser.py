"""The admin in a real browser: start caching from the Portuguese admin, watch it live, look at a point's tiles.

Drives Debian's headless Chromium (``/usr/bin/chromium``) with Playwright
against pytest-django's live server and the session's Celery worker.
Screenshots go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from campaigns.models import CachingRun, Campaign, Point, RunState
from tests.conftest import BOTH_DATABASES, wait_for_run_end
from tests.translations import ensure_compiled

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True, databases=BOTH_DATABASES),
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "s3cret-pass"
# Milliseconds the browser waits for the run to reach 100 %.
RUN_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's package with: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed; pip install playwright")
    ensure_compiled()
    ARTIFACTS.mkdir(exist_ok=True)
    # Playwright's sync API keeps an event loop on this thread, which Django's
    # guard against ORM calls from async code takes for an async context, up
    # to the database flush after each test.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="pt-BR", viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def screenshot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_start_watch_and_inspect_tiles(celery_worker, live_server, page, staff_user, make_campaign, control_file):
    staff_user.is_superuser = True
    staff_user.set_password(PASSWORD)
    staff_user.save()
    make_campaign("navegador", points=3, spacing=0.5, final_year=2021,
                  vis_params=["landsat-tvi-true", "landsat-tvi-false"])
    # Slow tiles keep the run going long enough to watch it on the change page.
    control_file("delay.txt", "0.15")

    page.goto(f"{live_server.url}/admin/login/?next=/admin/campaigns/campaign/")
    page.fill("#id_username", staff_user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    assert page.locator("html").get_attribute("lang") == "pt-br"
    assert "Campanhas" in page.content()
    screenshot(page, "01-campaign-list")

    page.check('input[name="_selected_action"][value="navegador"]')
    page.select_option('select[name="action"]', "start_caching")
    page.click('button[name="index"]')
    page.wait_for_selector('input[name="batch_size"]')
    screenshot(page, "02-start-caching-form")
    page.fill('input[name="batch_size"]', "2")
    page.click('input[type=submit][value="Iniciar cache"]')
    page.wait_for_selector("ul.messagelist")
    assert "Campanha navegador: cache iniciado, 3 pontos a armazenar." in page.inner_text("ul.messagelist")
    screenshot(page, "03-caching-started")

    page.goto(f"{live_server.url}/admin/campaigns/campaign/navegador/change/")
    page.evaluate("window.pageLoadedOnce = true")
    first_reading = page.inner_text('[data-field="percentage_display"]').strip()
    screenshot(page, "04-progress-running")
    page.wait_for_function(
        "document.querySelector('[data-field=percentage_display]').textContent.trim() === '100,00 %'",
        timeout=RUN_TIMEOUT_MS,
    )
    assert first_reading != "100,00 %", "the run ended before the page could watch it"
    # The panel changed in place: the page was not reloaded.
    assert page.evaluate("window.pageLoadedOnce === true")
    page.wait_for_function(
        "document.getElementById('campaign-progress').dataset.inProgress === 'false'", timeout=RUN_TIMEOUT_MS
    )
    assert page.inner_text('[data-field="points_display"]').strip() == "3 de 3 pontos em cache"
    assert page.eval_on_selector('[data-field="bar"]', "bar => bar.style.width") == "100%"
    screenshot(page, "05-progress-complete")

    run = wait_for_run_end("navegador")
    assert run.state == RunState.COMPLETED
    assert Campaign.objects.get(pk="navegador").cache_percentage == 100.0

    point = Point.objects.get(pk="1_navegador")
    page.goto(f"{live_server.url}/admin/campaigns/point/{point.pk}/change/?zoom=13")
    page.wait_for_selector("#tile-grid img")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#tile-grid img')).every(img => img.complete && img.naturalWidth > 0)",
        timeout=30_000,
    )
    widths = page.eval_on_selector_all("#tile-grid img", "images => images.map(img => img.naturalWidth)")
    # 2 years x 2 vis params x the DRY period, all stored.
    assert widths == [256, 256, 256, 256]
    assert page.locator("#tile-grid .cc-tile-missing").count() == 0
    assert "Tiles em cache" in page.inner_text("#tile-grid")
    screenshot(page, "06-point-tile-grid")

    page.select_option("#tile-grid-zoom", "14")
    page.wait_for_url("**zoom=14**")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#tile-grid img')).every(img => img.complete && img.naturalWidth > 0)",
        timeout=30_000,
    )
    assert page.eval_on_selector_all("#tile-grid img", "images => images.length") == 4
    assert CachingRun.objects.filter(campaign_id="navegador").count() == 1
    assert os.path.exists(ARTIFACTS / "06-point-tile-grid.png")
