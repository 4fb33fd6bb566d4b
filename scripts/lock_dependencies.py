"""Regenerate ``constraints.txt``: the exact versions of every package CI and ``make`` install.

Builds a throw-away venv, installs ``-e .[dev,stain-ref]`` with only torch and torchvision pinned
(the wheels this project is tested with), and writes ``pip freeze`` of the result, so a later
install resolves to exactly the same set.

    python scripts/lock_dependencies.py            # rewrites constraints.txt
    python scripts/lock_dependencies.py --check    # exit 1 when constraints.txt is out of date
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PINNED = ("torch", "torchvision")
EXTRAS = "dev,stain-ref"
HEADER = """\
# Exact versions that `make run`, `make test` and CI install against: the full lock of
# `pip install -e '.[{extras}]'` (Python {python}, Linux x86_64). Regenerate with
# `python scripts/lock_dependencies.py` after changing dependencies in pyproject.toml.
"""


def current_pins(path: Path) -> list[str]:
    """The torch/torchvision lines of an existing constraints file."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    pins = [line.strip() for line in lines if line.split("==")[0].strip() in PINNED]
    if len(pins) != len(PINNED):
        sys.exit(f"{path}: expected pins for {', '.join(PINNED)}")
    return pins


def resolve(pins: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="breastpath-lock-") as tmp:
        venv = Path(tmp) / "venv"
        seed = Path(tmp) / "pins.txt"
        seed.write_text("\n".join(pins) + "\n", encoding="utf-8")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        subprocess.run(
            [*pip, "install", "--quiet", "-c", str(seed), "-e", f"{REPO}[{EXTRAS}]"], check=True
        )
        frozen = subprocess.run(
            [*pip, "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
        ).stdout
    return sorted(
        (line for line in frozen.splitlines() if line and not line.startswith(("#", "-e"))),
        key=str.lower,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    target = REPO / "constraints.txt"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    text = HEADER.format(extras=EXTRAS, python=python) + "\n".join(resolve(current_pins(target)))
    text += "\n"
    if args.check:
        same = target.read_text(encoding="utf-8") == text
        print("constraints.txt is up to date" if same else "constraints.txt is out of date")
        sys.exit(0 if same else 1)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    print(f"wrote {target} ({text.count('==')} packages)")


if __name__ == "__main__":
    main()
