"""Files the package writes keep the umask's mode (atomic writes start from an owner-only temp)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from breastpath.io import atomic_write_text, file_mode, write_csv


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask_022):
    assert file_mode() == 0o644
    atomic_write_text(tmp_path / "a.txt", "x")
    write_csv(tmp_path / "b.csv", [{"a": 1}], ["a"])
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.csv") == 0o644
    os.umask(0o077)
    atomic_write_text(tmp_path / "c.txt", "x")
    assert _mode(tmp_path / "c.txt") == 0o600


def test_plots_and_report_follow_the_umask(tmp_path, umask_022):
    from breastpath.evaluate import plots
    from breastpath.evaluate.report import write_report

    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.3, 0.6])
    png = plots.plot_roc({"patch": (y, p)}, tmp_path / "roc.png")
    write_report(
        tmp_path, title="t", metrics={"patch": {"n": 4}}, plots={"roc": str(png)}, run_info={}
    )
    assert _mode(png) == 0o644
    assert _mode(tmp_path / "report.html") == 0o644
