"""Record a verdict rule's numbers, chosen on patients, in a checkpoint (weights untouched).

``scripts/verdict_crossval.py`` chooses the IDC verdict rule's tile threshold, ``min_tiles`` and
``min_extent`` by cross-fitting on out-of-fold predictions (raw probabilities of the fold models,
as served). The shipped checkpoint reports *calibrated* probabilities (its ``temperature`` and
``logit_bias``), so the tile threshold is carried onto that scale here, the decision of every
tile unchanged: ``sigmoid((logit(t) + shift) / temperature)``. This writes ``verdict`` (and the
cross-fitted figures under ``metrics.verdict_crossval``) into ``<stem>.json`` and nothing else;
the result is validated by :func:`breastpath.checkpoint.parse_meta`. Without ``--write`` it only
prints the change.

    python scripts/set_verdict_rule.py default runs/cv-idc-int8/verdict.json          # show
    python scripts/set_verdict_rule.py default runs/cv-idc-int8/verdict.json --write  # rewrite
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from breastpath.checkpoint import parse_meta, read_meta, resolve_checkpoint
from breastpath.evaluate.calibration import threshold_on_calibrated_scale
from breastpath.io import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a bundled name, a run folder or a checkpoint JSON")
    parser.add_argument("verdict", type=Path, help="verdict.json of scripts/verdict_crossval.py")
    parser.add_argument("--write", action="store_true", help="rewrite the JSON")
    args = parser.parse_args()
    json_path = resolve_checkpoint(args.checkpoint).with_suffix(".json")
    raw = json.loads(json_path.read_text(encoding="utf-8"))
    before = read_meta(json_path)
    chosen = json.loads(args.verdict.read_text(encoding="utf-8"))
    final = chosen["final"]
    threshold = threshold_on_calibrated_scale(
        float(final["threshold"]), temperature=before.temperature, logit_bias=raw.get("logit_bias")
    )
    verdict = {
        "threshold": round(threshold, 6),
        "min_tiles": int(final["min_tiles"]),
        "min_extent": float(final["min_extent"]),
    }
    figures = {
        "protocol": chosen["protocol"],
        "raw_threshold": final["threshold"],
        "pooled": chosen["pooled"],
        "per_fold": chosen["per_fold"],
    }
    body = {
        **raw,
        "verdict": verdict,
        "metrics": {**raw.get("metrics", {}), "verdict_crossval": figures},
    }
    updated = parse_meta(body, source=str(json_path))
    if (updated.weights_file, updated.weights_sha256) != (
        before.weights_file,
        before.weights_sha256,
    ):
        sys.exit("refusing: the weights reference would change")
    print(f"{json_path.name}: verdict {raw.get('verdict')} -> {updated.verdict}")
    if args.write:
        write_json(json_path, body)
        after = read_meta(json_path)
        assert after.verdict == updated.verdict and after.weights_sha256 == before.weights_sha256
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
