"""``breastpath slide`` over a cohort: folders, manifests, the cohort table, resuming, bad slides,
a full output disk, Ctrl-C and the tile limit (issue 28 items 3 and 6; issue 29 defect 11)."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import pytest

from breastpath.cli.main import main
from breastpath.errors import SlideError
from breastpath.slide.sources import discover, read_manifest
from breastpath.slide.synthetic import Blob, write_synthetic_slide

pytest.importorskip("tifffile")

BLOBS = [Blob(600, 500, 300, 250, "normal"), Blob(1500, 1000, 250, 300, "tumor")]
COMMON = {"size": (2000, 1500), "tile": 256, "downsamples": (1, 4)}
#: Tile level 1 (500 x 375 px): a few dozen tissue tiles per slide, fast.
FAST = ("--level", "1", "--no-progress")


def make_cohort(root: Path) -> Path:
    """``a.ome.tif``, ``sub/a.tif`` (the same name), ``b.tif``, a corrupt ``c.svs``, a note."""
    root.mkdir(parents=True, exist_ok=True)
    write_synthetic_slide(root / "a.ome.tif", blobs=BLOBS, **COMMON)
    (root / "sub").mkdir(exist_ok=True)
    write_synthetic_slide(root / "sub" / "a.tif", blobs=BLOBS[1:], seed=5, **COMMON)
    write_synthetic_slide(root / "b.tif", blobs=BLOBS[:1], seed=7, **COMMON)
    (root / "c.svs").write_bytes(b"II*\x00" + bytes(range(256)) * 20)  # a truncated TIFF
    (root / "notes.txt").write_text("not a slide")
    return root


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("cohort") / "slides")


def _run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _table(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "cohort.csv", newline="") as handle:
        return {row["slide"]: row for row in csv.DictReader(handle)}


def _one_line_error(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]


def test_a_folder_gives_one_row_per_slide_and_one_error_row(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "slide", cohort, "--out", out, *FAST)
    assert code == 0, err
    rows = _table(out)
    assert len(rows) == 4  # notes.txt is not a slide
    a_names = sorted(n for n in rows if n.startswith("a-"))
    assert len(a_names) == 2 and a_names[0] != a_names[1]  # same name, two folders
    assert rows["c"]["status"].startswith("error: ") and "not a slide" in rows["c"]["status"]
    for name in [*a_names, "b"]:
        row = rows[name]
        assert row["status"] == "scored", row
        assert row["backend"] == "tifffile" and row["level"] == "1" and row["mpp"] == "0.25"
        assert int(row["tiles_scored"]) > 0 and row["verdict"] and row["rule"]
        assert 0.0 <= float(row["extent"]) <= 1.0 and row["positive"] in ("0", "1")
        summary = json.loads((out / row["output"] / "slide.json").read_text())
        assert summary["slide"]["path"].endswith(row["path"][-8:])
        assert summary["tiling"]["tiles_scored"] == int(row["tiles_scored"])
        assert (out / name / "done.json").is_file() and (out / name / "heatmap.png").is_file()
    assert "[4/4]" in stdout and "cohort of 4 slides: 3 scored, 1 error" in stdout
    assert json.loads((out / "cohort.json").read_text())["status"]["error"] == 1


def test_rerun_keeps_finished_slides_and_retries_errors(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(capsys, "slide", cohort, "--out", out, *FAST)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/done.json")}
    assert len(before) == 3
    code, stdout, _ = _run(capsys, "slide", cohort, "--out", out, *FAST)
    assert code == 0 and "3 slides already done" in stdout and "[1/1] c: error" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/done.json")} == before
    assert [r["status"] for r in _table(out).values()].count("scored") == 3
    # other settings: every slide runs again
    code, stdout, _ = _run(capsys, "slide", cohort, "--out", out, *FAST, "--min-tissue", "0.3")
    assert code == 0 and "already done" not in stdout and "[4/4]" in stdout
    # a deleted output makes its slide run again
    (out / "b" / "tiles.csv").unlink()
    code, stdout, _ = _run(capsys, "slide", cohort, "--out", out, *FAST, "--min-tissue", "0.3")
    assert "2 slides already done" in stdout and (out / "b" / "tiles.csv").is_file()


def test_manifest_with_patients_labels_and_mpp(cohort, tmp_path, capsys):
    root = tmp_path / "m"
    root.mkdir()
    write_synthetic_slide(root / "nompp.tif", blobs=BLOBS, mpp=None, **COMMON)
    write_synthetic_slide(root / "nompp2.tif", blobs=BLOBS, mpp=None, seed=9, **COMMON)
    (root / "linked.tif").symlink_to(cohort / "b.tif")
    manifest = root / "cohort.csv"
    manifest.write_text(
        "path,patient,label,mpp\n"
        "nompp.tif,P1,1,0.25\n"
        "linked.tif,P1,0,\n"
        f"{(root / 'nompp2.tif').absolute()},P2,negative,0.5\n"  # absolute, inside: fine
    )
    out = tmp_path / "out"
    code, _, err = _run(capsys, "slide", manifest, "--out", out, "--mpp", "1", "--no-progress")
    assert code == 0, err
    rows = list(_table(out).values())
    assert [r["patient"] for r in rows] == ["P1", "P1", "P2"]
    assert [r["label"] for r in rows] == ["1", "0", "0"]
    assert [r["status"] for r in rows] == ["scored"] * 3
    assert [r["mpp"] for r in rows] == ["0.25", "0.25", "0.5"]  # from the manifest, the file
    metrics = json.loads((out / "cohort.json").read_text())["metrics"]
    assert metrics["slide"]["decision"]["n"] == 3 and metrics["patient"]["decision"]["n"] == 2
    assert "any of its slides" in metrics["patient"]["rule"]
    assert any("negative" in note for note in metrics["slide"]["notes"])  # fewer than 10


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("file,label\na.tif,1\n", "needs a 'path' column"),
        ("path\n../outside.tif\n", "outside the manifest's folder"),
        ("path\n/etc/passwd\n", "outside the manifest's folder"),
        ("path,label\na.tif,maybe\n", "label 'maybe'"),
        ("path,mpp\na.tif,-1\n", "mpp '-1'"),
        ("path\n\n,\n", "empty path"),
    ],
)
def test_manifest_errors_are_one_line(tmp_path, capsys, body, needle):
    manifest = tmp_path / "list.csv"
    manifest.write_text(body)
    code, _, err = _run(capsys, "slide", manifest, "--out", tmp_path / "out")
    _one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_discovery_follows_links_once_and_names_dicom_folders(tmp_path):
    root = tmp_path / "r"
    (root / "x" / "series").mkdir(parents=True)
    (root / "x" / "series" / "1.dcm").write_bytes(b"")
    (root / "x" / "s.svs").write_bytes(b"")
    (root / "x" / "loop").symlink_to(root)  # a link back up: searched once
    (root / "y.NDPI").write_bytes(b"")
    sources = discover([root, root / "x" / "s.svs"])
    assert [s.name for s in sources] == ["y", "s", "series"]  # walked top-down, sorted
    assert all(s.patient is None and s.label is None for s in sources)
    manifest = root / "m.csv"
    manifest.write_text("path\nx/s.svs\n")
    assert read_manifest(manifest)[0].path == (root / "x" / "s.svs").absolute()
    manifest.write_text("name\nx\n")
    with pytest.raises(SlideError, match="a 'path' column"):
        read_manifest(manifest)


def test_max_tiles_refuses_one_slide_and_is_a_row_in_a_cohort(cohort, tmp_path, capsys):
    code, _, err = _run(
        capsys, "slide", cohort / "b.tif", "--out", tmp_path / "one", "--level", "0",
        "--max-tiles", "100",
    )  # fmt: skip
    _one_line_error(code, err, "more than --max-tiles 100")
    assert "1,200 tiles" in err and not (tmp_path / "one").exists()
    out = tmp_path / "many"  # level 1 is 500 x 375 px: 8 x 10 = 80 tiles
    code, _, _ = _run(capsys, "slide", cohort / "b.tif", cohort / "a.ome.tif", "--out", out,
                      *FAST, "--max-tiles", "79")  # fmt: skip
    assert code == 2  # every slide failed: one error line, the table is written
    assert all("--max-tiles 79" in r["status"] for r in _table(out).values())


def test_unexpected_errors_full_disk_and_ctrl_c(cohort, tmp_path, monkeypatch):
    from breastpath.inference.predictor import Predictor
    from breastpath.slide import analyze
    from breastpath.slide import cohort as runner
    from breastpath.slide.cohort import CohortOptions, OutputStopped, run_cohort

    predictor = Predictor.from_checkpoint("default")
    sources = discover([cohort / "b.tif", cohort / "a.ome.tif", cohort / "sub"])
    options = CohortOptions(level=1)
    real = analyze.score_prepared  # what a cohort calls for each slide it prepared

    def failing(kind, at):
        def score_prepared(prepared, *args, **kwargs):
            if str(prepared.reader.path).endswith(at):
                raise kind
            return real(prepared, *args, **kwargs)

        return score_prepared

    out = tmp_path / "a"
    monkeypatch.setattr(analyze, "score_prepared", failing(KeyError("reader bug"), "a.ome.tif"))
    rows = run_cohort(sources, predictor, out_dir=out, options=options)
    assert [r["status"] for r in rows] == ["scored", "error: KeyError: 'reader bug'", "scored"]

    out = tmp_path / "b"
    monkeypatch.setattr(analyze, "score_prepared", failing(KeyboardInterrupt(), "a.ome.tif"))
    with pytest.raises(KeyboardInterrupt):
        run_cohort(sources, predictor, out_dir=out, options=options)
    assert [r["status"] for r in _table(out).values()] == ["scored", "pending", "pending"]
    assert not (out / sources[1].name / "done.json").exists()

    out = tmp_path / "c"
    monkeypatch.setattr(analyze, "score_prepared", real)
    written = []

    def full_disk(path, data):
        if Path(path).name == "done.json" and written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        return None  # the first marker is dropped, as if written

    monkeypatch.setattr(runner, "write_json", full_disk)
    with pytest.raises(OutputStopped, match="No space left"):
        run_cohort(sources, predictor, out_dir=out, options=options)
    table = _table(out)
    assert table["b"]["status"] == "scored" and table[sources[1].name]["status"] == "pending"


def test_a_slide_without_tissue_is_skipped_not_an_error(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_synthetic_slide(folder / "blank.tif", size=(1024, 1024), tile=256, blobs=[])
    out = tmp_path / "out"
    main(["slide", str(folder), "--out", str(out), "--level", "0", "--quiet"])
    capsys.readouterr()
    with open(out / "cohort.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"].startswith("skipped: ") and "no tissue found" in row["status"]
