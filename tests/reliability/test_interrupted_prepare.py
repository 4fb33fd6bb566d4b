"""An interrupted ``breastpath prepare`` leaves a folder that is refused, never half-read, and
preparing again into the same folder gives exactly what a clean run gives.

Interruptions: SIGKILL of a real ``breastpath prepare`` while it decodes (a child process whose
decoder is slowed down so the kill lands mid-way), and in process, a crash at each later step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from breastpath.config import DataConfig
from breastpath.data import cache as cache_module
from breastpath.data.cache import is_prepared, open_prepared
from breastpath.data.prepare import prepare
from breastpath.errors import CacheError
from conftest import make_idc_tree

FILES = ("images.u8", "index.csv", "splits.csv", "meta.json", "summary.json")
CONFIG = DataConfig(test_frac=0.2, val_frac=0.2, seed=3)

#: Runs ``breastpath prepare`` with a decoder that takes 50 ms per image.
SLOW_PREPARE = """
import sys, time
import breastpath.data.cache as cache
real = cache.read_image
def slow(*args, **kwargs):
    time.sleep(0.05)
    return real(*args, **kwargs)
cache.read_image = slow
from breastpath.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_idc_tree(tmp_path_factory.mktemp("tree") / "IDC", patients=6, per_class=6)


@pytest.fixture(scope="module")
def clean(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "prepared"
    prepare([tree], out, config=CONFIG, workers=1)
    return out


def _prepare_again(tree: Path, out: Path) -> None:
    prepare([tree], out, config=CONFIG, workers=2)


def _assert_refused(out: Path) -> None:
    assert not is_prepared(out)
    with pytest.raises(CacheError, match=r"not a complete prepared folder \(meta\.json missing\)"):
        open_prepared(out)


def _assert_same_as_clean(out: Path, clean: Path) -> None:
    for name in FILES:
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    assert sorted(os.listdir(out)) == sorted(FILES)  # no partial or temp file left
    open_prepared(out)


def test_sigkill_while_decoding(tree, clean, tmp_path):
    out = tmp_path / "prepared"
    command = [sys.executable, "-c", SLOW_PREPARE, "prepare", str(tree), "--out", str(out)]
    command += ["--test-frac", "0.2", "--val-frac", "0.2", "--seed", "3", "--workers", "1"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "images.u8.partial"
    deadline = time.monotonic() + 60
    while not partial.is_file():
        assert child.poll() is None and time.monotonic() < deadline, "prepare did not start"
        time.sleep(0.01)
    time.sleep(0.5)  # about 10 of the 60 images decoded
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert partial.is_file() and not (out / "index.csv").exists()
    _assert_refused(out)

    _prepare_again(tree, out)
    _assert_same_as_clean(out, clean)


class _Killed(BaseException):
    """Stands in for SIGKILL in process: the code after it never runs."""


def test_crash_before_the_images_are_in_place(tree, clean, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    real = os.replace

    def replace(source, target):
        if Path(source).name == "images.u8.partial":
            raise _Killed
        real(source, target)

    monkeypatch.setattr(cache_module.os, "replace", replace)
    with pytest.raises(_Killed):
        _prepare_again(tree, out)
    monkeypatch.undo()
    assert (out / "index.csv").is_file() and not (out / "images.u8").exists()
    _assert_refused(out)
    _prepare_again(tree, out)
    _assert_same_as_clean(out, clean)


def test_crash_before_meta_json_and_a_half_written_temp_file(tree, clean, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    real = cache_module.write_json

    def write_json(path, data):
        if Path(path).name == "meta.json":
            Path(path).with_name(".meta.json.k2j4x9ab.tmp").write_text('{"form')  # cut short
            raise _Killed
        real(path, data)

    monkeypatch.setattr(cache_module, "write_json", write_json)
    with pytest.raises(_Killed):
        _prepare_again(tree, out)
    monkeypatch.undo()
    assert (out / "images.u8").is_file() and (out / "summary.json").is_file()
    _assert_refused(out)
    _prepare_again(tree, out)
    _assert_same_as_clean(out, clean)


def test_crash_while_refreshing_a_complete_folder(tree, clean, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "prepared"
    shutil.copytree(clean, out)
    open_prepared(out)

    def crash(*_args, **_kwargs):
        raise _Killed

    monkeypatch.setattr(cache_module, "decode_into", crash)
    with pytest.raises(_Killed):
        _prepare_again(tree, out)
    monkeypatch.undo()
    _assert_refused(out)  # the old cache is not served as if it were the new one
    _prepare_again(tree, out)
    _assert_same_as_clean(out, clean)


def test_training_on_an_interrupted_folder_is_a_one_line_error(tree, tmp_path, capsys):
    from breastpath.cli.main import main

    out = tmp_path / "prepared"
    out.mkdir()
    (out / "images.u8.partial").write_bytes(b"\0" * 7500)
    capsys.readouterr()
    code = main(["train", "--data", str(out), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and "meta.json missing" in err and "\n" not in err
