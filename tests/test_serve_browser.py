"""The page in a real browser: Playwright drives Debian's Chromium against a live server.

Loads the page, uploads a real IDC patch, sees the label, the probability, the Grad-CAM overlay
and the stain-normalized view; then uploads a batch with a rejected file, reads the table and the
CSV download, checks that nothing was fetched from another host, and saves
``docs/screenshot.png``. Skipped, with the reason, when Playwright or Chromium is missing.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_support import chromium_page, chromium_path, served
from conftest import SHARED_DATA, synthetic_patch

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
REQUESTS: list[str] = []  # every URL the page asked for
ERRORS: list[str] = []  # console errors and uncaught exceptions of the page


@pytest.fixture(scope="module")
def real_files(tmp_path_factory) -> dict[str, list[Path]]:
    """Real IDC patches and a BreakHis image when the shared data is there, else generated."""
    patches = sorted((SHARED_DATA / "idc").glob("*/1/*.png"))[:200:40]
    breakhis = sorted((SHARED_DATA / "breakhis").rglob("*.png"))[:1]
    if patches:
        return {"patches": patches, "large": breakhis, "real": [Path("yes")]}
    folder = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(0)
    made = []
    for i in range(3):
        made.append(folder / f"generated_{i}.png")
        Image.fromarray(synthetic_patch(rng, 1)).save(made[-1])
    large = folder / "generated_large.png"
    Image.fromarray(synthetic_patch(rng, 0, size=(230, 350))).save(large)
    return {"patches": made, "large": [large], "real": []}


@pytest.fixture(scope="module")
def server(real_files):
    if chromium_path() is None:
        pytest.skip("Chromium not found (apt-get install chromium, or set BREASTPATH_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from breastpath.imaging import decode_image
    from breastpath.inference.predictor import Predictor
    from breastpath.serve.app import create_app

    predictor = Predictor.from_checkpoint("default")
    stain = None
    try:
        from breastpath.stain import get_normalizer

        stain = get_normalizer("macenko").fit(decode_image(real_files["patches"][-1]))
    except Exception:  # no stain package, or no fit: the page says "none"
        stain = None
    with served(create_app(predictor, stain=stain)) as url:
        yield {"url": url, "stain": stain is not None}


@pytest.fixture(scope="module")
def page(server):
    viewport = {"width": 1100, "height": 900}
    with chromium_page(errors=ERRORS, viewport=viewport, accept_downloads=True) as page:
        page.on("request", lambda request: REQUESTS.append(request.url))
        page.goto(server["url"] + "/")
        yield page


def test_upload_one_real_patch(page, server, real_files):
    page.wait_for_function(
        "() => document.getElementById('model').textContent.includes('efficientnet')"
    )
    patch = real_files["patches"][0]
    page.set_input_files("#file", str(patch))
    page.wait_for_selector("#single:not([hidden])")
    label = page.text_content("#label")
    assert "probability of cancer" in label
    assert label.split(":")[0] in ("IDC", "non-IDC")
    assert patch.name in page.text_content("#detail")
    width = page.eval_on_selector("#fill", "e => e.style.width")
    assert width.endswith("%") and 0 <= float(width[:-1]) <= 100
    overlay = page.eval_on_selector("#overlay", "e => [e.src.slice(0, 22), e.naturalWidth]")
    assert overlay == ["data:image/png;base64,", 250]
    assert page.is_visible("#overlay") and page.is_visible("#preview")
    if server["stain"]:
        assert page.eval_on_selector("#stain", "e => e.naturalWidth") == 250
        assert "macenko" in page.text_content("#stain-caption")
    else:
        assert "No stain-normalized view" in page.text_content("#stain-none")
    assert page.text_content("#messages") == ""


DROP = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], "=dropped.png", { type: "image/png" }));
  const event = new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true });
  document.getElementById("drop").dispatchEvent(event);
}"""


def test_drag_and_drop(page, real_files):
    encoded = base64.b64encode(real_files["patches"][-1].read_bytes()).decode("ascii")
    page.evaluate(DROP, encoded)
    page.wait_for_function(
        "() => document.getElementById('detail').textContent.includes('dropped')"
    )
    assert page.eval_on_selector("#overlay", "e => e.naturalWidth") == 250


def test_batch_table_csv_and_screenshot(page, real_files, tmp_path):
    files = [str(p) for p in real_files["patches"][1:4] + real_files["large"]]
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"not an image\n" * 4)
    page.set_input_files("#file", [*files, str(notes)])
    page.wait_for_selector("#batch:not([hidden])")
    rows = page.query_selector_all("#results tbody tr")
    assert len(rows) == len(files) + 1
    assert "rejected" in rows[-1].text_content() and "notes.png" in page.text_content("#messages")
    tile_cell = rows[len(files) - 1].query_selector_all("td")[4].text_content()
    assert re.fullmatch(r"(\d+\.\d%|—) \(.*\d+ tiles assessed\)", tile_cell), tile_cell  # no NaN
    page.wait_for_selector("#single:not([hidden])")  # the first file's explanation
    assert Path(files[0]).name in page.text_content("#detail")
    assert page.is_hidden("#tiles-figure")
    rows[len(files) - 1].click()  # the large image: its tile map
    page.wait_for_selector("#tiles-figure:not([hidden])")
    assert Path(files[-1]).name in page.text_content("#detail")
    detail = page.text_content("#tile-detail")  # the tile verdict and the rule that made it
    assert "assessed tiles" in detail and "(rule: " in detail
    assert page.eval_on_selector("#tiles", "e => e.naturalWidth") > 0
    rows[0].click()  # back to the first patch for the screenshot
    page.wait_for_selector("#tiles-figure", state="hidden")
    with page.expect_download() as download_info:
        page.click("#csv")
    saved = tmp_path / "results.csv"
    download_info.value.save_as(saved)
    table = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [row["filename"] for row in table] == [Path(f).name for f in files] + ["notes.png"]
    assert table[-1]["ok"] == "false" and "not a readable image" in table[-1]["error"]
    assert all(0.0 <= float(row["probability"]) <= 1.0 for row in table[:-1])
    if real_files["real"]:
        page.screenshot(path=str(REPO / "docs" / "screenshot.png"), full_page=True)


def test_no_errors_and_nothing_fetched_from_elsewhere(page, server):
    page.goto(server["url"] + "/model-card")
    assert "efficientnet-idc" in page.text_content("h1")
    outside = [url for url in REQUESTS if not url.startswith((server["url"], "data:", "blob:"))]
    assert REQUESTS and not outside, outside
    assert not ERRORS, ERRORS
