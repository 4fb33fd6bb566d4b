"""Record the training scale (microns per pixel) in a checkpoint's metadata, weights untouched.

``breastpath slide`` reads tiles at ``CheckpointMeta.mpp`` when a checkpoint states it. This adds
``mpp`` to ``<stem>.json`` and nothing else: every other key is kept as it is, the result is
validated by :func:`breastpath.checkpoint.parse_meta` (and read back with ``read_meta``), and
the weights file and its sha256 are unchanged. Without ``--write`` it only prints the change.

    python scripts/set_checkpoint_mpp.py default 4.0            # show the change
    python scripts/set_checkpoint_mpp.py default 4.0 --write    # rewrite the bundled JSON

IDC patches: slides scanned at 40x (about 0.25 µm/px), downsampled 16:1 to 2.5x, so about
4 µm/px (Janowczyk & Madabhushi 2016; see docs/slides.md).
"""

from __future__ import annotations

import argparse
import sys

from breastpath.checkpoint import resolve_checkpoint, update_checkpoint_json
from breastpath.errors import CheckpointError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a bundled name, a run folder or a checkpoint JSON")
    parser.add_argument("mpp", type=float, help="microns per pixel of the training images")
    parser.add_argument("--write", action="store_true", help="rewrite the JSON")
    args = parser.parse_args()
    json_path = resolve_checkpoint(args.checkpoint).with_suffix(".json")
    try:
        before, after = update_checkpoint_json(json_path, {"mpp": args.mpp}, write=args.write)
    except CheckpointError as exc:
        sys.exit(str(exc))
    print(f"{json_path.name}: mpp {before.mpp} -> {after.mpp}")
    if args.write:
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
