"""The slide viewer's HTTP routes (``breastpath serve --slides DIR``): the list, Deep Zoom
descriptor and tiles, the analysis JSON, downloads, 404s and path traversal; a folder of slides
(not analysed) and a symbolic link out of it; concurrent requests for one tile."""

from __future__ import annotations

import io
import itertools
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viewer_cohort import make_viewer_cohort

pytest.importorskip("tifffile")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path]:
    return make_viewer_cohort(tmp_path_factory.mktemp("viewer"))


def _client(predictor, root: Path):
    from fastapi.testclient import TestClient

    from breastpath.serve.app import create_app
    from breastpath.slide.catalog import SlideCatalog

    app = create_app(predictor, slides=SlideCatalog(root))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def api(predictor, cohort):
    with _client(predictor, cohort[1]) as test_client:
        yield test_client


def test_list_of_a_cohort_output(api):
    body = api.get("/api/slides").json()
    assert body["cohort"] is True
    slides = {s["id"]: s for s in body["slides"]}
    assert set(slides) == {"broken", "scored"}
    scored = slides["scored"]
    assert scored["name"] == "scored.tif" and scored["format"] == "tiff"
    assert (scored["width"], scored["height"], scored["mpp"]) == (2400, 1600, 0.25)
    assert scored["status"] == "scored" and scored["analysed"] is True
    assert scored["verdict"]["label"] in ("IDC present", "no IDC found")
    assert scored["verdict"]["text"] and scored["verdict"]["rule"]
    assert "tiles.csv" in scored["files"] and "tiles.geojson" in scored["files"]
    broken = slides["broken"]
    assert broken["error"] and broken["status"].startswith("error: ")
    assert broken["width"] is None
    assert api.get("/api/slides/scored").json()["id"] == "scored"


def test_pages_are_served_with_the_csp(api):
    for url in ("/slides", "/slides/scored"):
        response = api.get(url)
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        assert "script-src 'self'" in response.headers["content-security-policy"]
    viewer = api.get("/slides/scored").text
    assert "/static/vendor/openseadragon/openseadragon.min.js" in viewer
    script = api.get("/static/vendor/openseadragon/openseadragon.min.js")
    assert script.status_code == 200 and b"OpenSeadragon" in script.content[:2000]
    assert api.get("/static/vendor/openseadragon/images/zoomin_rest.png").status_code == 200
    licence = api.get("/static/vendor/openseadragon/LICENSE.txt").text
    assert "Redistribution and use in source and binary forms" in licence


def test_dzi_descriptor_and_tiles_follow_the_standard_layout(api):
    xml = api.get("/api/slides/scored.dzi")
    assert xml.status_code == 200
    root = ET.fromstring(xml.text)
    assert root.get("TileSize") == "254" and root.get("Overlap") == "1"
    assert root.get("Format") == "jpeg"
    size = root[0]
    assert (size.get("Width"), size.get("Height")) == ("2400", "1600")
    top = 12  # ceil(log2(2400)) = 12: levels 0..12
    tile = api.get(f"/api/slides/scored_files/{top}/0_0.jpeg")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(tile.content))
    assert image.size == (255, 255)  # 254 + 1 overlap on the right and bottom
    last = Image.open(io.BytesIO(api.get(f"/api/slides/scored_files/{top}/9_6.jpeg").content))
    assert last.size == (2400 - 9 * 254 + 1, 1600 - 6 * 254 + 1)
    small = Image.open(io.BytesIO(api.get("/api/slides/scored_files/0/0_0.jpeg").content))
    assert small.size == (1, 1)
    thumb = Image.open(io.BytesIO(api.get("/api/slides/scored/thumbnail.jpeg").content))
    assert max(thumb.size) <= 254 and max(thumb.size) > 127
    assert np.asarray(thumb).std() > 5  # tissue, not a blank picture


@pytest.mark.parametrize(
    "url",
    [
        "/api/slides/nope.dzi",
        "/api/slides/nope_files/12/0_0.jpeg",
        "/api/slides/scored_files/13/0_0.jpeg",  # no such level
        "/api/slides/scored_files/12/10_0.jpeg",  # no such column
        "/api/slides/scored_files/12/0_7.jpeg",  # no such row
        "/api/slides/scored_files/-1/0_0.jpeg",
        "/api/slides/scored_files/12/a_0.jpeg",
        "/api/slides/scored_files/99999999999999999999/0_0.jpeg",
        "/api/slides/broken.dzi",  # cannot be opened
        "/api/slides/broken/tiles",  # not analysed
        "/api/slides/..%2F..%2Fetc%2Fpasswd.dzi",
        "/api/slides/..%2fslides%2fscored.dzi",
        "/api/slides/%2Fetc%2Fpasswd/tiles.csv",
        "/api/slides/../out/scored.dzi",
        "/api/slides/scored/slide.json",
        "/api/slides/scored/..%2Fcohort.csv",
        "/api/slides/.hidden",
        "/slides/nope",
        "/slides/..%2Fscored",
    ],
)
def test_bad_ids_levels_and_paths_are_404(api, url):
    response = api.get(url)
    assert response.status_code == 404, (url, response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/json")


def test_analysis_json_regions_and_downloads(api):
    body = api.get("/api/slides/scored/tiles").json()
    verdict = body["verdict"]
    assert verdict["tiles_assessed"] == 32 and verdict["threshold"] > 0
    columns = body["columns"]
    records = [dict(zip(columns, row, strict=True)) for row in body["tiles"]]
    scored = [r for r in records if r["probability"] is not None]
    assert len(scored) == 32 and all(r["skipped"] is None for r in scored)
    assert any(r["skipped"] == "mask" for r in records)
    called = sum(r["probability"] >= verdict["threshold"] for r in scored)
    assert called == verdict["tiles_called"]
    regions = body["regions"]
    assert sum(r["tiles"] for r in regions) == called or len(regions) == 10
    assert [r["rank"] for r in regions] == list(range(1, len(regions) + 1))
    assert all(a["tiles"] >= b["tiles"] for a, b in itertools.pairwise(regions))
    csv_text = api.get("/api/slides/scored/tiles.csv")
    assert csv_text.status_code == 200 and csv_text.text.startswith("tile,row,col,x,y")
    assert "attachment" in csv_text.headers["content-disposition"]
    geo = api.get("/api/slides/scored/tiles.geojson").json()
    assert geo["type"] == "FeatureCollection" and geo["features"]


def test_a_folder_of_slides_and_a_link_out_of_it(predictor, cohort, tmp_path):
    slides, _ = cohort
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "inside.tif").symlink_to(slides / "scored.tif")  # a link out of the folder
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "hidden.tif").symlink_to(slides / "scored.tif")
    (folder / "escape").symlink_to(outside, target_is_directory=True)
    (folder / "own").mkdir()
    (folder / "own" / "real.tif").write_bytes((slides / "scored.tif").read_bytes())
    with _client(predictor, folder) as client:
        body = client.get("/api/slides").json()
        ids = [s["id"] for s in body["slides"]]
        assert ids == ["real"], ids  # links that lead out of the folder are not served
        real = body["slides"][0]
        assert body["cohort"] is False and real["status"] == "not analysed"
        assert real["verdict"] is None and real["width"] == 2400
        assert client.get("/api/slides/real/tiles").status_code == 404
        assert client.get("/api/slides/inside.dzi").status_code == 404
        assert client.get("/api/slides/hidden.dzi").status_code == 404
        assert client.get("/api/slides/real_files/12/0_0.jpeg").status_code == 200


def test_the_output_folder_of_one_slide(predictor, cohort):
    with _client(predictor, cohort[1] / "scored") as client:  # holds slide.json, no cohort.csv
        (slide,) = client.get("/api/slides").json()["slides"]
        assert slide["id"] == "scored" and slide["analysed"] is True and slide["width"] == 2400
        assert client.get("/api/slides/scored/tiles").json()["verdict"]["tiles_assessed"] == 32
        assert client.get("/api/slides/scored_files/12/0_0.jpeg").status_code == 200


def test_a_cohort_row_naming_a_folder_outside_is_not_read(tmp_path):
    from breastpath.slide.catalog import SlideCatalog, UnknownSlide

    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "slide.json").write_text('{"verdict": {"label": "leaked"}}')
    header = "slide,path,status,output\n"
    rows = ["a,missing.svs,scored,../secret", "b,missing.svs,scored,/tmp", "../c,x,scored,c"]
    (out / "cohort.csv").write_text(header + "\n".join(rows) + "\n")
    catalog = SlideCatalog(out)
    assert list(catalog.entries) == ["a", "b"]
    assert catalog.summary("a") is None and catalog.entries["a"].output is None
    with pytest.raises(UnknownSlide):
        catalog.result_file("a", "slide.json")
    described = catalog.describe("a")
    assert described["error"] and "not found" in described["error"]


def test_concurrent_requests_for_one_tile_compute_it_once(cohort):
    from breastpath.serve.slides import SlideTiles
    from breastpath.slide.catalog import SlideCatalog

    tiles = SlideTiles(SlideCatalog(cohort[1]))
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(tiles.tile("scored", 11, 2, 1)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert tiles.cache.misses == 1  # the other seven waited for it or found it cached
    assert tiles.cache.bytes == len(results[0])


def test_serve_slides_option(tmp_path, capsys):
    from breastpath.cli.main import main

    assert main(["serve", "--slides", str(tmp_path / "missing")]) == 2
    assert "--slides" in capsys.readouterr().err
    (tmp_path / "cohort.csv").write_bytes(b"slide,path\n\xff\xfe,\x00\n")
    from breastpath.errors import SlideError
    from breastpath.slide.catalog import SlideCatalog

    with pytest.raises(SlideError, match="cannot be read"):
        SlideCatalog(tmp_path)
