"""Analysis from the page in a real browser (Playwright + Debian's Chromium): on a folder of two
generated slides, not analysed, served with a results folder, the viewer's "Analyse" button
starts the job, a progress bar shows it, and the probability overlay appears without reloading
the page; on the slide list, a card's "Analyse" button turns the card into the verdict.
Skipped, with the reason, when Playwright or Chromium is missing."""

from __future__ import annotations

import time

import pytest

from browser_support import chromium_page, chromium_path, served
from test_serve_slide_analyses import _slides

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory, predictor):
    if chromium_path() is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set BREASTPATH_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from breastpath.serve.analyses import SlideAnalyses
    from breastpath.serve.app import create_app
    from breastpath.slide.catalog import SlideCatalog

    root = tmp_path_factory.mktemp("analyse-browser")
    catalog = SlideCatalog(_slides(root / "slides", ("one", "two")))
    analyses = SlideAnalyses(catalog, predictor, results=root / "results")
    run = analyses._run

    def slower(job):  # long enough for the page to show the job running
        time.sleep(1.0)
        run(job)

    analyses._run = slower
    with served(create_app(predictor, slides=catalog, analyses=analyses)) as url:
        yield url


@pytest.fixture()
def page(server):
    errors: list[str] = []
    viewport = {"width": 1200, "height": 800}
    with chromium_page(errors=errors, timeout_ms=60_000, viewport=viewport) as tab:
        yield tab
    assert errors == [], errors


def test_analyse_in_the_viewer_shows_progress_then_the_overlay(server, page):
    page.goto(server + "/slides/one")
    page.wait_for_selector("#analyse", state="visible")
    assert page.text_content("#verdict") == "not analysed"
    assert page.is_hidden("#overlay-controls")
    page.click("#analyse")
    page.wait_for_selector("#job-progress", state="visible")
    assert page.is_disabled("#analyse")
    page.wait_for_selector("#overlay-controls", state="visible")
    page.wait_for_function("() => Number(document.getElementById('drawn').textContent) > 0")
    assert page.text_content("#verdict") in ("IDC present", "no IDC found")
    assert page.text_content("#job-text").startswith("done in ")
    assert page.evaluate(
        "() => { const p = document.getElementById('job-progress');"
        " return p.max > 0 && p.value === p.max; }"
    )  # full
    assert page.locator("#regions li").count() >= 1


def test_analyse_on_the_list_page(server, page):
    page.goto(server + "/slides")
    button = page.locator(".card[data-id=two] button.analyse")
    button.wait_for()
    assert page.locator(".card[data-id=one] button.analyse").count() == 0  # analysed above
    button.click()
    page.wait_for_selector(".card[data-id=two] progress.job-progress", state="visible")
    page.wait_for_selector(".card[data-id=two] .verdict-label")
    text = page.text_content(".card[data-id=two]")
    assert "IDC present" in text or "no IDC found" in text
    assert page.locator(".card[data-id=two] button.analyse").count() == 0
