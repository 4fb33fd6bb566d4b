"""Issue 32, the page (items 1-5) in a real browser: Playwright drives Debian's Chromium.

A late answer never covers a newer one, a long explanation shows what it computes and for how
long, the "API docs" link opens a page, the stain panel's text and caption, and the tile map's
legend (grey tiles counted by reason). The server runs without a stain normalizer (the panel's
text case) and can hold back its next ``/api/predict`` answer (a slow explanation, made
deterministic). Skipped, with the reason, when Playwright or Chromium is missing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_support import chromium_page, chromium_path, served
from conftest import synthetic_patch

pytestmark = pytest.mark.browser

ERRORS: list[str] = []
#: seconds to hold back the next /api/predict (then 0), and set when that request has ended
HOLD: dict = {"seconds": 0.0, "ended": threading.Event()}


def _held(app):
    """``app`` with the next ``/api/predict`` held back ``HOLD["seconds"]`` (a slow answer)."""

    async def wrapper(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/api/predict" and HOLD["seconds"]:
            seconds, HOLD["seconds"] = HOLD["seconds"], 0.0
            try:
                await asyncio.sleep(seconds)
                await app(scope, receive, send)
            finally:
                HOLD["ended"].set()
            return
        await app(scope, receive, send)

    return wrapper


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("answers")
    rng = np.random.default_rng(7)
    patches = []
    for i in range(6):
        patches.append(folder / f"patch_{i}.png")
        Image.fromarray(synthetic_patch(rng, i % 2)).save(patches[-1])
    half = synthetic_patch(rng, 1, size=(150, 250))
    half[:, 150:] = 245  # glass on the right: 'background' tiles
    Image.fromarray(half).save(folder / "half_glass.png")
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.random((150, 250)), 2.0)
    t = (field - field.min()) / np.ptp(field)
    leaf, sky = np.array([60, 150, 70]), np.array([70, 130, 200])
    photo = np.round(leaf + t[..., None] * (sky - leaf)).astype(np.uint8)
    Image.fromarray(photo).save(folder / "garden_photo.png")
    return {
        "patches": patches,
        "half": [folder / "half_glass.png"],
        "photo": [folder / "garden_photo.png"],
    }


@pytest.fixture(scope="module")
def server():
    if chromium_path() is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set BREASTPATH_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from breastpath.inference.predictor import Predictor
    from breastpath.serve.app import create_app

    app = _held(create_app(Predictor.from_checkpoint("default")))  # no stain normalizer
    with served(app, log_level="critical") as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with chromium_page(errors=ERRORS, viewport={"width": 1100, "height": 900}) as page:
        page.goto(server + "/")
        page.wait_for_function(
            "() => document.getElementById('model').textContent.includes('threshold')"
        )
        yield page


def _elapsed(status: str) -> float:
    found = re.search(r"(\d+\.\d) s$", status)
    assert found, status
    return float(found.group(1))


def test_a_late_answer_never_covers_a_newer_one(page, files):
    """Item 1 (and 5: what is computed, and for how long): a slow explanation of one image,
    then a batch 0.3 s later; when the slow answer ends, the batch and its first file stay."""
    HOLD["ended"].clear()
    HOLD["seconds"] = 3.0
    page.set_input_files("#file", str(files["half"][0]))
    time.sleep(0.3)
    status = page.text_content("#status")
    assert status.startswith("half_glass.png: scoring it and computing its explanation")
    assert "Grad-CAM" in status and page.is_visible("#progress")
    first = _elapsed(status)
    time.sleep(0.6)
    assert _elapsed(page.text_content("#status")) > first  # the time counts on

    page.set_input_files("#file", [str(p) for p in files["patches"]])
    page.wait_for_selector("#batch:not([hidden])")
    assert len(page.query_selector_all("#results tbody tr")) == 6
    page.wait_for_function(
        "() => document.getElementById('detail').textContent.includes('patch_0.png')"
    )
    assert HOLD["ended"].wait(15), "the held request did not end"
    time.sleep(1.0)  # time for a late answer to land, were it not dropped
    assert "patch_0.png" in page.text_content("#detail")
    assert "half_glass" not in page.text_content("#detail")
    assert page.is_visible("#batch") and page.is_hidden("#tiles-figure")
    assert page.text_content("#messages") == ""  # the aborted request says nothing either
    assert page.text_content("#status") == "" and page.is_hidden("#progress")


def test_tile_legend_stain_text_and_captions(page, files):
    """Items 3 and 4: the legend names what is grey and why; the stain text says 'none'
    once; every caption starts on the same line."""
    page.set_input_files("#file", str(files["half"][0]))
    page.wait_for_function(
        "() => document.getElementById('detail').textContent.includes('half_glass.png')"
    )
    page.wait_for_selector("#tiles-figure:not([hidden])")
    legend = page.text_content("#tiles-caption")
    assert legend.startswith("Tile map: 3x5 tiles; coloured = assessed (")
    assert re.search(r"grey = not assessed \((\d+): \1 background \(glass, lumen, fat\)\)", legend)
    stain = page.text_content("#stain-none")
    assert stain.startswith("No stain-normalized view: this checkpoint carries no fitted")
    assert "none:" not in stain
    for width in (1100, 640):
        page.set_viewport_size({"width": width, "height": 900})
        boxes = page.eval_on_selector_all(
            "figure:not([hidden])",
            "fs => fs.map(f => [f.getBoundingClientRect().top,"
            " f.querySelector('figcaption').getBoundingClientRect().top])",
        )
        rows: dict[float, set[float]] = {}
        for top, caption in boxes:
            rows.setdefault(round(top), set()).add(round(caption))
        assert all(len(captions) == 1 for captions in rows.values()), (width, boxes)
    page.set_viewport_size({"width": 1100, "height": 900})


def test_a_photo_is_grey_all_over_and_says_why(page, files):
    page.set_input_files("#file", str(files["photo"][0]))
    page.wait_for_function(
        "() => document.getElementById('detail').textContent.includes('garden_photo.png')"
    )
    assert page.text_content("#label").startswith("not assessed: not H&E")
    assert "none scored: the image as a whole is not assessed" in page.text_content("#tile-detail")
    assert "grey = not assessed: all 15" in page.text_content("#tiles-caption")


def test_the_api_docs_link_opens_a_page(page, server):
    """Item 2: the header's link went to a 404."""
    page.goto(server + "/")
    with page.expect_navigation() as navigation:
        page.click("header nav >> text=API docs")
    assert navigation.value.status == 200 and page.url == server + "/docs"
    assert page.text_content("h1").startswith("API: breastpath")
    assert "POST /api/predict" in page.text_content("body")
    assert not ERRORS, ERRORS
