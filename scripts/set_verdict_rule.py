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

from breastpath.checkpoint import read_meta, resolve_checkpoint, update_checkpoint_json
from breastpath.errors import CheckpointError
from breastpath.experiments.verdict_cv import shipped_verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a bundled name, a run folder or a checkpoint JSON")
    parser.add_argument("verdict", type=Path, help="verdict.json of scripts/verdict_crossval.py")
    parser.add_argument("--write", action="store_true", help="rewrite the JSON")
    args = parser.parse_args()
    json_path = resolve_checkpoint(args.checkpoint).with_suffix(".json")
    meta = read_meta(json_path)
    chosen = json.loads(args.verdict.read_text(encoding="utf-8"))
    verdict, figures = shipped_verdict(
        chosen, temperature=meta.temperature, logit_bias=meta.logit_bias
    )
    changes = {"verdict": verdict, "metrics": {**meta.metrics, "verdict_crossval": figures}}
    try:
        before, after = update_checkpoint_json(json_path, changes, write=args.write)
    except CheckpointError as exc:
        sys.exit(str(exc))
    print(f"{json_path.name}: verdict {before.verdict} -> {after.verdict}")
    if args.write:
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
