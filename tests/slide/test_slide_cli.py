"""``breastpath slide``: outputs, options, and one `error:` line with exit 2 on bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from breastpath.cli.main import main
from breastpath.slide.geojson import read_tile_scores
from breastpath.slide.synthetic import Blob, write_synthetic_slide

pytest.importorskip("tifffile")

BLOBS = [Blob(600, 500, 300, 250, "normal"), Blob(1500, 1000, 250, 300, "tumor")]


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-slides")
    common = {"size": (2000, 1500), "tile": 256, "downsamples": (1, 4)}
    return {
        "slide": write_synthetic_slide(root / "s.ome.tif", blobs=BLOBS, **common),
        "no_mpp": write_synthetic_slide(root / "n.tif", blobs=BLOBS, mpp=None, **common),
        "pages": write_synthetic_slide(root / "p.tif", blobs=BLOBS, pyramid="pages", **common),
        "blank": write_synthetic_slide(root / "blank.tif", blobs=[], **common),
    }


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err


def test_slide_writes_heatmap_csv_and_score(slides, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(
        capsys, "slide", slides["slide"], "--out", out, "--level", "1",
        "--threshold", "0.9", "--top-k", "5",
    )  # fmt: skip
    assert code == 0, err
    assert "top-5 mean" in stdout and "tiles/s" in stdout
    summary = json.loads((out / "slide.json").read_text())
    score, verdict = summary["stats"], summary["verdict"]
    assert score["top_k"] == 5 and verdict["threshold"] == 0.9
    assert f"verdict: {verdict['text']}" in stdout and verdict["rule"] == summary["rule"]
    assert summary["slide"]["backend"] == "tifffile"
    with open(out / "tiles.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = [r for r in rows if not r["skipped"]]
    assert len(scored) == score["tiles"] == summary["tiling"]["tiles_scored"] > 10
    skipped = summary["tiling"]["tiles_skipped"]
    assert len(rows) == len(scored) + sum(skipped.values()) and skipped["mask"] > 0
    probs = sorted(float(r["probability"]) for r in scored)
    assert score["top_k_mean"] == pytest.approx(sum(probs[-5:]) / 5, abs=1e-5)
    above = [p for p in probs if p >= 0.9]
    assert verdict["tiles_called"] == len(above) and verdict["tiles_assessed"] == len(scored)
    assert verdict["extent"] == pytest.approx(len(above) / len(scored), abs=1e-6)
    assert {r["level"] for r in rows} == {"1"} and {r["size"] for r in rows} == {"200"}
    # the GeoJSON for QuPath holds the same tiles and scores
    tiles = read_tile_scores(out / "tiles.geojson")
    read = [r for r in rows if r["skipped"] != "mask"]
    assert [(t["x"], t["y"], t["size"]) for t in tiles] == [
        (int(r["x"]), int(r["y"]), int(r["size"])) for r in read
    ]
    for tile, row in zip(tiles, read, strict=True):
        if row["skipped"]:
            assert tile["probability"] is None and tile["classification"] == "Ignore*"
        else:
            assert tile["probability"] == pytest.approx(float(row["probability"]))
            expected = "IDC" if tile["probability"] >= 0.9 else "non-IDC"
            assert tile["classification"] == expected
    heatmap = Image.open(out / "heatmap.png")
    assert heatmap.width > 2 * 500  # thumbnail beside the overlay
    tissue = Image.open(out / "tissue.png")
    assert tissue.size[::-1] == tuple(summary["tissue"]["thumbnail"]) == (1500, 2000)


def test_default_resolution_for_the_idc_model_is_4_mpp(slides, tmp_path, capsys):
    code, out, err = _run(
        capsys, "slide", slides["slide"], "--out", tmp_path, "--min-tissue", "0.1"
    )
    assert code == 0, err
    level_mpp = json.loads((tmp_path / "slide.json").read_text())["slide"]["mpp"] * 4
    assert f"read 200 px at level 1 ({level_mpp:.3g} um/px), resized to 50 px (4 um/px)" in out
    tiling = json.loads((tmp_path / "slide.json").read_text())["tiling"]
    assert tiling["requested_mpp"] is None and tiling["target_mpp"] == 4.0
    assert tiling["mpp"] == pytest.approx(4.0)
    assert tiling["level"] == 1 and tiling["read_size"] == 200 and tiling["tile_size"] == 50


def test_a_slide_without_mpp_needs_slide_mpp_or_a_level(slides, tmp_path, capsys):
    code, _, err = _run(capsys, "slide", slides["no_mpp"], "--out", tmp_path / "a")
    _one_line_error(code, err, "records no microns per pixel")
    assert "--slide-mpp" in err and "--level" in err and "4 µm/px" in err
    code, _, err = _run(capsys, "slide", slides["no_mpp"], "--out", tmp_path / "b", "--slide-mpp",
                        "0.25", "--min-tissue", "0.1")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "b" / "slide.json").read_text())
    assert summary["slide"]["mpp"] == 0.25 and summary["slide"]["mpp_source"] == "--slide-mpp"
    assert summary["tiling"]["mpp"] == pytest.approx(4.0) and summary["model"]["mpp"] == 4.0
    code, out, err = _run(capsys, "slide", slides["no_mpp"], "--out", tmp_path / "c",
                          "--level", "1")  # fmt: skip
    assert code == 0, err
    assert "note: the slide records no microns per pixel" in out
    assert (out + err).count("the slide records no microns per pixel") == 1  # said once
    summary = json.loads((tmp_path / "c" / "slide.json").read_text())
    assert summary["tiling"]["mpp"] is None and summary["notes"]


def test_backend_option_and_far_scale_note(slides, tmp_path, capsys):
    pytest.importorskip("openslide", reason="openslide-python is not installed")
    code, out, err = _run(capsys, "slide", slides["pages"], "--out", tmp_path, "--backend",
                          "openslide", "--level", "0", "--min-tissue", "0.5")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "slide.json").read_text())
    assert summary["slide"]["backend"] == "openslide" and out.startswith("note: tiles are at")
    assert "trained at 4 µm/px" in out and summary["tiling"]["mpp"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("case", "extra", "needle"),
    [
        ("missing", [], "no such file"),
        ("png", [], "not a slide"),
        ("blank", [], "no tissue found"),
        ("slide", ["--level", "5"], "no level 5"),
        ("slide", ["--level", "0", "--mpp", "1"], "not both"),
        ("no_mpp", ["--mpp", "2"], "does not record its mpp"),
    ],
)
def test_bad_input_is_one_error_line(slides, tmp_path, capsys, case, extra, needle):
    if case == "missing":
        path = tmp_path / "gone.svs"
    elif case == "png":
        path = tmp_path / "photo.png"
        Image.new("RGB", (64, 64), "white").save(path)
    else:
        path = slides[case]
    code, _, err = _run(capsys, "slide", path, "--out", tmp_path / "out", *extra)
    _one_line_error(code, err, needle)


def test_commands_are_registered(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "mosaic" in out and "slide" in out
