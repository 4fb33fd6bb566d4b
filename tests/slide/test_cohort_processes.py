"""A cohort in other processes: ``kill -9`` mid-cohort then a rerun that keeps the finished
slides, and ``torchrun`` with 2 CPU processes giving the table of 1 process (issue 28 items 3
and 5)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from breastpath.cli.main import main
from breastpath.slide.cohort_table import VERDICT_FIELDS
from breastpath.slide.synthetic import Blob, write_synthetic_slide
from conftest import torchrun

pytest.importorskip("tifffile")
pytestmark = pytest.mark.slow

BLOBS = [Blob(1200, 1000, 600, 500, "normal"), Blob(2800, 2000, 500, 600, "tumor")]


def _slides(root: Path, n: int, *, size=(4000, 3000)) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        write_synthetic_slide(root / f"s{i}.tif", size=size, tile=256, downsamples=(1, 4),
                              blobs=BLOBS, seed=i)  # fmt: skip
    (root / "bad.svs").write_bytes(b"not a slide at all")
    return root


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "cohort.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_kill_9_mid_cohort_loses_at_most_the_slide_in_flight(tmp_path, capsys):
    slides = _slides(tmp_path / "slides", 5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "breastpath", "slide", str(slides), "--out", str(out),
               "--level", "0", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(out.glob("*/done.json")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/done.json")}
    assert 1 <= len(done) < 5, "the cohort ended before it could be killed mid-way"
    heatmaps = {name: (out / name / "heatmap.png").stat().st_mtime_ns for name in done}

    capsys.readouterr()
    assert main(["slide", str(slides), "--out", str(out), "--level", "0", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert f"{len(done)} slides already done" in stdout
    for name, mtime in done.items():  # finished slides were not computed again
        assert (out / name / "done.json").stat().st_mtime_ns == mtime
        assert (out / name / "heatmap.png").stat().st_mtime_ns == heatmaps[name]
    rows = _table(out)
    assert [r["status"] for r in rows if r["slide"] != "bad"] == ["scored"] * 5
    assert not list(out.glob("*/.*.tmp"))  # the killed slide's temp files are gone


def test_torchrun_two_processes_give_the_table_of_one(tmp_path, capsys):
    slides = _slides(tmp_path / "slides", 3, size=(2000, 1500))
    args = ["--level", "1", "--no-progress"]
    capsys.readouterr()
    assert main(["slide", str(slides), "--out", str(tmp_path / "one"), *args]) == 0
    done = torchrun("slide", str(slides), "--out", str(tmp_path / "two"), *args)
    assert "rank 1: " in done.stdout and "cohort of 4 slides" in done.stdout
    one, two = _table(tmp_path / "one"), _table(tmp_path / "two")
    assert [{k: r[k] for k in VERDICT_FIELDS} for r in one] == [
        {k: r[k] for k in VERDICT_FIELDS} for r in two
    ]
    assert [r["status"] for r in two].count("scored") == 3
    # the markers are per slide: one process resumes what two processes did
    capsys.readouterr()
    assert main(["slide", str(slides), "--out", str(tmp_path / "two"), *args]) == 0
    assert "3 slides already done" in capsys.readouterr().out
