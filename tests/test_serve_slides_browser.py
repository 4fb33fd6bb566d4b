"""The slide viewer in a real browser: Playwright drives Debian's Chromium against a live
``breastpath serve --slides`` app over a generated slide scored by the bundled model.

Opens the slide list, follows the link to the viewer, sees Deep Zoom tiles arrive (HTTP 200)
and paint non-blank pixels, zooms in and sees deeper levels fetched, toggles the probability
overlay (drawn tiles to 0 and back, pixels change), moves the threshold slider and sees fewer
overlay tiles drawn, hovers a tile and reads its probability, clicks the top region and sees
the viewport move there; nothing is fetched from another host and the page logs no error.
Skipped, with the reason, when Playwright or Chromium is missing. With
``BREASTPATH_SCREENSHOTS=1`` it saves ``docs/slide-viewer.png``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_support import chromium_page, chromium_path, served
from viewer_cohort import make_viewer_cohort

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, predictor):
    if chromium_path() is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set BREASTPATH_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from breastpath.serve.app import create_app
    from breastpath.slide.catalog import SlideCatalog

    _, out = make_viewer_cohort(tmp_path_factory.mktemp("viewer-browser"))
    with served(create_app(predictor, slides=SlideCatalog(out))) as url:
        yield url


@pytest.fixture(scope="module")
def browser_page(server):
    log: dict[str, list] = {"requests": [], "tiles": [], "errors": []}
    with chromium_page(errors=log["errors"], viewport={"width": 1200, "height": 800}) as page:
        page.on("request", lambda request: log["requests"].append(request.url))
        page.on(
            "response",
            lambda r: log["tiles"].append((r.url, r.status)) if "_files/" in r.url else None,
        )
        yield page, log


def _screenshot(page, selector: str) -> np.ndarray:
    png = page.locator(selector).screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def _drawn(page) -> int:
    return int(page.text_content("#drawn") or "0")


def _settle(page) -> None:
    """Wait until the viewer stops animating and every tile in view has loaded."""
    page.wait_for_function(
        """() => { const v = window.breastpathViewer.viewer;
                   return v.world.getItemCount() > 0 && v.world.getItemAt(0).getFullyLoaded()
                          && Math.abs(v.viewport.getZoom(true) - v.viewport.getZoom()) < 1e-6; }"""
    )
    page.wait_for_timeout(150)


def test_list_page_then_viewer_with_overlays(server, browser_page):
    page, log = browser_page
    page.goto(server + "/slides")
    page.wait_for_selector(".card[data-id=scored] h2 a")
    assert page.locator(".card").count() == 2
    broken = page.text_content(".card[data-id=broken]")
    assert "cannot be opened" in broken and page.locator(".card.error").count() == 1
    scored = page.text_content(".card[data-id=scored]")
    assert "2,400 × 1,600" in scored and "0.250 µm/px" in scored
    assert "IDC present" in scored or "no IDC found" in scored
    page.wait_for_function(
        "() => document.querySelector('.card[data-id=scored] img').naturalWidth > 0"
    )

    page.click(".card[data-id=scored] h2 a")
    page.wait_for_url("**/slides/scored")
    _settle(page)
    assert log["tiles"] and all(status == 200 for _, status in log["tiles"])
    pixels = _screenshot(page, "#viewer")
    assert pixels.std() > 10  # the slide is painted, not a blank viewer
    page.wait_for_function("() => Number(document.getElementById('drawn').textContent) > 0")
    verdict = page.text_content("#verdict")
    assert verdict in ("IDC present", "no IDC found")
    assert "assessed tiles" in page.text_content("#verdict-text")
    assert page.get_attribute("#csv-link", "href").endswith("/api/slides/scored/tiles.csv")

    # the overlay off and on again, without reloading the page
    drawn = _drawn(page)
    with_overlay = _screenshot(page, "#viewer")
    page.uncheck("#show-prob")
    assert _drawn(page) == 0
    without = _screenshot(page, "#viewer")
    assert np.abs(with_overlay - without).mean() > 1.0
    page.check("#show-skipped")
    assert _drawn(page) > 0  # the skipped (mask) tiles
    page.uncheck("#show-skipped")
    page.check("#show-prob")
    assert _drawn(page) == drawn

    # the threshold slider hides the tiles below it
    page.eval_on_selector(
        "#threshold", "e => { e.value = 30; e.dispatchEvent(new Event('input')); }"
    )
    fewer = _drawn(page)
    assert 0 < fewer < drawn, (fewer, drawn)
    assert page.text_content("#threshold-value") == "0.30"

    # hovering a scored tile shows its probability and position
    box = page.evaluate(
        """() => { const s = window.breastpathViewer.state, v = window.breastpathViewer.viewer;
                   const t = s.tiles.find((t) => t.probability !== null);
                   const p = v.viewport.imageToViewerElementCoordinates(
                       new OpenSeadragon.Point(t.x + t.size / 2, t.y + t.size / 2));
                   const r = v.element.getBoundingClientRect();
                   return {x: r.left + p.x, y: r.top + p.y}; }"""
    )
    page.mouse.move(box["x"], box["y"])
    info = page.text_content("#tile-info")
    assert info.startswith("probability ") and "level-0 px" in info

    # zooming in fetches deeper Deep Zoom levels
    deepest = max(int(url.split("_files/")[1].split("/")[0]) for url, _ in log["tiles"])
    page.evaluate("() => window.breastpathViewer.viewer.viewport.zoomTo(8)")
    _settle(page)
    deeper = max(int(url.split("_files/")[1].split("/")[0]) for url, _ in log["tiles"])
    assert deeper > deepest
    page.evaluate("() => window.breastpathViewer.viewer.viewport.goHome(true)")
    _settle(page)

    # the top region: clicking it flies there
    first = page.locator("#regions li").first
    assert "called tile" in first.text_content()
    before = page.evaluate(
        "() => { const v = window.breastpathViewer.viewer.viewport;"
        " const c = v.getCenter(); return [c.x, c.y, v.getZoom()]; }"
    )
    first.click()
    _settle(page)
    after = page.evaluate(
        "() => { const v = window.breastpathViewer.viewer.viewport;"
        " const c = v.getCenter(); return [c.x, c.y, v.getZoom()]; }"
    )
    assert after[2] > before[2] * 1.1  # zoomed in on it (the region and a margin fill the view)
    bbox = [int(v) for v in first.get_attribute("data-bbox").strip("[]").split(",")]
    centre = page.evaluate(
        """() => { const v = window.breastpathViewer.viewer.viewport;
                   const c = v.viewportToImageCoordinates(v.getCenter()); return [c.x, c.y]; }"""
    )
    assert abs(centre[0] - (bbox[0] + bbox[2]) / 2) < 2
    assert abs(centre[1] - (bbox[1] + bbox[3]) / 2) < 2

    if os.environ.get("BREASTPATH_SCREENSHOTS") == "1":
        page.evaluate("() => window.breastpathViewer.viewer.viewport.goHome(true)")
        _settle(page)
        page.screenshot(path=str(REPO / "docs" / "slide-viewer.png"))

    assert all(url.startswith(server) or url.startswith("data:") for url in log["requests"])
    assert log["errors"] == [], log["errors"]
