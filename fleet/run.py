"""Simulate a scenario: ``python -m fleet.run SCENARIO.yaml`` (the program is ``fleet.app.run``)."""

import sys

from fleet.app.run import main

if __name__ == "__main__":
    sys.exit(main())
