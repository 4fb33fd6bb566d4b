"""``python -m breastpath ...`` (and ``torchrun ... -m breastpath ...``): the CLI."""

import sys

from breastpath.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
