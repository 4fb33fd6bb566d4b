"""README's examples name things that exist, and its mosaic example runs as written on the data
we have (the patient it names is the one whose verdict once contradicted its own rule)."""

from __future__ import annotations

import json
import re

import pytest

from breastpath.cli.main import main
from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_commands_are_commands_of_the_cli():
    from breastpath.cli.main import COMMANDS

    used = set(re.findall(r"^breastpath (\w+)", README, flags=re.MULTILINE))
    assert used and used <= set(COMMANDS), used - set(COMMANDS)


@pytest.mark.data
def test_readme_mosaic_example_runs_on_the_shared_data(shared_data, tmp_path, capsys):
    (line,) = [x for x in README.splitlines() if x.startswith("breastpath mosaic")]
    patient = re.search(r"--patient (\S+)", line).group(1)
    assert (shared_data / "idc" / patient).is_dir(), f"README names patient {patient}"
    out = tmp_path / "mosaic"
    code = main(["mosaic", str(shared_data / "idc"), "--patient", patient, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "patient.json").read_text())
    verdict = summary["verdict"]
    assert verdict["text"] in printed and verdict["rule"] in printed
    # the words follow the rule the checkpoint states, applied to the patches' probabilities
    from breastpath.inference.predictor import Predictor

    rule = Predictor.from_checkpoint("default").verdict_rule(unit="patch")
    assert verdict["rule"] == rule.describe()
    assert summary["positive"] is (verdict["label"] == "IDC present")
    expected = verdict["tiles_called"] >= rule.min_tiles and verdict["extent"] >= rule.min_extent
    assert summary["positive"] is expected
