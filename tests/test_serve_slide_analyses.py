"""Analysis from the viewer (``POST /api/slides/{id}/analyze``, ``GET /api/slides/{id}/job``):
a generated slide scored by the bundled model in the background, its progress, the overlay
answered afterwards; the cache on disk (a re-request and a restart do not recompute, a changed
model does); the bounded queue (429), no results folder (503), a slide without pixels (409),
unknown ids (404) and a failed job's message."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from breastpath.slide.synthetic import Blob, write_synthetic_slide

pytest.importorskip("tifffile")

BLOBS = [Blob(700, 600, 450, 380, "normal"), Blob(1700, 1000, 420, 420, "tumor")]


def _slides(root: Path, names=("one",), *, mpp: float | None = 0.25) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_synthetic_slide(
            root / f"{name}.tif", size=(2400, 1600), tile=256, downsamples=(1, 4, 16),
            blobs=BLOBS, mpp=mpp,
        )  # fmt: skip
    return root


def _client(predictor, root: Path, results: Path | None, **kwargs):
    from fastapi.testclient import TestClient

    from breastpath.serve.analyses import SlideAnalyses
    from breastpath.serve.app import create_app
    from breastpath.slide.catalog import SlideCatalog

    catalog = SlideCatalog(root)
    analyses = SlideAnalyses(catalog, predictor, results=results, **kwargs)
    app = create_app(predictor, slides=catalog, analyses=analyses)
    return TestClient(app, raise_server_exceptions=False), analyses


def _wait(client, slide_id: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/slides/{slide_id}/job").json()
        seen.append(job)
        if job["state"] in ("done", "error"):
            return job, seen
        time.sleep(0.05)
    pytest.fail(f"the analysis of {slide_id} did not finish: {seen[-1]}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _slides(tmp_path_factory.mktemp("analyse") / "slides")


def _changed(predictor):
    """The same model under other weights (another SHA-256)."""
    other = object.__new__(type(predictor))
    other.__dict__.update(predictor.__dict__)
    other.meta = dataclasses.replace(predictor.meta, weights_sha256="0" * 64)
    return other


def test_analyse_from_the_page_then_cached_then_a_new_model(predictor, folder, tmp_path):
    results = tmp_path / "results"
    client, _ = _client(predictor, folder, results)
    with client:
        listed = client.get("/api/slides").json()
        assert listed["analysis"] == {"available": True, "reason": None}
        assert listed["slides"][0]["analysed"] is False
        assert client.get("/api/slides/one/tiles").status_code == 404
        assert client.get("/api/slides/one/job").json()["state"] == "none"

        started = client.post("/api/slides/one/analyze")
        assert started.status_code == 202, started.text
        assert started.json()["state"] in ("queued", "running")
        job, seen = _wait(client, "one")
        assert job["state"] == "done", job
        assert job["tiles_total"] > 0 and job["tiles_done"] == job["tiles_total"]
        assert job["status"] == "scored" and job["cached"] is False
        assert any(s["state"] in ("queued", "running") for s in seen)

        tiles = client.get("/api/slides/one/tiles")
        assert tiles.status_code == 200
        body = tiles.json()
        read = [t for t in body["tiles"] if t[4] != "mask"]  # the grid, not the masked-out tiles
        assert body["verdict"]["label"] and len(read) == job["tiles_total"]
        assert client.get("/api/slides/one").json()["analysed"] is True
        assert client.get("/api/slides/one/tiles.csv").status_code == 200
        marker = results / "one" / "done.json"
        stamp = marker.stat().st_mtime_ns

        again = client.post("/api/slides/one/analyze")  # finished: not computed again
        assert again.status_code == 200 and again.json()["cached"] is True
        assert marker.stat().st_mtime_ns == stamp

    restarted, _ = _client(predictor, folder, results)  # the cache outlives the server
    with restarted:
        assert restarted.get("/api/slides/one").json()["analysed"] is True
        assert restarted.get("/api/slides/one/job").json()["state"] == "done"
        assert restarted.post("/api/slides/one/analyze").status_code == 200
    assert marker.stat().st_mtime_ns == stamp

    other, _ = _client(_changed(predictor), folder, results)  # a changed model scores again
    with other:
        assert other.get("/api/slides/one").json()["analysed"] is False
        assert other.post("/api/slides/one/analyze").status_code == 202
        job, _ = _wait(other, "one")
        assert job["state"] == "done" and job["cached"] is False
    assert marker.stat().st_mtime_ns != stamp


def test_the_queue_is_bounded(predictor, tmp_path):
    root = _slides(tmp_path / "slides", ("a", "b", "c"))
    client, analyses = _client(predictor, root, tmp_path / "results", max_queued=1)
    release = threading.Event()

    def held(job):
        release.wait(30)
        job.state = "done"

    analyses._run = held  # the first job holds the worker
    with client:
        assert client.post("/api/slides/a/analyze").status_code == 202
        deadline = time.monotonic() + 10
        while client.get("/api/slides/a/job").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        queued = client.post("/api/slides/b/analyze")
        assert queued.status_code == 202 and queued.json()["queue_position"] == 1
        assert client.post("/api/slides/b/analyze").status_code == 202  # joined, not queued twice
        full = client.post("/api/slides/c/analyze")
        assert full.status_code == 429 and full.headers["retry-after"]
        assert "waiting" in full.json()["detail"]
        release.set()
        _wait(client, "b", timeout=30)
        assert client.post("/api/slides/c/analyze").status_code == 202


def test_no_results_folder_unknown_ids_and_missing_pixels(predictor, folder):
    reason = "slides cannot be analysed from the page: read-only"
    client, analyses = _client(predictor, folder, None, unavailable=reason)
    with client:
        assert client.get("/api/slides").json()["analysis"] == {
            "available": False,
            "reason": reason,
        }
        refused = client.post("/api/slides/one/analyze")
        assert refused.status_code == 503 and refused.json()["detail"] == reason
        for url in ("/api/slides/nope/analyze", "/api/slides/..%2Fone/analyze"):
            assert client.post(url).status_code == 404
        assert client.get("/api/slides/nope/job").status_code == 404
        assert client.get("/api/slides/one/analyze").status_code == 405
    client, analyses = _client(predictor, folder, folder.parent / "results-409")
    analyses.catalog.entries["one"].opener = None
    with client:
        assert client.post("/api/slides/one/analyze").status_code == 409


def test_a_failed_analysis_says_why(predictor, tmp_path):
    root = _slides(tmp_path / "slides", ("nompp",), mpp=None)
    client, _ = _client(predictor, root, tmp_path / "results")
    with client:
        assert client.post("/api/slides/nompp/analyze").status_code == 202
        job, _ = _wait(client, "nompp")
        assert job["state"] == "error" and "--slide-mpp" in job["error"]
        assert client.get("/api/slides/nompp").json()["analysed"] is False


def test_results_folder_rules(tmp_path):
    from breastpath.errors import ConfigError
    from breastpath.serve.analyses import results_folder

    folder, why = results_folder(tmp_path, None)
    assert folder == (tmp_path / "breastpath-analyses").resolve() and why is None
    chosen = tmp_path / "elsewhere" / "results"
    assert results_folder(tmp_path, chosen) == (chosen.resolve(), None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--slides-results"):
        results_folder(tmp_path, blocker / "sub")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        folder, why = results_folder(locked, None)
        if folder is None:  # root may write anywhere
            assert "--slides-results" in (why or "")
    finally:
        locked.chmod(0o700)
