"""Sweep a scenario over seeds and settings: ``python -m fleet.sweep SCENARIO.yaml --seeds 0-9`` (the program is
``fleet.app.sweep``)."""

import sys

from fleet.app.sweep import main

if __name__ == "__main__":
    sys.exit(main())
